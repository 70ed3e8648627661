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
    (the variants that have them) with each constraint's target and value first; a bar chart of
    each of those metrics per variant. Second, the training trajectories: each constraint's
    value with its target, its Lagrange multiplier, the annealed coefficients, KL and
    reconstruction (nats per example), and the study metric on validation, what the search
    read."""
    runs = deciding_runs(report)
    logged = {run: set(metric_keys.get(run, ())) for run in runs}
    keys = set().union(*logged.values())
    variant = dict(zip(report.trials["run_id"], report.trials["variant"], strict=True))
    owned: dict[tuple[str, ...], list[str]] = {}
    for run in runs:  # each set of own constraints and its variants, in the answer's order
        names = owned.setdefault(_own(logged[run]), [])
        names += [] if variant[run] in names else [variant[run]]
    rules = [(f"test/{y.metric}", y.label) for y in report.yardstick if f"test/{y.metric}" in keys]
    shared = [key for key, _ in rules] + [report.test_metric]
    answer = [Chart("PARALLEL", f"test: yardstick and {report.test_metric}", tuple(shared))]
    answer += [
        Chart("PARALLEL", f"test: {', '.join(cons)} ({', '.join(variants)})",
              tuple(k for c in cons for k in (f"test/target/{c}", f"test/constraint/{c}"))
              + tuple(shared))
        for cons, variants in owned.items() if cons
    ]  # fmt: skip
    own = sorted({c for cons in owned for c in cons})
    bars = [Chart("BAR", report.test_metric, (report.test_metric,))]
    bars += [Chart("BAR", f"{key} (yardstick {label})", (key,)) for key, label in rules]
    bars += [Chart("BAR", f"{c} (own constraint)", (f"test/constraint/{c}",)) for c in own]
    curves = [Chart("LINE", f"{c}: value and target (train)",
                    (f"train/constraint/{c}", f"train/target/{c}")) for c in own]  # fmt: skip
    curves += [Chart("LINE", f"λ {c}", (f"train/lambda/{c}",)) for c in own
               if f"train/lambda/{c}" in keys]  # fmt: skip
    coefs = sorted(k for k in keys if k.startswith(("train/coef/", "train/lambda/"))
                   and k.rsplit("/", 1)[1] not in own)  # fmt: skip
    curves += [Chart("LINE", k, (k,)) for k in (*coefs, *_CURVES) if k in keys]
    val = report.metric if report.metric in keys else None
    curves += [Chart("LINE", f"{val} (what the search read)", (val,))] if val else []
    return RunsView(
        name=f"{report.study}: the runs that decided the answer",
        run_ids=tuple(runs),
        sections=(Section(f"The answer on test: constraints, targets and {report.test_metric}",
                          tuple(answer), columns=1),
                  Section("Per variant, on test", tuple(bars)),
                  Section("Trajectories", tuple(curves))),
        group_by=TAG_VARIANT,
    )  # fmt: skip


def share_comparison(reader: RunReader, client: MlflowClient, report: Report) -> str:
    """Save `comparison_view` on the study's experiment, under the key the parent run's
    description links (`view_key`), and return that key."""
    keys = {run: reader.metric_keys(run) for run in deciding_runs(report)}
    key = view_key(report)
    share_view(client, report.experiment_id, key, comparison_view(report, keys))
    return key
