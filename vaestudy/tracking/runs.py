"""MLflow tracking: where runs go, the study's parent run, and each trial's child run.

Store. Without `--tracking-uri` / `MLFLOW_TRACKING_URI` the store is the project's `mlflow/`
folder: `mlflow/mlflow.db` (SQLite, MLflow's default backend kind) and `mlflow/artifacts/`;
`vaestudy.tracking.stores` serves it (or any non-HTTP URI, e.g. `postgresql://...`) on loopback for
the study's length, and uses an `http(s)://` URI as it is (a shared server for a Ray cluster, see
mlflow/README.md).

Runs. The study is a parent run; each trial is a child run (tag `mlflow.parentRunId`) tagged with
the study, objective, model and the Ray Tune trial id, so a retried or restored trial continues
its own run instead of starting a duplicate. Trajectories go in with `log_batch` (<= 1000 metrics
per request); a resumed trial skips steps already logged. The MLflow client retries failed HTTP
requests with exponential backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7: about four
minutes), which rides out brief server outages; past that, a trial keeps its unsent trajectory
points queued and sends them at its next flush, and each Tune checkpoint keeps them too
(`TrialRun.unsent` / `keep`), so an outage costs no metrics; a server silent for longer ends the
study (`vaestudy.study.server_watch`).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaestudy.config.dotted import flatten
from vaestudy.tracking.tags import (
    MODEL_TRAINING,
    PARENT,
    TAG_EXPERIMENT_KIND,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_STOPPED,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_VAL_FEASIBLE,
    TRIAL_CONFIG,
)

MAX_BATCH = 1000


def study_experiment(client: MlflowClient, name: str) -> str:
    """The id of study `name`'s experiment, created (or restored) as a model-training one."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING})
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(TAG_EXPERIMENT_KIND) != MODEL_TRAINING:  # made before vaestudy set it
        client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
    return exp.experiment_id


def search_all(
    client: MlflowClient, experiment: str, filter_string: str, order_by: list[str] | None = None
) -> list[Run]:
    """Every run of `experiment` matching `filter_string`, page after page (one search returns
    at most 1000 runs)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment], filter_string=filter_string, order_by=order_by, page_token=token
        )
        runs += page
        token = page.token
        if not token:
            return runs


def study_runs(client: MlflowClient, experiment: str, study: str) -> list[Run]:
    """The parent runs of `study` in `experiment`, newest first."""
    return search_all(
        client,
        experiment,
        f"tags.`{TAG_KIND}` = 'study' and tags.`{TAG_STUDY}` = '{study}'",
        ["attributes.start_time DESC"],
    )


def latest_study_run(client: MlflowClient, experiment: str, study: str) -> Run | None:
    """The newest parent run of `study` in `experiment`, or None."""
    runs = study_runs(client, experiment, study)
    return runs[0] if runs else None


def trial_runs(client: MlflowClient, experiment: str, parent_run_id: str) -> list[Run]:
    """The trial (child) runs of the study run `parent_run_id` in `experiment`."""
    return search_all(client, experiment, f"tags.`{PARENT}` = '{parent_run_id}'")


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for i in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def now_ms() -> int:
    return int(time.time() * 1000)


def find_trial_run(
    client: MlflowClient, experiment: str, parent_run_id: str, trial_id: str
) -> Run | None:
    """The child run of Tune trial `trial_id` in the study run `parent_run_id`, if any."""
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.{TAG_TRIAL} = '{trial_id}' and tags.`{PARENT}` = '{parent_run_id}'",
        max_results=1,
    )
    return found[0] if found else None


ERROR_PREFIX = "error on "  # a failure reason that is an exception: "error on NODE: Type: message"


def error_reason(node: str, exc: BaseException) -> str:
    """The failure reason of an attempt that raised `exc` on `node`."""
    return f"{ERROR_PREFIX}{node}: {type(exc).__name__}: {exc}"


def raised(reason: str) -> str | None:
    """The exception (`Type: message`) a failure reason records, or None when the trial did not
    raise one (its process died)."""
    if not reason.startswith(ERROR_PREFIX) or ": " not in reason:
        return None
    return reason.split(": ", 1)[1]


def ended(run: Run) -> bool:
    """Whether a trial's run reached its own end: finished, or diverged (FAILED with a step)."""
    status = run.info.status
    return status == "FINISHED" or (status == "FAILED" and TAG_FAILURE_STEP in run.data.tags)


