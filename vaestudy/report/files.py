"""The report's files: the rate–distortion plane and each variant's trajectories (matplotlib),
Optuna's figures of the search, and the tables as Markdown, CSV and HTML, written to a folder and
attached to the study's parent run (`vaestudy report`, `vaestudy compare`). The tables themselves
are `vaestudy.report.tables`'s; reading a study (`best`, `studies`) needs none of this module's
imports.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vaestudy.report.intervals import mean_ci  # noqa: E402
from vaestudy.report.tables import WITH_TEST, Report, file_name, read_history  # noqa: E402
from vaestudy.tracking.run_reader import RunReader, as_reader  # noqa: E402
from vaestudy.tracking.stores import tracking_session  # noqa: E402
from vaestudy.tracking.tags import CONFIRM
from vaestudy.training.feasibility import FEASIBLE, NEITHER, OWN_ONLY, STATES, YARDSTICK_ONLY  # noqa: E402
from vaestudy.training.plots import plot_trajectories, save  # noqa: E402

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# Marker per state in the figures: filled circle, hollow circle, hollow triangle, cross.
_MARKERS = {
    FEASIBLE: ("o", True),
    YARDSTICK_ONLY: ("o", False),
    OWN_ONLY: ("^", False),
    NEITHER: ("x", True),
}


def rate_distortion_figure(report: Report) -> plt.Figure:
    """The search's trials on the rate–distortion plane (test split; colour = variant, marker
    = state), each variant's confirmation mean with 95% t intervals on both axes (diamonds), the
    yardstick's bounds dashed and its feasible region shaded."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    trials = report.search_trials()
    trials = trials[trials["state"].isin(STATES)]
    variants = sorted(report.trials["variant"].unique())
    for i, variant in enumerate(variants):
        colour = f"C{i % 10}"
        for state, (marker, filled) in _MARKERS.items():
            part = trials[(trials["variant"] == variant) & (trials["state"] == state)]
            if len(part):
                paint = (
                    {"color": colour}
                    if marker == "x"
                    else {"edgecolors": colour, "facecolors": colour if filled else "none"}
                )
                x, y = part["test/kl"], part["test/recon"]
                ax.scatter(x, y, marker=marker, s=50, linewidths=1.5, alpha=0.5, **paint)
        confirmed = report.trials[
            (report.trials["phase"] == CONFIRM)
            & (report.trials["variant"] == variant)
            & report.trials["status"].isin(WITH_TEST)
        ]
        if len(confirmed):  # the confirmation runs' mean with 95% t intervals
            kl, recon = mean_ci(confirmed["test/kl"]), mean_ci(confirmed["test/recon"])
            ax.errorbar(kl.mean, recon.mean, xerr=_finite(kl.half), yerr=_finite(recon.half),
                        fmt="D", color=colour, ms=8, capsize=4, mec="black")  # fmt: skip
    bounds = {y.metric: y.bound for y in report.yardstick if y.direction == "<="}
    if "kl" in bounds:
        ax.axvline(bounds["kl"], ls="--", c="grey")
    if "recon" in bounds:
        ax.axhline(bounds["recon"], ls="--", c="grey")
    if "kl" in bounds and "recon" in bounds:  # the yardstick's feasible region
        ax.fill_between([0, bounds["kl"]], 0, bounds["recon"], color="green", alpha=0.07, lw=0)
    colours = [
        Line2D([], [], ls="", marker="s", color=f"C{i % 10}", label=v)
        for i, v in enumerate(variants)
    ]
    states = [
        Line2D([], [], ls="", marker=mk, color="black", markerfacecolor="black" if f else "none",
               label=state)
        for state, (mk, f) in _MARKERS.items()
    ]  # fmt: skip
    states.append(Line2D([], [], ls="", marker="D", color="black", label="confirmed mean ± 95%"))
    ax.legend(handles=colours + states, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xlabel("rate: test KL (nats per example)")
    ax.set_ylabel("distortion: test −log p(x|z) (nats per example)")
    ax.set_title(f"{report.study}: rate–distortion (dashed: yardstick)", fontsize=10)
    fig.tight_layout()
    return fig


def margins_figure(report: Report) -> plt.Figure | None:
    """Each confirmed variant's mean margin on each of its constraints with its interval (the
    race's level), one row per variant, one panel per constraint kind; 0 marked: left of it
    satisfied. Colour = verdict. None without confirmation."""
    m = report.margins
    if m is None or not len(m):
        return None
    colours = {"satisfied": "tab:green", "violated": "tab:red", "undecided": "tab:orange"}
    constraints = list(dict.fromkeys(m["constraint"]))
    variants = list(report.confirmation["variant"]) if report.confirmation is not None else []
    fig, axes = plt.subplots(1, len(constraints), figsize=(3.2 * len(constraints) + 1.5,
                             0.45 * len(variants) + 1.6), sharey=True, squeeze=False)  # fmt: skip
    for ax, constraint in zip(axes[0], constraints, strict=True):
        rows = m[m["constraint"] == constraint].set_index("variant")
        for y, variant in enumerate(variants):
            if variant not in rows.index:
                continue
            r = rows.loc[variant]
            low, high = r["margin low"], r["margin high"]
            err = (
                [[r["margin mean"] - low], [high - r["margin mean"]]]
                if math.isfinite(low)
                else None
            )
            ax.errorbar(r["margin mean"], y, xerr=err, fmt="o", color=colours[r["verdict"]],
                        capsize=3)  # fmt: skip
        ax.axvline(0, color="black", lw=1)
        ax.set_title(constraint, fontsize=9)
        ax.set_xlabel("margin (value − target)", fontsize=8)
    axes[0][0].set_yticks(range(len(variants)), variants, fontsize=8)
    axes[0][0].invert_yaxis()
    handles = [Line2D([], [], ls="", marker="o", color=c, label=v) for v, c in colours.items()]
    fig.legend(handles=handles, fontsize=7, loc="upper left", ncol=3)
    level = report.race.level_text()
    title = f"{report.study}: margins on test, mean with {level} interval (left of 0: satisfied)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _finite(half: float) -> float:
    return half if math.isfinite(half) else 0.0


def trajectory_runs(report: Report) -> list[tuple[str, list[str], str]]:
    """(variant, run ids, title) per variant: its confirmation runs when it has any, else its
    selected trial (or, when none is feasible on validation, its best finished one)."""
    out = []
    trials = report.trials[report.trials["status"].isin(WITH_TEST)]
    for row in report.summary.itertuples():
        confirmed = trials[(trials["phase"] == CONFIRM) & (trials["variant"] == row.variant)]
        if len(confirmed):
            picked = confirmed["confirms"].iloc[0]
            name = report.trials.set_index("run_id").loc[picked, "trial"]
            title = f"{name}: {len(confirmed)} confirmation seeds (band: min–max)"
            out.append((row.variant, confirmed["run_id"].tolist(), title))
            continue
        best, feasible = report.selection(row.variant)
        title = f"{row.variant}: " + (
            "selected trial" if feasible else "none feasible on val; best finished"
        )
        if best is not None:
            out.append((row.variant, [best["run_id"]], f"{title} ({best['trial']})"))
    return out


def write_report(source: RunReader | MlflowClient, report: Report, out: Path) -> list[Path]:
    """Markdown, CSVs, HTML and PNGs under `out`: the tables, the rate–distortion plane, each
    variant's trajectories and Optuna's figures of the search (`vaestudy.report.search_plots`);
    returns the files written."""
    store = as_reader(source)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # Optuna's figures (a study run's, not a comparison's) in a second process meanwhile:
        # their imports alone (Optuna's fANOVA imports scikit-learn) take seconds.
        search = None
        if report.run_name:
            spawn = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=spawn))
            metrics = list(report.metrics or [report.metric])
            search = pool.submit(_search_figures, report.run_name, report.optuna_storage,
                                 metrics, out)  # fmt: skip
        save(rate_distortion_figure(report), out / "rate_distortion.png")
        figures = [out / "rate_distortion.png"]
        margins = margins_figure(report)
        if margins is not None:
            save(margins, out / "margins.png")
            figures.insert(0, out / "margins.png")
        for variant, run_ids, title in trajectory_runs(report):
            histories = []
            for run_id in run_ids:
                keys = [k for k in store.metric_keys(run_id) if k.startswith(("train/", "val/"))]
                histories.append(read_history(store, run_id, keys))
            path = out / f"trajectories_{file_name(variant)}.png"
            plot_trajectories(histories, path, title)
            if path.exists():
                figures.append(path)
        drawn, notes = search.result() if search is not None else ([], [])
        figures += drawn
    trials = report.trials
    figure_md = [f"![{f.stem}]({f.name})" for f in figures] + [f"- {n}" for n in notes]
    confirmed = {
        name: table
        for name, table in (("confirmation", report.confirmation), ("margins", report.margins),
                            ("pairs", report.pairs))
        if table is not None
    }  # fmt: skip
    files = {
        "report.md": report.markdown() + "\n## Figures\n\n" + "\n\n".join(figure_md) + "\n",
        "trials.csv": trials.to_csv(index=False),
        "summary.csv": report.summary.to_csv(index=False),
        **{f"{name}.csv": table.to_csv(index=False) for name, table in confirmed.items()},
        "report.html": (
            f"<h1>Study {report.study}</h1><p>{report.rules_text()}</p>"
            + "".join(
                f"<h2>{name.capitalize()} on test</h2>"
                + table.to_html(index=False, float_format="{:.4g}".format)
                for name, table in confirmed.items()
            )  # fmt: skip
            + "<h2>Per variant</h2>"
            + report.summary.to_html(index=False, float_format="{:.4g}".format)
            + "".join(f'<img src="{f.name}">' for f in figures)
            + "".join(f"<p>{n}</p>" for n in notes)
            + "<h2>Trials</h2>"
            + trials.to_html(index=False, float_format="{:.4g}".format)
        ),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / name for name in files] + figures


