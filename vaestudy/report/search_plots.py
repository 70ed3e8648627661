"""Optuna's own figures of a study run's search, for the report.

The Optuna study is the one the search used (its name and storage are on the parent run), so
the figures show what the sampler saw: each trial's study metric and whether its constraint
values (`own`, `saturated`, `yardstick:<rule>`: <= 0 each) made it feasible.

- `optuna_history.png`: Optuna's optimisation history; feasible trials in colour, infeasible
  ones grey, the line the best feasible value so far (one objective);
- `optuna_pareto.png`: the Pareto front, infeasible trials grey (two or three objectives);
- `optuna_importances.png`: parameter importances (fANOVA) for each objective, the seed left
  out (`train.seed` is noise, not a setting to choose; confirmation measures it).

Diverged trials (told ±inf) are left out of the figures by Optuna itself.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from vaestudy.tracking.stores import (  # noqa: E402
    OPTUNA_STORAGE_ENV,
    lacks_password,
    local_optuna_storage,
    redacted,
    sqlite_file,
)


def load_search(name: str, storage: str) -> tuple[optuna.Study | None, str]:
    """The Optuna study `name` in `storage` (a study run's `vaestudy.optuna_study` and
    `vaestudy.optuna_storage` tags), or None and why it cannot be opened from here."""
    if not name:
        return None, "Optuna figures: the study run does not record its Optuna study"
    # Runs from before the storage was recorded used the local default.
    storage = storage or local_optuna_storage()
    if lacks_password(storage):  # recorded without its password
        given = os.environ.get(OPTUNA_STORAGE_ENV, "")
        if redacted(given) != storage:
            return None, f"Optuna figures: set {OPTUNA_STORAGE_ENV} to {storage} with its password"
        storage = given
    path = sqlite_file(storage)
    if path is not None and not path.is_file():  # never create an empty one
        return None, f"Optuna figures: {path} is not on this machine"
    try:
        return optuna.load_study(study_name=name, storage=storage), ""
    except (KeyError, optuna.exceptions.StorageInternalError) as exc:
        return None, f"Optuna figures: study {name!r} not found in {storage} ({exc})"


SEED = "train.seed"


def search_figures(name: str, storage: str, metrics: list[str], out: Path):
    """`plot_search` of the Optuna study `name` in `storage` (see `load_search`): (files
    written, why any figure was left out)."""
    search, why = load_search(name, storage)
    return ([], [why]) if search is None else plot_search(search, metrics, out)


def plot_search(study: optuna.Study, metrics: list[str], out: Path) -> tuple[list[Path], list[str]]:
    """Write Optuna's figures of `study` under `out`; returns (files written, why any figure
    was left out)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return [], ["Optuna figures: no trial of the search completed"]
    figures: list[tuple[str, Callable[[], object], str]] = []
    if len(metrics) == 1:
        figures.append((
            "optuna_history.png",
            lambda: optuna_plots.plot_optimization_history(study, target_name=metrics[0]),
            f"{study.study_name}: {metrics[0]} by trial (grey: infeasible as the search saw it)",
        ))  # fmt: skip
    elif len(metrics) in (2, 3):
        figures.append((
            "optuna_pareto.png",
            lambda: optuna_plots.plot_pareto_front(
                study, target_names=metrics, constraints_func=lambda t: list(t.constraints.values())
            ),
            f"{study.study_name}: Pareto front (grey: infeasible)",
        ))  # fmt: skip
    settings = sorted({key for t in complete for key in t.params} - {SEED})
    figures.append((
        "optuna_importances.png",
        lambda: optuna_plots.plot_param_importances(
            study, params=settings, **({"target_name": metrics[0]} if len(metrics) == 1 else {})
        ),
        f"{study.study_name}: parameter importances (fANOVA; {SEED} left out)",
    ))  # fmt: skip
    written, skipped = [], []
    for name, plot, title in figures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on each figure
                axes = plot()
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a single trial
            skipped.append(f"{name}: {exc}")
            continue
        figure = _figure(axes)
        figure.suptitle(title, fontsize=9)
        figure.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(out / name)
    return written, skipped


def _figure(axes: object) -> plt.Figure:
    """The figure of what Optuna's matplotlib functions return (an Axes or an array of them)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure  # type: ignore[attr-defined]
