"""Trajectory figures (matplotlib): what runs' KL, reconstruction, constraints and multipliers did
over the steps. Image grids are in `vaestudy.training.image_grids` (torch).

One figure per configuration: several runs of it (a study's confirmation seeds) are drawn as
their mean with a band from the lowest to the highest run, one run as its line. Panels:

- rate and distortion (KL and −log p(x|z), nats per example), with the validation split's
  values at each evaluation as points;
- one panel per constraint of the objective, in the constraint's own units, its target as a
  labelled dashed line, validation points;
- the multiplier λ of each constraint (log axis), only for constraints that have one;
- scheduled or fixed weights (β(t), mi, a fixed invariance λ), when the objective has any.

Each panel's y-range covers the values after the first trajectory point and the first 5% of the
steps (and the target), so the first steps' spike of an untrained model does not flatten the
region that matters; the spike is clipped at the top of the panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

History = Sequence[dict[str, float]]
_SETTLED = 0.05  # the y-range ignores the first 5% of the steps
_NAMES = {"kl": "KL (rate)", "recon": "−log p(x|z) (distortion)"}


def _panels(keys: set[str]) -> list[tuple[str, list[str], str | None]]:
    """(title, train keys, target key or None) per panel, for the keys the runs logged."""
    panels: list[tuple[str, list[str], str | None]] = [
        ("rate & distortion (nats per example)", [k for k in ("kl", "recon") if k in keys], None)
    ]
    constraints = sorted(k.removeprefix("constraint/") for k in keys if k.startswith("constraint/"))
    for name in constraints:
        target = f"target/{name}" if f"target/{name}" in keys else None
        panels.append((f"constraint {name}", [f"constraint/{name}"], target))
    multipliers = [f"lambda/{n}" for n in constraints if f"lambda/{n}" in keys]
    if multipliers:
        panels.append(("multipliers λ (log)", multipliers, None))
    weights = sorted(k for k in keys if k.startswith("coef/"))
    weights += sorted(k for k in keys if k.startswith("lambda/") and k not in multipliers)
    if weights:
        panels.append(("weights (β(t), fixed λ)", weights, None))
    return [p for p in panels if p[1]]


def _series(runs: Sequence[History], key: str) -> tuple[list[float], list[list[float]]]:
    """The steps at which every run logged `key`, and each run's values there."""
    per_run = [{r["step"]: r[key] for r in run if key in r} for run in runs]
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    return steps, [[p[s] for s in steps] for p in per_run]


def _settled(steps: list[float], values: list[list[float]], start: float) -> list[float]:
    """The values from `start` on (all of them when none is that late)."""
    late = [v for run in values for s, v in zip(steps, run, strict=True) if s >= start]
    return late or [v for run in values for v in run]


def _limits(values: list[float]) -> tuple[float, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    pad = 0.08 * (high - low) or 0.05 * abs(high) or 1.0
    return low - pad, high + pad


def plot_trajectories(runs: Sequence[History], path: Path, title: str = "") -> None:
    """Write `trajectory_figure` to `path` (nothing when no run has a point)."""
    fig = trajectory_figure(runs, title)
    if fig is not None:
        save(fig, path)


def save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)


def trajectory_figure(runs: Sequence[History], title: str = "") -> plt.Figure | None:
    """Trajectories of one or more runs of a configuration (see the module doc). Each run is a
    list of trajectory points (`step`, training metrics without prefix, and `val/<metric>` at
    the evaluations)."""
    runs = [run for run in runs if run]
    if not runs:
        return None
    keys = set.union(*({k for row in run for k in row} for run in runs))
    panels = _panels(keys)
    if not panels:  # no training trajectory (only final metrics)
        return None
    last = max(row["step"] for run in runs for row in run)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 3.5), squeeze=False)
    for ax, (label, names, target) in zip(axes[0], panels, strict=True):
        shown: list[float] = []
        for i, name in enumerate(names):
            colour = f"C{i}"
            steps, values = _series(runs, name)
            if not steps:
                continue
            mean = [sum(v) / len(v) for v in zip(*values, strict=True)]
            legend = _NAMES.get(name, name.split("/", 1)[-1]) + (
                f" (mean of {len(runs)})" if len(runs) > 1 else ""
            )
            ax.plot(steps, mean, color=colour, lw=1.4, label=legend,
                    marker="o" if len(steps) < 20 else None, ms=3)  # fmt: skip
            if len(runs) > 1:
                low = [min(v) for v in zip(*values, strict=True)]
                high = [max(v) for v in zip(*values, strict=True)]
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
            shown += _settled(steps, values, start=max(steps[0] + 1, _SETTLED * last))
            val_steps, val_values = _series(runs, f"val/{name}")
            if val_steps:
                for run_values in val_values:
                    ax.plot(val_steps, run_values, ls="", marker="x", ms=4, color=colour,
                            alpha=0.8)  # fmt: skip
                shown += _settled(val_steps, val_values, start=max(steps[0] + 1, _SETTLED * last))
                ax.plot([], [], ls="", marker="x", color=colour, label="validation")
        if target is not None:
            value = next((r[target] for r in reversed(runs[0]) if target in r), math.nan)
            if math.isfinite(value):
                ax.axhline(value, ls="--", lw=1.2, color="black", label=f"target {value:g}")
                shown.append(value)
        if label.endswith("(log)"):
            ax.set_yscale("log")
        elif (limits := _limits(shown)) is not None:
            ax.set_ylim(*limits)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout()
    return fig
