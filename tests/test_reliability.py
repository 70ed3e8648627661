"""Faults injected for real into running studies: a killed trial worker, a stopped tracking
server, and a load of 32 trials 8 at a time. Real Ray, real MLflow servers, real Optuna."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import time
from contextlib import ExitStack

import optuna
import pytest
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import CLI, TINY, children, sets, steps, write_study
from vaestudy.study.ledger import Ledger, settle_orphaned_trials
from vaestudy.study.runner import run_study
from vaestudy.study.search import TUNE_ID
from vaestudy.study.spec import load_study
from vaestudy.study.trial import TAG_PROCESS, TAG_RESTORED
from vaestudy.tracking.runs import TrialRun, find_trial_run
from vaestudy.tracking.stores import free_port, made_ready, optuna_storage_url, serve
from vaestudy.tracking.tags import TAG_INTERRUPTED
from vaestudy.training.feasibility import WORST

# 400 images / batch 40 = 10 steps per epoch; a point every 10 steps, a checkpoint every 100.
LONG = [
    *TINY,
    "train.log_every=10",
    "train.eval_every=100",
    "model.hidden=64",
    "study.checkpoint_interval_s=0",
]


def optuna_trials(client: MlflowClient, parent_id: str, store) -> list[optuna.trial.FrozenTrial]:
    name = client.get_run(parent_id).data.tags["vaestudy.optuna_study"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{store}").trials


def last_step(client: MlflowClient, run_id: str) -> int:
    return max(steps(client, run_id, "train/loss"), default=0)


# pack 2: the searched keys must be ones packed trials may differ in
PACKABLE = {
    "objective.kappa": {"uniform": [80.0, 120.0]},
    "objective.multiplier.init": {"loguniform": [0.1, 10.0]},
}


@pytest.mark.parametrize("pack", [1, 2], ids=["trial", "pack"])
def test_a_killed_trial_worker_resumes_from_its_checkpoint_in_the_same_run(
    tmp_path, shared_data, server, ray_session, monkeypatch, pack
):
    """SIGKILL the worker process of a running trial (or pack of trials): Tune retries it from
    its last checkpoint, the retry continues the same MLflow runs, and every trajectory has
    every point exactly once."""
    monkeypatch.chdir(tmp_path)
    name = f"crash-{pack}"
    changes = {"pack": pack, "search": PACKABLE} if pack > 1 else {}
    path = write_study(
        tmp_path, shared_data, name=name, max_concurrent=1, max_failures=2, **changes
    )
    study = load_study(path, [*LONG, f"study.num_trials={pack}", "train.epochs=200"])
    client = MlflowClient(server)
    killed: dict[str, str] = {}

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            time.sleep(0.2)
            exp = client.get_experiment_by_name(name)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            for run in runs:
                if TAG_PROCESS in run.data.tags and last_step(client, run.info.run_id) >= 300:
                    killed.update(run=run.info.run_id, process=run.data.tags[TAG_PROCESS])
                    os.kill(int(killed["process"].rsplit(":", 1)[1]), signal.SIGKILL)
                    break

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    outcome = run_study(study, tracking_uri=server)
    killer.join()
    assert killed, "the trial finished before it could be killed"

    runs = children(client, outcome.parent_run_id)
    assert len(runs) == pack and killed["run"] in {r.info.run_id for r in runs}  # continued
    for run in runs:
        assert run.info.status == "FINISHED" and "test/iwae_nll" in run.data.metrics
        assert run.data.tags[TAG_PROCESS] != killed["process"]  # a new worker finished it
        restored = int(run.data.tags[TAG_RESTORED])
        assert restored >= 100 and restored % 100 == 0  # from a checkpoint, not from scratch
        for key in ("train/loss", "train/kl", "train/lambda/recon"):
            assert steps(client, run.info.run_id, key) == list(range(10, 2001, 10)), key
    trials = optuna_trials(client, outcome.parent_run_id, tmp_path / "mlflow" / "optuna.db")
    assert len(trials) == pack and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_tracking_server_outage_mid_study_loses_no_metrics(tmp_path, shared_data):
    """Stop the MLflow server while trials are logging, bring it back on the same port and
    store ~20 s later: the study finishes and every trajectory point is in MLflow."""
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    port = free_port()
    path = write_study(tmp_path, shared_data, name="outage", max_concurrent=1)
    # the full-size model (hidden 512): a trial lasts seconds, long enough to meet the outage
    overrides = [*LONG, "study.num_trials=3", "train.epochs=60", "model.hidden=512"]
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "driver.log"
    with ExitStack() as first:
        first.enter_context(serve(f"sqlite:///{store}", port=port))
        driver = subprocess.Popen(
            [*CLI, "run", str(path), "--tracking-uri", uri, *sets(overrides)],
            cwd=tmp_path,
            env={**os.environ, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"},  # retries at 2, 4, 8 s..
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        client = MlflowClient(uri)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the first trial is logging
            time.sleep(0.5)
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any(last_step(client, r.info.run_id) > 0 for r in runs):
                break
        assert driver.poll() is None, log.read_text()[-3000:]
    # the server is down now; trials keep training and their requests back off
    time.sleep(5)
    with serve(f"sqlite:///{store}", port=port):
        assert driver.wait(timeout=500) == 0, log.read_text()[-3000:]
        client = MlflowClient(uri)
        parent = client.search_runs(
            [client.get_experiment_by_name("outage").experiment_id],
            filter_string="tags.`vaestudy.kind` = 'study'",
        )[0]
        kids = children(client, parent.info.run_id)
        assert len(kids) == 3
        gaps = []  # the outage fell inside a trial: its points straddle a long pause
        for run in kids:
            times = [m.timestamp for m in client.get_metric_history(run.info.run_id, "train/loss")]
            gaps += [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) > 5
        for run in kids:
            assert run.info.status == "FINISHED", run.data.tags
            for key in ("train/loss", "train/recon", "train/lambda/recon"):
                assert steps(client, run.info.run_id, key) == list(range(10, 601, 10)), key
            assert "test/iwae_nll" in run.data.metrics


def test_unsent_trajectory_points_wait_for_the_next_flush(server, monkeypatch):
    """Past the client's retries, a non-strict flush keeps the points and a later one sends
    them; a strict flush (the trial's last) raises. What a checkpoint keeps (`unsent`, through
    JSON) and a later attempt re-queues (`keep`) is sent once, even a point that had been sent."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(server)
    experiment = client.create_experiment(f"buffer-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    run = TrialRun.open(client, experiment, parent, "t0", "t0", {})
    run.add_row({"step": 1.0, "loss": 3.0})
    run.client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # nobody listens there
    run.flush(strict=False)
    run.add_row({"step": 2.0, "loss": 2.0})
    run.flush(strict=False)
    try:
        run.flush(strict=True)
        raise AssertionError("a strict flush to a dead server must raise")
    except Exception as exc:  # noqa: BLE001 - MlflowException or a connection error
        assert "127.0.0.1" in str(exc)
    run.client = client
    run.flush()
    run.add_row({"step": 3.0, "loss": 1.5})
    kept = json.loads(json.dumps(run.unsent()))  # as a checkpoint holds them
    again = TrialRun.open(client, experiment, parent, "t0", "t0", {})  # the next attempt
    sent = client.get_metric_history(run.run_id, "train/loss")[-1]  # step 2, sent
    again.keep([(sent.key, sent.value, sent.timestamp, sent.step), *map(tuple, kept)])
    again.finish()
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss")] == [
        (1, 3.0),
        (2, 2.0),
        (3, 1.5),
    ]
    assert client.get_run(run.run_id).info.status == RunStatus.to_string(RunStatus.FINISHED)


