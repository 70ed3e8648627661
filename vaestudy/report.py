"""Study report: which objectives satisfy their constraints, on held-out data, and at what cost.

Reads the study's newest parent run and its child runs back from MLflow (client API only) into
pandas and builds:

- `trials`: one row per trial: objective, model, swept hyperparameters, per constraint its target,
  achieved test value, `sat` (held at the end on the test split), `held_last20` (fraction of the
  trajectory points in the last 20% of training steps where the training constraint held),
  `held_from` (first step from which it held at every later point), final λ; then test −ELBO, IWAE
  NLL, rate (KL), distortion (recon), active units, probe accuracy; status and failure reason.
  Status `interrupted` marks a killed study's unfinished attempt that `--resume` ran again as a
  new trial: it stays in this table but out of every count of the summary.
- `summary`: per objective: trials run, finished, satisfying all their own constraints
  (objectives without constraints count as satisfying them), satisfying the study's shared
  yardstick (`study.constraints`), the best yardstick-feasible trial by the study's first metric,
  and median figures.
- figures: the rate–distortion plane (colour = objective, filled = feasible under the yardstick,
  dashed yardstick bounds) and the trajectories of each objective's best trial.

Everything is written to `--out` (Markdown, CSV, HTML, PNG) and attached to the parent run under
`report/`, so the MLflow UI shows it too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from vaestudy.errors import UserError  # noqa: E402
from vaestudy.plots import plot_trajectories  # noqa: E402
from vaestudy.tracking import (  # noqa: E402
    PARENT,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_MODEL,
    TAG_OBJECTIVE,
    latest_study_run,
    unprefixed,
)

TAIL = 0.2  # the last 20% of training steps
INTERRUPTED = "interrupted"  # status of a killed attempt that was run again (not counted)
_SEARCH_PARAM = re.compile(r"\.(choice|uniform|loguniform|int|step)(\..*)?$")


@dataclass(frozen=True)
class Yardstick:
    metric: str
    bound: float
    direction: str = "<="

    def holds(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value <= self.bound if self.direction == "<=" else value >= self.bound


@dataclass
class Report:
    study: str
    parent_run_id: str
    trials: pd.DataFrame
    summary: pd.DataFrame
    yardstick: list[Yardstick]
    metric: str
    mode: str
    histories: dict[str, list[dict[str, float]]]

    def markdown(self) -> str:
        lines = [f"# Study `{self.study}` (parent run {self.parent_run_id})", ""]
        if self.yardstick:
            rules = ", ".join(f"{y.metric} {y.direction} {y.bound:g}" for y in self.yardstick)
            lines += [f"Shared yardstick: {rules}. Best trial by {self.metric} ({self.mode}).", ""]
        lines += ["## Per objective", "", _md(self.summary), "", "## Trials", "", _md(self.trials)]
        return "\n".join(lines) + "\n"


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g") if len(df) else "(none)"


def find_parent(client: MlflowClient, study: str):
    exp = client.get_experiment_by_name(study)
    parent = latest_study_run(client, exp.experiment_id, study) if exp is not None else None
    if parent is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise UserError(
            f"no study named {study!r} in this tracking store; studies there: "
            f"{', '.join(known) or 'none'}"
        )
    return parent


def yardstick_from_params(params: dict[str, str]) -> list[Yardstick]:
    out = []
    i = 0
    while f"study.constraints.{i}.metric" in params:
        p = f"study.constraints.{i}."
        out.append(
            Yardstick(params[p + "metric"], float(params[p + "bound"]), params[p + "direction"])
        )
        i += 1
    return out


def constraint_tail(history: list[dict[str, float]], name: str) -> tuple[float, float | None]:
    """(fraction of points in the last 20% of steps where the constraint held, first step from
    which it held at every later point, or None)."""
    key, target = f"constraint/{name}", f"target/{name}"
    points = [(r["step"], r[key] <= r[target]) for r in history if key in r and target in r]
    if not points:
        return math.nan, None
    last = points[-1][0]
    tail = [ok for step, ok in points if step >= (1 - TAIL) * last]
    held_from = None
    for step, ok in reversed(points):
        if not ok:
            break
        held_from = step
    return sum(tail) / len(tail), held_from


def read_history(client: MlflowClient, run_id: str, keys: list[str]) -> list[dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(m.step, {"step": float(m.step)})[key.removeprefix("train/")] = m.value
    return [rows[s] for s in sorted(rows)]


def build_report(client: MlflowClient, study: str) -> Report:
    parent = find_parent(client, study)
    params = parent.data.params
    metric = params.get("study.metric", params.get("study.metric.0", "test/iwae_nll"))
    mode = params.get("study.mode", params.get("study.mode.0", "min"))
    # `study.search.objective.kappa.uniform.0` -> `objective.kappa` (the searched dotted key)
    searched = sorted({_SEARCH_PARAM.sub("", k) for k in unprefixed(params, "study.search.")})
    yardstick = yardstick_from_params(params)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'"
    )
    if not runs:
        raise UserError(f"study {study!r} (parent run {parent.info.run_id}) has no trials yet")
    rows, histories = [], {}
    for run in runs:
        row, history = _trial_row(client, run, searched, yardstick, metric)
        rows.append(row)
        histories[run.info.run_id] = history
    trials = pd.DataFrame(rows).sort_values(["objective", "trial"]).reset_index(drop=True)
    summary = _summary(trials, metric, mode, bool(yardstick))
    return Report(study, parent.info.run_id, trials, summary, yardstick, metric, mode, histories)


def _trial_row(client, run, searched, yardstick, metric) -> tuple[dict[str, Any], list]:
    m, tags, params = run.data.metrics, run.data.tags, run.data.params
    names = sorted(unprefixed(m, "test/constraint/"))
    train_keys = [k for k in m if k.startswith("train/")]
    history = read_history(client, run.info.run_id, train_keys)
    status = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "stopped early"}.get(
        run.info.status, run.info.status.lower()
    )
    if TAG_INTERRUPTED in tags:
        status = INTERRUPTED
    row: dict[str, Any] = {
        "trial": tags.get("mlflow.runName", run.info.run_id[:8]),
        "run_id": run.info.run_id,
        "objective": tags.get(TAG_OBJECTIVE, params.get("objective.name")),
        "model": tags.get(TAG_MODEL, params.get("model.name")),
        "status": status,
        "reason": tags.get(TAG_FAILURE, ""),
        "failed_at_step": float(tags[TAG_FAILURE_STEP]) if TAG_FAILURE_STEP in tags else math.nan,
    }
    for key in searched:
        row[key] = _param_value(params, key)
    own_ok = []
    for name in names:
        target, value = m.get(f"test/target/{name}", math.nan), m[f"test/constraint/{name}"]
        held, held_from = constraint_tail(history, name)
        sat = status == "finished" and value <= target
        own_ok.append(sat)
        row |= {
            f"{name}:target": target,
            f"{name}:test": value,
            f"{name}:sat": sat,
            f"{name}:held_last20": held,
            f"{name}:held_from": held_from if held_from is not None else math.nan,
            f"{name}:lambda": m.get(f"train/lambda/{name}", math.nan),
        }
    finished = status == "finished"
    row |= {
        "test_neg_elbo": -m["test/elbo"] if "test/elbo" in m else math.nan,
        "iwae_nll": m.get("test/iwae_nll", math.nan),
        "rate_kl": m.get("test/kl", math.nan),
        "distortion_recon": m.get("test/recon", math.nan),
        "active_units": m.get("test/active_units", math.nan),
        "probe_acc": m.get("test/probe_acc", math.nan),
        "own_constraints_ok": finished and all(own_ok),
        "yardstick_ok": finished and all(y.holds(m.get(y.metric, math.nan)) for y in yardstick),
        metric: m.get(metric, math.nan),
    }
    return row, history


def _param_value(params: dict[str, str], key: str) -> Any:
    # A whole section searched (e.g. `objective`) shows its name.
    raw = params[key] if key in params else params.get(f"{key}.name", "")
    try:
        return float(raw)
    except ValueError:
        return raw


def _summary(trials: pd.DataFrame, metric: str, mode: str, has_yardstick: bool) -> pd.DataFrame:
    rows = []
    counted = trials[trials["status"] != INTERRUPTED]
    for objective, group in counted.groupby("objective", sort=True):
        feasible = (
            group[group["yardstick_ok"]] if has_yardstick else group[group["status"] == "finished"]
        )
        values = feasible[metric]
        best = None
        if len(values.dropna()):
            best = feasible.loc[values.idxmin() if mode == "min" else values.idxmax()]
        done = group[group["status"] == "finished"]
        rows.append(
            {
                "objective": objective,
                "trials": len(group),
                "finished": len(done),
                "satisfy_own": int(group["own_constraints_ok"].sum()),
                "satisfy_yardstick": int(group["yardstick_ok"].sum())
                if has_yardstick
                else math.nan,
                "best_trial": best["trial"] if best is not None else "",
                f"best_{metric}": best[metric] if best is not None else math.nan,
                "median_iwae_nll": done["iwae_nll"].median(),
                "median_rate_kl": done["rate_kl"].median(),
                "median_distortion": done["distortion_recon"].median(),
            }
        )
    return pd.DataFrame(rows)


def plot_rate_distortion(report: Report, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    trials = report.trials
    for i, (objective, group) in enumerate(trials.groupby("objective")):
        colour = f"C{i}"
        for ok, marker in ((True, "o"), (False, "x")):
            part = group[group["yardstick_ok"] == ok]
            if len(part):
                ax.scatter(part["rate_kl"], part["distortion_recon"], c=colour, marker=marker,
                           label=f"{objective} ({'feasible' if ok else 'infeasible'})")  # fmt: skip
    for y in report.yardstick:
        if y.metric == "test/kl":
            ax.axvline(y.bound, ls="--", c="grey")
        elif y.metric == "test/recon":
            ax.axhline(y.bound, ls="--", c="grey")
    ax.set_xlabel("rate: test KL (nats)")
    ax.set_ylabel("distortion: test −log p(x|z) (nats)")
    ax.set_title(f"{report.study}: rate–distortion")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: Report, out: Path) -> list[Path]:
    """Markdown, CSVs, HTML and PNGs under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    trials = report.trials
    files = {
        "report.md": report.markdown(),
        "trials.csv": trials.to_csv(index=False),
        "summary.csv": report.summary.to_csv(index=False),
        "report.html": (
            f"<h1>Study {report.study}</h1><h2>Per objective</h2>"
            + report.summary.to_html(index=False, float_format="{:.4g}".format)
            + '<img src="rate_distortion.png"><h2>Trials</h2>'
            + trials.to_html(index=False, float_format="{:.4g}".format)
        ),
    }
    written = []
    for name, text in files.items():
        (out / name).write_text(text)
        written.append(out / name)
    plot_rate_distortion(report, out / "rate_distortion.png")
    written.append(out / "rate_distortion.png")
    for _, row in report.summary.iterrows():
        if row["best_trial"]:
            run_id = trials.loc[trials["trial"] == row["best_trial"], "run_id"].iloc[0]
            path = out / f"trajectories_{row['objective']}.png"
            plot_trajectories(report.histories[run_id], path, f"best {row['objective']} trial")
            if path.exists():
                written.append(path)
    return written


def attach(client: MlflowClient, report: Report, files: list[Path]) -> None:
    for path in files:
        client.log_artifact(report.parent_run_id, str(path), artifact_path="report")