class TrialRun:
    """A trial's child run: find-or-create by Tune trial id, then log into it."""

    def __init__(
        self, client: MlflowClient, run_id: str, logged_upto: float, closed: Run | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.logged_upto = logged_upto  # the last step sent to the server
        self.closed = closed  # the run as found, if it had already ended (a replayed trial)
        self._pending: list[Metric] = []
        self._queued_upto = logged_upto  # the last step queued (sent or not)

    @classmethod
    def open(
        cls,
        client: MlflowClient,
        experiment: str,
        parent_run_id: str,
        trial_id: str,
        trial_name: str,
        tags: dict[str, str],
    ) -> TrialRun:
        found = find_trial_run(client, experiment, parent_run_id, trial_id)
        if found:
            run_id, run_tags = found.info.run_id, found.data.tags
            if ended(found):
                return cls(client, run_id, math.inf, closed=found)
            if TAG_FAILURE in run_tags:  # closed as an orphan earlier; it lives again
                client.delete_tag(run_id, TAG_FAILURE)
            client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, "train/loss")
            upto = max((m.step for m in history), default=-1)
            reopened = cls(client, run_id, upto)
            reopened.set_tags(tags)
            return reopened
        all_tags = {PARENT: parent_run_id, TAG_TRIAL: trial_id, "mlflow.runName": trial_name}
        run = client.create_run(experiment, tags={**all_tags, **tags}, run_name=trial_name)
        return cls(client, run.info.run_id, -1)

    def add_row(self, row: dict[str, float]) -> None:
        """Queue one trajectory point (keys become `train/<key>`), unless already queued."""
        step = int(row["step"])
        if step <= max(self.logged_upto, self._queued_upto):
            return
        self._queued_upto = step
        ts = now_ms()
        self._pending += [
            Metric(f"train/{k}", float(v), ts, step)
            for k, v in row.items()
            if k != "step" and math.isfinite(v)
        ]

    def add_metrics(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        """Queue held-out metrics of one evaluation at `step` (`val/<key>`), unless a restored
        attempt already sent that step."""
        if step <= self.logged_upto:
            return
        ts = now_ms()
        self._pending += [
            Metric(f"{prefix}{k}", float(v), ts, step)
            for k, v in metrics.items()
            if math.isfinite(v)
        ]

    def unsent(self) -> list[tuple[str, float, int, int]]:
        """The queued points not yet sent, as (key, value, timestamp ms, step): what a
        checkpoint keeps."""
        return [(m.key, m.value, m.timestamp, m.step) for m in self._pending]

    def keep(self, points: list[tuple[str, float, int, int]]) -> None:
        """Queue points an earlier attempt could not send (`unsent`), first. Sending one that
        reached the server after all is harmless: MLflow stores a repeated point (same key,
        value, time and step) once."""
        self._pending = [Metric(k, v, t, step) for k, v, t, step in points] + self._pending

    def rewind(self, step: int) -> None:
        """Training went back to `step` (a restart from the last good state): drop unsent points
        after it and accept them again."""
        self._pending = [m for m in self._pending if m.step <= step]
        self.logged_upto = min(self.logged_upto, step)
        self._queued_upto = step

    def flush(self, strict: bool = True) -> None:
        """Send the queued trajectory points. The client already retries with backoff (about
        four minutes by default); if the server is still away and `strict` is False, the points
        stay queued for the next flush and training goes on."""
        if not self._pending:
            return
        try:
            while self._pending:  # chunk by chunk, so a retry never sends a chunk twice
                chunk = self._pending[:MAX_BATCH]
                self.client.log_batch(self.run_id, metrics=chunk)
                sent = max(m.step for m in chunk)
                self._pending = self._pending[MAX_BATCH:]
        except (MlflowException, OSError) as exc:
            if strict:
                raise
            print(
                f"vaestudy: tracking server unavailable, {len(self._pending)} metrics kept "
                f"for the next flush ({exc})",
                file=sys.stderr,
            )
            return
        self.logged_upto = max(self.logged_upto, sent)

    def log_final(self, metrics: dict[str, float], step: int, prefix: str = "test/") -> None:
        ts = now_ms()
        log_metrics(
            self.client,
            self.run_id,
            [Metric(f"{prefix}{k}", float(v), ts, step) for k, v in metrics.items()],
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        tag_run(self.client, self.run_id, {k: str(v) for k, v in tags.items()})

    def log_config(self, config: dict[str, Any]) -> None:
        """The trial's whole config as the artifact `vaestudy best` writes out (`TRIAL_CONFIG`)
        and as params (dotted key -> value): the keys it has a value for, so the params of a run
        are what it is (no "None" for what its objective, model or data lack or leave to run
        time); the variant, phase, seed and confirmation link are its tags."""
        params = {k: v for k, v in flatten(config).items() if v is not None}
        log_params(self.client, self.run_id, params)
        self.client.log_dict(self.run_id, config, TRIAL_CONFIG)

    def log_files(self, paths: list[Path]) -> None:
        """Files (figures, weights) as artifacts of the trial's run."""
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def open_study_run(
    client: MlflowClient, experiment: str, name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """Create a study's parent run `name` with its `tags` and `params`; its run id."""
    run = client.create_run(experiment, run_name=name, tags=tags)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def reopen_study_run(client: MlflowClient, run_id: str) -> None:
    """Mark a resumed study's parent run RUNNING again."""
    client.update_run(run_id, status="RUNNING")


def tag_run(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Set `tags` on a run (one request)."""
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def close_study_run(
    client: MlflowClient, run_id: str, status: str, tags: dict[str, str] | None = None
) -> None:
    """End a study's parent run with `status` (FINISHED, FAILED, KILLED), setting `tags` first."""
    if tags:
        tag_run(client, run_id, tags)
    client.set_terminated(run_id, status=status)


def log_study_answer(
    client: MlflowClient,
    run_id: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    report_md: str,
) -> None:
    """Write a study's answer on its parent run: `metrics` (at step 0), `tags`, and the report's
    tables as the artifact `report/report.md` (`vaestudy.report.tables.log_answer`)."""
    ts = now_ms()
    log_metrics(client, run_id, [Metric(k, v, ts, 0) for k, v in metrics.items()])
    tag_run(client, run_id, tags)
    client.log_text(run_id, report_md, "report/report.md")


def retire_attempt(client: MlflowClient, run_id: str) -> None:
    """Close the run of an attempt a killed driver left unfinished, which is run again as a new
    trial: KILLED, tagged `vaestudy.interrupted` (the counts leave it out)."""
    client.set_tag(run_id, TAG_INTERRUPTED, "run again as a new trial")
    client.set_terminated(run_id, status="KILLED")


def close_orphans(
    client: MlflowClient,
    experiment: str,
    parent_run_id: str,
    ended_cleanly: set[str],
    hopeless: dict[str, str] | None = None,
) -> int:
    """Close child runs left RUNNING after the study: KILLED with `vaestudy.stopped_early` when
    Tune ended the trial without error (a scheduler stopped it: `scheduler`; or the hopeless
    stopper: its reason, from `hopeless`, trial id -> reason, and not selectable), else FAILED
    (its attempts errored: the reason the last one recorded, or that its process died, and
    where)."""
    hopeless = hopeless or {}
    running = search_all(
        client, experiment, f"tags.`{PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    )
    for run in running:
        trial = run.data.tags.get(TAG_TRIAL, "")
        if trial in hopeless:
            client.set_tag(run.info.run_id, TAG_STOPPED, hopeless[trial])
            client.set_tag(run.info.run_id, TAG_VAL_FEASIBLE, "false")
            status = RunStatus.KILLED
        elif trial in ended_cleanly or trial.rpartition("/")[0] in ended_cleanly:
            client.set_tag(run.info.run_id, TAG_STOPPED, "scheduler")
            status = RunStatus.KILLED
        else:
            if TAG_FAILURE not in run.data.tags:  # the attempt's own error, if it recorded one
                node = run.data.tags.get("vaestudy.node", "an unknown node")
                reason = (f"the trial's process on {node} ended without closing its run (killed, "
                          "out of memory, or the node died)")  # fmt: skip
                client.set_tag(run.info.run_id, TAG_FAILURE, reason)
            status = RunStatus.FAILED
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(status))
    return len(running)