def test_32_tiny_trials_8_at_once_keep_every_trajectory(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    """Load: 32 trials, 8 running at once on 2 CPUs, one MLflow server; every trial's full
    trajectory and test metrics are in MLflow and every Optuna trial is finished."""
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, shared_data, name="load", max_concurrent=8)
    overrides = [
        *TINY,
        "study.num_trials=32",
        "study.resources.cpu=0.25",
        "data.train_limit=222",  # 200 to train on
        "train.log_every=1",
        "model.hidden=32",
    ]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    assert not outcome.interrupted
    client = MlflowClient(server)
    kids = children(client, outcome.parent_run_id)
    assert len(kids) == 32
    assert len({r.data.tags["vaestudy.trial_id"] for r in kids}) == 32
    for run in kids:
        if run.info.status == "FAILED":  # a diverged trial keeps its trajectory up to the fault
            step = int(run.data.tags["vaestudy.failure_step"])
            assert steps(client, run.info.run_id, "train/loss") == list(range(1, step + 1))
            continue
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "train/kl", "train/recon", "train/lambda/recon"):
            assert steps(client, run.info.run_id, key) == [1, 2, 3, 4, 5], key
        assert "test/iwae_nll" in run.data.metrics
    trials = optuna_trials(client, outcome.parent_run_id, tmp_path / "mlflow" / "optuna.db")
    assert len(trials) == 32 and all(t.state.is_finished() for t in trials)


