"""The Ray Tune trainables the driver hands to Tune, and the context they receive.

Thin entry points: the trial code (`vaestudy.study.trial`: torch, torchvision, the trainer) is
imported by the worker process when its first trial starts, so the driver never imports torch
(about 10 s of CPU on a small machine, spent while the tracking server and Ray start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaestudy.study.spec import Study


@dataclass
class TrialContext:
    """What every trial needs from the driver; pickled into the Ray object store."""

    study: Study
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial (`vaestudy.study.trial.run_trial`)."""
    from vaestudy.study import trial

    trial.run_trial(config, ctx)


def run_pack(config: dict[str, Any], ctx: TrialContext) -> None:
    """A pack of trials trained as one vectorised computation (`vaestudy.study.trial.run_pack`)."""
    from vaestudy.study import trial

    trial.run_pack(config, ctx)
