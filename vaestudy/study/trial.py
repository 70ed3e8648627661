"""One study trial inside a Ray Tune worker: config -> Trainer -> MLflow child run + Tune reports.

- Resolves the trial config from the study template and the sampled parameters.
- Opens (or, after a retry or restore, reopens) its MLflow child run by Tune trial id.
- Trains; at every evaluation it flushes the trajectory to MLflow, reports the held-out metrics to
  Tune (for the searcher and the scheduler) and saves a Tune checkpoint of the full training state.
- At the end it logs the test metrics and the artifacts (samples, reconstructions, trajectory
  plot, model weights) and finishes the run.
- A diverged trial (non-finite loss or runaway multiplier) is marked FAILED in MLflow with the
  reason and step, reported to Tune with `vaestudy/diverged` (Optuna records it as FAILED), and
  ends normally, so the rest of the study goes on. With `study.on_divergence.retries` it first
  restarts from its last good state with a smaller learning rate.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from ray import tune

from vaestudy.plots import plot_trajectories, save_reconstructions, save_samples
from vaestudy.study.search import DIVERGED
from vaestudy.study.spec import FULL_EVAL_ONLY, Study
from vaestudy.tracking import (
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_MODEL,
    TAG_OBJECTIVE,
    TAG_STUDY,
    TrialRun,
    flatten,
    log_params,
)
from vaestudy.trainer import Diverged, Trainer

STATE_FILE = "trainer.pt"
TAG_PROCESS = "vaestudy.process"  # host:pid of the worker training the trial (latest attempt)
TAG_RESTORED = "vaestudy.restored_from_step"  # set when a retry resumed from a checkpoint
WORST = 1e30


@dataclass
class TrialContext:
    """What every trial needs from the driver; pickled into the Ray object store."""

    study: Study
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def _needs_full_eval(study: Study) -> bool:
    return any(m.removeprefix("test/") in FULL_EVAL_ONLY for m in study.spec.metrics)


def _tune_metrics(study: Study, test: dict[str, float], row: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {f"test/{k}": v for k, v in test.items()}
    out.update({f"train/{k}": v for k, v in row.items()})
    for metric, mode in zip(study.spec.metrics, study.spec.modes, strict=True):
        out.setdefault(metric, WORST if mode == "min" else -WORST)
    return out


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable."""
    study = ctx.study
    cfg = study.trial_config(config)
    context = tune.get_context()
    client = MlflowClient(ctx.tracking_uri)
    tags = {
        TAG_STUDY: study.name,
        TAG_OBJECTIVE: cfg.objective.name,
        TAG_MODEL: cfg.model.name,
    }
    run = TrialRun.open(
        client,
        ctx.experiment_id,
        ctx.parent_run_id,
        context.get_trial_id(),
        context.get_trial_name(),
        tags | {TAG_PROCESS: f"{socket.gethostname()}:{os.getpid()}"},
    )
    if run.closed is not None:
        # Tune replays a trial that ended after its last saved experiment state: do not train
        # it again, hand Tune the result MLflow already holds.
        metrics = run.closed.data.metrics
        test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
        report = _tune_metrics(study, test, {})
        report[DIVERGED] = int(run.closed.info.status == "FAILED")
        tune.report(report)
        return
    log_params(client, run.run_id, flatten(cfg.model_dump(mode="json")))

    trainer = Trainer(cfg)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Tune retries a crashed trial from its last checkpoint
        with checkpoint.as_directory() as folder:
            trainer.load_bytes((Path(folder) / STATE_FILE).read_bytes())
        run.set_tags({TAG_RESTORED: str(trainer.step)})
    last_good = trainer.save_bytes()
    full_eval = _needs_full_eval(study)

    def on_eval(step: int, quick: dict[str, float]) -> None:
        nonlocal last_good
        run.flush(strict=False)  # a tracking outage must not stop training
        test = trainer.evaluate(full=True) if full_eval else quick
        last_good = trainer.save_bytes()
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / STATE_FILE).write_bytes(last_good)
            tune.report(
                _tune_metrics(study, test, trainer.history[-1]),
                checkpoint=tune.Checkpoint.from_directory(folder),
            )

    policy = study.spec.on_divergence
    restarts = 0
    while True:
        try:
            result = trainer.fit(on_log=run.add_row, on_eval=on_eval)
            break
        except Diverged as exc:
            run.add_row(trainer.history[-1])  # the interval that diverged
            if restarts < policy.retries:
                restarts += 1
                trainer.load_bytes(last_good)
                for group in trainer.optimizer.param_groups:
                    group["lr"] = cfg.train.lr * policy.lr_factor**restarts
                run.logged_upto = trainer.step  # log the retried steps again
                run.set_tags({"vaestudy.lr_restarts": str(restarts)})
                continue
            run.set_tags({TAG_FAILURE: exc.reason, TAG_FAILURE_STEP: str(exc.step)})
            run.finish("FAILED")
            report = _tune_metrics(study, {}, {})
            report[DIVERGED] = 1
            tune.report(report)
            return

    run.flush()
    run.log_final(result.test, result.steps)
    _log_artifacts(run, trainer, study.name)
    run.finish("FINISHED")
    tune.report(_tune_metrics(study, result.test, result.history[-1]) | {DIVERGED: 0})


def _log_artifacts(run: TrialRun, trainer: Trainer, study_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trainer.model.eval()
        save_samples(trainer.model, folder / "samples.png")
        save_reconstructions(trainer.model, trainer.data, folder / "reconstructions.png")
        plot_trajectories(
            trainer.history, folder / "trajectories.png", f"{study_name}: {run.run_id[:8]}"
        )
        weights = {"model": trainer.model.state_dict(), "objective": trainer.objective.state_dict()}
        torch.save(weights, folder / "model.pt")
        for name in ("samples.png", "reconstructions.png", "trajectories.png", "model.pt"):
            run.client.log_artifact(run.run_id, str(folder / name))
