"""The comparison people open the MLflow UI for: the runs that decided a study's answer, one
line per variant, with the study metric, the constraint values and their targets as the first
charts, then the trajectories behind them (constraint against target, λ, KL, reconstruction),
as a saved view of the experiment page (`vaestudy.tracking.ui_views`) that the parent run's
description links and `vaestudy ui STUDY --compare` opens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from vaestudy.report.tables import Report, deciding_runs, view_key
from vaestudy.tracking.tags import TAG_VARIANT
from vaestudy.tracking.ui_views import Chart, RunsView, Section, share_view

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from vaestudy.tracking.run_reader import RunReader

# The trajectories after each constraint's own pair of charts, when the runs logged them.
_CURVES = ("train/kl", "train/recon", "train/elbo")


def _own(keys: Iterable[str]) -> tuple[str, ...]:
    """The own constraints a run logged a test value of."""
    return tuple(sorted(k.removeprefix("test/constraint/") for k in keys
                        if k.startswith("test/constraint/")))  # fmt: skip


def comparison_view(report: Report, metric_keys: Mapping[str, Iterable[str]]) -> RunsView:
    """What to show of `report`'s deciding runs, given the metric keys each logged.

    First section, the answer on the test split: parallel-coordinates plots (MLflow draws a run
    in one only when it has every axis), one over every variant whose axes are the yardstick's
    metrics and last (the colour) the study's test metric, and one per set of own constraints
    (the variants that have them) with each constraint's target and value first. Second, a bar
    chart of each of those metrics per variant. Third, the training trajectories: each constraint's
    value with its target, its Lagrange multiplier, the annealed coefficients, KL and
    reconstruction (nats per example), and the study metric on validation, what the search
    read."""
    runs = deciding_runs(report)
    logged = {run: set(metric_keys.get(run, ())) for run in runs}
    keys = set().union(*logged.values())
    owned = list(dict.fromkeys(_own(logged[run]) for run in runs))  # each set, in answer order
    rules = [key for y in report.yardstick if (key := f"test/{y.metric}") in keys]
    shared = [*rules, report.test_metric]
    answer = [Chart("PARALLEL", tuple(shared))]  # every variant
    answer += [
        Chart("PARALLEL", tuple(k for c in cons for k in (f"test/target/{c}",
                                                          f"test/constraint/{c}")) + tuple(shared))
        for cons in owned if cons
    ]  # fmt: skip
    own = sorted({c for cons in owned for c in cons})
    bars = [Chart("BAR", (key,)) for key in (report.test_metric, *rules)]
    bars += [Chart("BAR", (f"test/constraint/{c}",)) for c in own]
    curves = [Chart("LINE", (f"train/constraint/{c}", f"train/target/{c}")) for c in own]
    curves += [Chart("LINE", (f"train/lambda/{c}",)) for c in own if f"train/lambda/{c}" in keys]
    coefs = sorted(k for k in keys if k.startswith(("train/coef/", "train/lambda/"))
                   and k.rsplit("/", 1)[1] not in own)  # fmt: skip
    curves += [Chart("LINE", (k,)) for k in (*coefs, *_CURVES, report.metric) if k in keys]
    return RunsView(  # the UI cuts a section's name after about 45 characters
        name=f"{report.study}: the runs that decided the answer",
        run_ids=tuple(runs),
        sections=(
            Section(f"On test: constraints and {report.test_metric}", tuple(answer), columns=1),
            Section("On test, per variant", tuple(bars)),
            Section("Trajectories", tuple(curves)),
        ),
        group_by=TAG_VARIANT,
    )  # fmt: skip


def share_comparison(reader: RunReader, client: MlflowClient, report: Report) -> str:
    """Save `comparison_view` on the study's experiment, under the key the parent run's
    description links (`view_key`), and return that key."""
    keys = {run: reader.metric_keys(run) for run in deciding_runs(report)}
    key = view_key(report)
    share_view(client, report.experiment_id, key, comparison_view(report, keys))
    return key