def _search_figures(name: str, storage: str, metrics: list[str], out: Path):
    """`vaestudy.report.search_plots.search_figures`, imported in the process that draws them."""
    from vaestudy.report.search_plots import search_figures

    return search_figures(name, storage, metrics, out)


def attach(store: RunReader, report: Report, files: list[Path]) -> None:
    """Put `files` on the study's parent run under `report/`: copied into its artifact folder
    when that is a local folder (what MLflow's local artifact repository does; no MLflow
    import), else through MLflow's client."""
    folder = store.artifact_folder(report.parent_run_id)
    if folder is not None:
        (folder / "report").mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, folder / "report" / path.name)
        return
    with artifact_writer(store.mlflow_client(), report.parent_run_id) as client:
        for path in files:
            client.log_artifact(report.parent_run_id, str(path), artifact_path="report")


@contextlib.contextmanager
def artifact_writer(client: MlflowClient, run_id: str) -> Iterator[MlflowClient]:
    """A client that can write `run_id`'s artifacts: `client` itself, unless the run keeps them
    behind a server's proxy (`mlflow-artifacts:/`, the default store's layout before vaestudy
    kept them at file:// locations) and `client` is not on a server: then one is started."""
    from mlflow.tracking import MlflowClient

    uri = client.tracking_uri
    proxied = client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    if not proxied or uri.startswith(("http://", "https://")):
        yield client
        return
    with tracking_session(uri) as served:
        yield MlflowClient(served)
