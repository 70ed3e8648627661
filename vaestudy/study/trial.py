"""Study trials inside a Ray Tune worker: config -> Trainer -> MLflow child run + Tune reports.

`run_trial` trains one trial; `run_pack` trains a pack of trials (`study.pack`) as one
`VectorTrainer`, each member with its own MLflow child run, reporting every member's metrics
under `member<i>/` (and the pack's best under the study metric, for Tune's progress table).

- Resolves the trial config from the study template and the sampled parameters.
- Opens (or, after a retry or restore, reopens) its MLflow child run by Tune trial id.
- Trains; at its evaluations it logs the validation metrics (`val/...`) with the trajectory to
  MLflow and reports them to Tune (for the searcher and the scheduler: at every evaluation with a
  scheduler, else at most every `SEND_EVERY_S`), with a Tune checkpoint of the full training
  state when `study.checkpoint_interval_s` has passed since the last one.
- At the end it logs the validation and the test metrics (`val/...`, `test/...`; the test split
  is scored only here, and Tune and Optuna never see it) and the artifacts (samples,
  reconstructions, trajectory plot, model weights), tags the run with where it stands
  (`vaestudy.training.feasibility`: the verdict on test, `vaestudy.training.feasibility`,
  `vaestudy.feasible`, ...; and on validation, `vaestudy.val_feasible`, which selection reads;
  saturated multipliers) and finishes the run. A trial
  that `train.stop_saturated` stopped early ends the same way, tagged `vaestudy.stopped_early`.
- A diverged trial (non-finite loss or runaway multiplier) is marked FAILED in MLflow with the
  reason and step, reported to Tune with `vaestudy/diverged` (the search tells Optuna: see
  `vaestudy.study.search`), and ends normally, so the rest of the study goes on. With
  `study.on_divergence.retries` it first restarts from its last good state with a smaller
  learning rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from vaestudy.config.dotted import unprefixed
from vaestudy.config.run import RunConfig
from vaestudy.study.report_keys import (
    DIVERGED,
    PROGRESS,
    SATURATED,
    member_key,
    member_prefix,
)
from vaestudy.study.spec import CONFIRMS, Study, trial_label
from vaestudy.study.trainables import TrialContext
from vaestudy.tracking.runs import TrialRun, error_reason
from vaestudy.tracking.tags import (
    CONFIRM,
    SEARCH,
    TAG_CONFIRMS,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_FEASIBLE,
    TAG_MODEL,
    TAG_OBJECTIVE,
    TAG_OWN,
    TAG_PHASE,
    TAG_SATURATED,
    TAG_STATE,
    TAG_STOPPED,
    TAG_STUDY,
    TAG_VAL_FEASIBLE,
    TAG_VARIANT,
    TAG_YARDSTICK,
)
from vaestudy.training.feasibility import WORST, judge
from vaestudy.training.image_grids import save_reconstructions, save_samples
from vaestudy.training.plots import plot_trajectories
from vaestudy.training.trainer import Diverged, Trainer, TrainResult, on_cpu
from vaestudy.training.vectorized import VectorTrainer, member_view

STATE_FILE = "trainer.pt"
UNSENT_FILE = "unsent.json"  # per run: the points not yet sent when the checkpoint was taken
TAG_PROCESS = "vaestudy.process"  # host:pid of the worker training the trial (latest attempt)
TAG_NODE = "vaestudy.node"  # the Ray node of the latest attempt: "IP (node id)"
TAG_ATTEMPT = "vaestudy.attempt."  # vaestudy.attempt.<k>: where attempt k ran (node, host:pid)


def where() -> str:
    """This process's Ray node: its IP (as the cluster knows the node) and node id."""
    node = ray.get_runtime_context().get_node_id()
    ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node), "?")
    return f"{ip} ({node})"


@contextlib.contextmanager
def errors_recorded(runs: Sequence[TrialRun]) -> Iterator[None]:
    """Record an error that ends an attempt (not a divergence: an exception of the code or the
    machine) on the trial's runs, with the node, then let Tune retry or fail the trial."""
    try:
        yield
    except Exception as exc:
        reason = error_reason(where(), exc)
        for run in runs:
            with contextlib.suppress(Exception):  # the tracking server may be what failed
                run.set_tags({TAG_FAILURE: reason[:5000]})
        raise


TAG_RESTORED = "vaestudy.restored_from_step"  # set when a retry resumed from a checkpoint


