"""What a trial sends at its evaluations (`vaestudy.study.trial.Reporter`): without a scheduler
at most every SEND_EVERY_S (the points wait queued), with one at every evaluation, and a
checkpoint whenever `checkpoint_interval_s` has passed. Tune's `report` and the clock are
stand-ins; nothing else is."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REPO
from vaestudy.study import trial
from vaestudy.study.spec import load_study


class Run:
    """A trial run that counts its flushes."""

    def __init__(self) -> None:
        self.flushes = 0

    def flush(self, strict: bool = True) -> None:
        self.flushes += 1

    def unsent(self) -> list:
        return []


@pytest.mark.parametrize(
    ("changes", "sends", "checkpoints"),
    [
        ([], [0.0, 2.0, 4.0], [0.0]),  # evaluations every 0.5 s for 6 s; a checkpoint each 30 s
        (["study.scheduler.kind=asha", "study.metric=val/elbo"], "every", [0.0]),
        (["study.stop_hopeless={}"], "every", [0.0]),  # the stopper reads each evaluation
        (["study.checkpoint_interval_s=0"], "every", "every"),
        (["study.checkpoint_interval_s=2"], [0.0, 2.0, 4.0], [0.0, 2.0, 4.0]),
    ],
)
def test_a_trial_sends_every_few_seconds_unless_a_scheduler_reads_each_evaluation(
    monkeypatch, changes, sends, checkpoints
):
    study = load_study(REPO / "studies" / "cpu" / "geco.yaml", changes)
    now = [0.0]
    reported: list[tuple[float, bool]] = []

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        reported.append((now[0], checkpoint is not None))

    monkeypatch.setattr(trial.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(trial.tune, "report", report)
    runs = [Run(), Run()]
    reporter = trial.Reporter(study, runs)
    times = [0.5 * i for i in range(12)]
    for t in times:
        now[0] = t
        reporter({"val/elbo": -100.0}, lambda: b"state")
    expected = times if sends == "every" else sends
    assert [t for t, _ in reported] == expected
    assert [t for t, saved in reported if saved] == (
        times if checkpoints == "every" else checkpoints
    )
    assert all(run.flushes == len(expected) for run in runs)  # each send flushes every run