def test_resume_settles_trials_a_killed_driver_left_running(
    tmp_path, shared_data, server, monkeypatch
):
    """The driver died after two trials' MLflow runs ended (one finished, one diverged) but
    before Optuna heard, and while a third was mid-run: on resume the first two count with
    MLflow's outcome, the third is closed without counting, so it is run again."""
    monkeypatch.chdir(tmp_path)
    study = load_study(write_study(tmp_path, shared_data, name="orphans"), ["study.num_trials=4"])
    client = MlflowClient(server)
    experiment = client.create_experiment(f"orphans-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    ledger = Ledger("orphans", made_ready(optuna_storage_url()))
    ot = optuna.create_study(study_name=ledger.name, storage=ledger.storage)
    outcomes = {"t-done": "FINISHED", "t-diverged": "FAILED", "t-running": None}
    for tune_id, status in outcomes.items():
        trial = ot.ask()
        trial.set_user_attr(TUNE_ID, tune_id)
        run = TrialRun.open(client, experiment, parent, tune_id, tune_id, {})
        run.log_final({"kl": 12.5}, 10, prefix="val/")
        run.log_final({"kl": 99.0}, 10, prefix="test/")  # the verdict's: Optuna never sees it
        if status == "FAILED":
            run.set_tags({"vaestudy.failure_reason": "nan", "vaestudy.failure_step": "3"})
        if status:
            run.finish(status)
    assert ledger.remaining(study.spec.num_trials) == 4

    settle_orphaned_trials(study, ledger, client, experiment, parent)
    states = [t.state for t in ot.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    assert ot.trials[0].value == 12.5  # study metric val/kl, read back from MLflow
    # as the search tells them (TPE reads constraints): the yardstick's val/recon is missing,
    # and the diverged trial is the worst value, infeasible
    assert ot.trials[0].constraints["yardstick:recon<=110"] == WORST
    worst = dict.fromkeys(ot.trials[0].constraints, WORST)  # every key the study's trials have
    assert ot.trials[1].value == math.inf and ot.trials[1].constraints == worst
    assert ledger.remaining(study.spec.num_trials) == 2

    settle_orphaned_trials(study, ledger, client, experiment, parent, interrupted=True)
    assert ot.trials[2].state == TrialState.FAIL
    assert ledger.remaining(study.spec.num_trials) == 2  # the interrupted one does not count
    cut = find_trial_run(client, experiment, parent, "t-running")
    assert cut.info.status == "KILLED" and TAG_INTERRUPTED in cut.data.tags