def tune_metrics(
    study: Study, val: dict[str, float], row: dict[str, float], progress: float = 1.0
) -> dict[str, Any]:
    """Validation and train metrics for Tune (never test metrics: Tune's searcher, scheduler and
    stopper steer), and `progress`, the fraction of the training steps done. Evaluations during
    training are quick (no IWAE, active units or probe: the scheduler's metric never needs them,
    `spec.py` checks); a study metric they lack is reported as ±WORST, which Tune requires and
    the search does not pass on."""
    out: dict[str, Any] = {f"val/{k}": v for k, v in val.items()}
    out.update({f"train/{k}": v for k, v in row.items()})
    out[PROGRESS] = progress
    for metric, mode in zip(study.spec.metrics, study.spec.modes, strict=True):
        out.setdefault(metric, WORST if mode == "min" else -WORST)
    return out


def _open_run(
    ctx: TrialContext, params: dict[str, Any], trial_id: str, trial_name: str
) -> tuple[TrialRun, RunConfig]:
    """The trial's config and child run, created or reopened (see `TrialRun.open`), params
    logged."""
    cfg = placed(ctx.study.trial_config(params))
    client = MlflowClient(ctx.tracking_uri)
    variant = ctx.study.variant(params)
    confirms = params.get(CONFIRMS)
    label = trial_label(params)  # `geco #3`; a confirmation run: `geco #3 seed 1000`
    if label is not None:
        trial_name = f"{variant} {label}"
    tags = {
        TAG_PHASE: SEARCH if confirms is None else CONFIRM,
        **({TAG_CONFIRMS: confirms["run_id"]} if confirms else {}),
        TAG_STUDY: ctx.study.name,
        TAG_OBJECTIVE: cfg.objective.name,
        TAG_VARIANT: variant,
        TAG_MODEL: cfg.model.name,
        TAG_PROCESS: f"{socket.gethostname()}:{os.getpid()}",
        TAG_NODE: where(),
    }
    run = TrialRun.open(client, ctx.experiment_id, ctx.parent_run_id, trial_id, trial_name, tags)
    if run.closed is None:
        attempts = sum(k.startswith(TAG_ATTEMPT) for k in client.get_run(run.run_id).data.tags)
        run.set_tags({f"{TAG_ATTEMPT}{attempts + 1}": f"{tags[TAG_NODE]}, {tags[TAG_PROCESS]}"})
        config = cfg.model_dump(mode="json")
        run.log_config(config)
    return run, cfg


def placed(cfg: RunConfig) -> RunConfig:
    """The config as this worker trains it, and as its run logs it: `train.device: auto`
    resolved by what Ray gave the trial (`cuda` with a GPU, else `cpu`: never a GPU Ray did not
    give it, though a trial without one sees every GPU of its node), and the CPU thread count
    (Ray sets it from the trial's CPUs), so the logged config repeats the trial's float sums."""
    update: dict[str, Any] = {}
    if cfg.train.device == "auto":
        update["device"] = "cuda" if ray.get_gpu_ids() else "cpu"
    if cfg.train.threads is None:
        update["threads"] = torch.get_num_threads()
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=update)})


def _closed_report(study: Study, run: TrialRun) -> dict[str, Any]:
    """What MLflow holds for a run that ended in an earlier attempt (Tune replays a trial that
    ended after its last saved experiment state: it is not trained again)."""
    assert run.closed is not None
    val = unprefixed(run.closed.data.metrics, "val/")
    return tune_metrics(study, val, {}) | {
        DIVERGED: int(run.closed.info.status == "FAILED"),
        SATURATED: run.closed.data.tags.get(TAG_SATURATED, ""),
    }


