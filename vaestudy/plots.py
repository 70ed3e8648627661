"""Trajectory figures (matplotlib): what a run's KL, reconstruction, constraints and multipliers
did over the steps. Image grids are in `vaestudy.image_grids` (torch)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_trajectories(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """KL, reconstruction, ELBO, constraints (with targets) and multipliers against the step."""
    if not history:
        return
    steps = [r["step"] for r in history]
    keys = history[-1].keys()
    panels = [("nats per example", [k for k in ("kl", "recon") if k in keys]), ("ELBO", ["elbo"])]
    constraints = [k for k in keys if k.startswith("constraint/")]
    if constraints:
        panels.append(("constraints", constraints))
    lambdas = [k for k in keys if k.startswith("lambda/")]
    if lambdas:
        panels.append(("multipliers (log)", lambdas))
    marker = "o" if len(steps) < 20 else None  # a few points still show (one point: no line)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, names) in zip(axes[0], panels, strict=True):
        for name in names:
            values = [r.get(name, float("nan")) for r in history]
            ax.plot(steps, values, label=name, marker=marker, ms=3)
            target = name.replace("constraint/", "target/")
            if target != name and target in keys:
                ax.axhline(history[-1][target], ls="--", lw=1, color="grey")
        if label.endswith("(log)"):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
