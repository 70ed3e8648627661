"""What a trial tells Ray Tune and the search reads back: the final report's special keys and a
pack's member keys. Nothing is imported here, so the trial (torch, in a Ray worker) and the
search (Optuna, in the driver) share these names without importing each other."""

from __future__ import annotations

DIVERGED = "vaestudy/diverged"  # in a trial's final report only: 1 diverged, 0 reached its end
SATURATED = "vaestudy/saturated"  # in a trial's final report: saturated multipliers, comma-joined
PROGRESS = "vaestudy/progress"  # in every report: the fraction of the training steps done


def member_key(trial_id: str, index: int) -> str:
    """The key of a packed trial's `index`-th member: Optuna's and MLflow's trial id."""
    return f"{trial_id}/{index}"


def member_prefix(index: int) -> str:
    """Where a pack's report holds member `index`'s metrics."""
    return f"member{index}/"