def _restore(trainer: Trainer, runs: list[TrialRun]) -> None:
    """Tune retries a crashed or stopped trial from its last checkpoint, if it has one: the
    training state, and the points the runs could not send then, which go out first."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        trainer.load_bytes((Path(folder) / STATE_FILE).read_bytes())
        unsent = Path(folder) / UNSENT_FILE
        kept = json.loads(unsent.read_text()) if unsent.exists() else [[] for _ in runs]
    for run, points in zip(runs, kept, strict=True):
        run.keep([tuple(p) for p in points])
        run.flush(strict=False)
        run.set_tags({TAG_RESTORED: str(trainer.step)})


SEND_EVERY_S = 2.0  # without a scheduler: least seconds between a trial's sends


class Reporter:
    """Sends a trial's held-out metrics at its evaluations: the points its `runs` queued to
    MLflow, and the metrics to Tune. At every evaluation when a scheduler or the hopeless
    stopper reads them; else at
    most every `SEND_EVERY_S` (each send is a request per run to the tracking server, which
    shares the trials' cores; the points wait queued for the next send or the trial's end).
    With a Tune checkpoint when `study.checkpoint_interval_s` has passed since the last one
    (and at the first evaluation): the training state, and the points `runs` could not send yet
    (a tracking outage)."""

    def __init__(self, study: Study, runs: list[TrialRun]) -> None:
        self.interval = study.spec.checkpoint_interval_s
        steered = study.spec.scheduler is not None or study.spec.stop_hopeless is not None
        self.every = 0.0 if steered else SEND_EVERY_S
        self.runs = runs
        self.last: float | None = None  # the last checkpoint
        self.sent: float | None = None  # the last send

    def __call__(self, metrics: dict[str, Any], state: Callable[[], bytes]) -> None:
        now = time.monotonic()
        checkpoint = self.last is None or now - self.last >= self.interval
        if not checkpoint and self.sent is not None and now - self.sent < self.every:
            return
        self.sent = now
        for run in self.runs:
            run.flush(strict=False)  # a tracking outage must not stop training
        if not checkpoint:
            tune.report(metrics)
            return
        self.last = now
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / STATE_FILE).write_bytes(state())
            unsent = [run.unsent() for run in self.runs]
            (Path(folder) / UNSENT_FILE).write_text(json.dumps(unsent))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def final_report(study: Study, result: TrainResult | None) -> dict[str, Any]:
    """A trial's last report to Tune, which the search tells Optuna (`TrialTeller`): the
    validation metrics, `vaestudy/diverged` and `vaestudy/saturated`. `result` None: it
    diverged."""
    if result is None:
        return tune_metrics(study, {}, {}) | {DIVERGED: 1}
    row = result.history[-1] if result.history else {}
    return tune_metrics(study, result.val, row) | {
        DIVERGED: 0,
        SATURATED: ",".join(result.saturated),
    }


def _fail(study: Study, run: TrialRun, exc: Diverged) -> dict[str, Any]:
    """Close a diverged trial's run as FAILED with the reason; its report for Tune."""
    run.set_tags({TAG_FAILURE: exc.reason, TAG_FAILURE_STEP: str(exc.step)})
    run.finish("FAILED")
    return final_report(study, None)


def _finish(study: Study, run: TrialRun, trainer: Trainer, result: TrainResult) -> dict[str, Any]:
    """Log a finished trial's validation and test metrics, artifacts and standing, close its
    run; its report for Tune."""
    run.flush()
    run.log_final(result.val, result.steps, prefix="val/")
    run.log_final(result.test, result.steps, prefix="test/")
    _log_artifacts(run, trainer, study.name)
    verdict = judge(result.test, study.spec.constraints, result.saturated)
    selectable = judge(result.val, study.spec.constraints, result.saturated)
    saturated = ",".join(result.saturated)
    tags = {
        TAG_STATE: verdict.state,
        TAG_OWN: str(verdict.own).lower(),
        TAG_YARDSTICK: str(verdict.yardstick).lower(),
        TAG_FEASIBLE: str(verdict.feasible).lower(),
        TAG_VAL_FEASIBLE: str(selectable.feasible).lower(),
    }
    if saturated:
        tags[TAG_SATURATED] = saturated
    if result.stopped_saturated:
        tags[TAG_STOPPED] = f"saturated ({saturated}) at step {result.steps}"
    run.set_tags(tags)
    run.finish("FINISHED")
    return final_report(study, result)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: one trial."""
    study = ctx.study
    context = tune.get_context()
    run, cfg = _open_run(ctx, config, context.get_trial_id(), context.get_trial_name())
    if run.closed is not None:
        tune.report(_closed_report(study, run))
        return
    with errors_recorded([run]):
        _train(study, cfg, run)


class ComputeClock:
    """A trial's in-process compute, in seconds: the wall time from building its `Trainer` to
    the end of its final evaluation, less the time spent in the callbacks it wraps (MLflow
    logging, Tune's reports and checkpoints). Logged as `time/compute_s`: what the trial costs
    without Ray and MLflow (`benchmarks/quickstart_time.py` sets a study's wall time against
    it)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.outside = 0.0

    def outside_of(self, fn: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            began = time.perf_counter()
            try:
                fn(*args)
            finally:
                self.outside += time.perf_counter() - began

        return timed

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.outside


def _train(study: Study, cfg: RunConfig, run: TrialRun) -> None:
    """One trial's training, reports and end (see the module doc)."""
    clock = ComputeClock()
    trainer = Trainer(cfg)
    _restore(trainer, [run])
    policy = study.spec.on_divergence
    # Where a divergence restart goes back to: the state at the last evaluation, kept in memory
    # only when restarts are allowed (a checkpoint, taken at an evaluation, is that state too).
    last_good = trainer.save_bytes() if policy.retries else b""
    report = Reporter(study, [run])

    def on_eval(step: int, quick: dict[str, float]) -> None:
        nonlocal last_good
        run.add_metrics(quick, step, "val/")
        if policy.retries:
            last_good = trainer.save_bytes()
        state = (lambda: last_good) if policy.retries else trainer.save_bytes
        progress = trainer.step / trainer.total_steps
        report(tune_metrics(study, quick, trainer.history[-1], progress), state)

    restarts = 0
    while True:
        try:
            result = trainer.fit(on_log=clock.outside_of(run.add_row),
                                 on_eval=clock.outside_of(on_eval))  # fmt: skip
            break
        except Diverged as exc:
            run.add_row(trainer.history[-1])  # the interval that diverged
            if restarts < policy.retries:
                restarts += 1
                trainer.load_bytes(last_good)
                for group in trainer.optimizer.param_groups:
                    group["lr"] = cfg.train.lr * policy.lr_factor**restarts
                run.rewind(trainer.step)  # log the retried steps again
                run.set_tags({"vaestudy.lr_restarts": str(restarts)})
                continue
            tune.report(_fail(study, run, exc))
            return
    compute_s = clock.seconds()
    run.log_final({"compute_s": compute_s}, result.steps, prefix="time/")
    tune.report(_finish(study, run, trainer, result))


def _pack_report(study: Study, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Every member's report under `member<i>/`, and the best member's value of each study
    metric under its own name."""
    out = {f"{member_prefix(i)}{k}": v for i, r in enumerate(reports) for k, v in r.items()}
    for metric, mode in zip(study.spec.metrics, study.spec.modes, strict=True):
        values = [r[metric] for r in reports]
        out[metric] = min(values) if mode == "min" else max(values)
    return out


def run_pack(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: the trials `config["members"]` as one VectorTrainer."""
    study = ctx.study
    context = tune.get_context()
    trial_id, name = context.get_trial_id(), context.get_trial_name()
    runs, cfgs = zip(
        *(
            _open_run(ctx, member, member_key(trial_id, i), member_key(name, i))
            for i, member in enumerate(config["members"])
        ),
        strict=True,
    )
    if all(run.closed is not None for run in runs):
        tune.report(_pack_report(study, [_closed_report(study, run) for run in runs]))
        return
    # Confirmation seeds are replicates: each draws its own batches (the search's packed trials
    # share theirs: common random numbers between settings).
    replicates = all(CONFIRMS in member for member in config["members"])
    with errors_recorded(runs):
        _train_pack(study, list(cfgs), list(runs), "own" if replicates else "shared")


def _train_pack(
    study: Study, cfgs: list[RunConfig], runs: list[TrialRun], batches: Literal["shared", "own"]
) -> None:
    """A pack's training, reports and each member's end."""
    trainer = VectorTrainer(cfgs, batches=batches)
    _restore(trainer, runs)
    report = Reporter(study, runs)

    def on_log(row: dict[str, float]) -> None:
        for i, run in enumerate(runs):
            own = member_view(row, i)
            if own:
                run.add_row(own)

    def on_eval(step: int, quick: dict[str, float]) -> None:
        for i, run in enumerate(runs):
            run.add_metrics(member_view(quick, i), step, "val/")
        progress = trainer.step / trainer.total_steps
        reports = [
            tune_metrics(study, member_view(quick, i), member.history[-1], progress)
            | {DIVERGED: int(i in trainer.diverged)}
            for i, member in enumerate(trainer.members)
        ]
        report(_pack_report(study, reports), trainer.save_bytes)

    results = trainer.fit(on_log=on_log, on_eval=on_eval)
    reports = []
    for run, member, result in zip(runs, trainer.members, results, strict=True):
        if run.closed is not None:  # ended in an earlier attempt
            reports.append(_closed_report(study, run))
        elif result.diverged is not None:
            run.add_row(result.history[-1])  # the interval that diverged
            reports.append(_fail(study, run, result.diverged))
        else:
            reports.append(_finish(study, run, member, result))
    tune.report(_pack_report(study, reports))


def _log_artifacts(run: TrialRun, trainer: Trainer, study_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trainer.model.eval()
        save_samples(trainer.model, folder / "samples.png")
        save_reconstructions(trainer.model, trainer.data, folder / "reconstructions.png")
        plot_trajectories(
            [trainer.history], folder / "trajectories.png", f"{study_name}: {run.run_id[:8]}"
        )
        # CPU tensors: the file loads on any machine, with or without a GPU.
        weights = {"model": trainer.model.state_dict(), "objective": trainer.objective.state_dict()}
        torch.save(on_cpu(weights), folder / "model.pt")
        names = ("samples.png", "reconstructions.png", "trajectories.png", "model.pt")
        run.log_files([folder / name for name in names])
