"""`vaestudy run` / `validate` / `ui` as a user meets them: preflight checks that fail in
seconds with nothing created, config checks without torch/Ray/MLflow, exit statuses, resume
with the remembered overrides, and a UI that leaves no server behind. Real processes, a real
MLflow server, real Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CLI, REPO, TINY, children, cli, sets, write_study
from vaestudy.cli import EXIT_BAD_INPUT, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_OK
from vaestudy.errors import ClusterError, ConfigError, UserError
from vaestudy.study import cluster
from vaestudy.study.cluster import reach_problems
from vaestudy.study.ledger import Ledger, resumed_ledger
from vaestudy.study.preflight import data_configs, study_problems
from vaestudy.study.resume import TAG_OVERRIDES, merged_overrides
from vaestudy.study.search import counts
from vaestudy.study.spec import load_study
from vaestudy.tracking.runs import latest_study_run
from vaestudy.tracking.stores import free_port, redacted, tune_storage_uri


def test_validate_imports_no_framework(tmp_path):
    """Config validation (and the preflight checks) import neither torch, Ray nor MLflow (a
    study asking for GPUs imports torch to count its network's parameters)."""
    code = (
        "import sys\n"
        "from vaestudy.cli import main\n"
        f"code = main(['validate', {str(REPO / 'studies' / 'geco.yaml')!r}, "
        f"'--set', 'data.root={REPO.parent / 'shared' / 'data'}', "
        "'--set', 'study.resources.gpu=0'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'ray', 'mlflow', 'optuna', 'torchvision'})\n"
        "print(code, heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


def test_a_diverging_train_run_exits_1_with_the_reason_and_no_traceback(tmp_path, shared_data):
    path = tmp_path / "run.yaml"
    rule = "{update: geco, lr: 1.0, max: 1.0e+9}"  # λ·exp(C): runs away at once
    path.write_text(
        f"data: {{root: {shared_data}, train_limit: 300, test_limit: 50}}\n"
        f"objective: {{name: geco, kappa: 1.0, multiplier: {rule}}}\n"
        "train: {epochs: 1, batch_size: 50, log_every: 1}\n"
    )
    result = cli(["train", str(path)], tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}: training diverged at step" in result.stderr
    assert "lambda/recon" in result.stderr and "> train.max_lambda" in result.stderr


def test_a_bad_tracking_silence_limit_is_refused_before_anything_starts(tmp_path, shared_data):
    """$VAESTUDY_TRACKING_SILENCE_S (how long the tracking server may stay silent) must be a
    number of seconds above 0: else exit 2 naming it, nothing created."""
    study = REPO / "studies" / "cpu" / "geco.yaml"
    for bad in ("soon", "0", "-5"):
        env = {**os.environ, "VAESTUDY_TRACKING_SILENCE_S": bad}
        proc = cli(["run", str(study), "--set", f"data.root={shared_data}"], tmp_path, env=env)
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert f"$VAESTUDY_TRACKING_SILENCE_S={bad!r}: expected a number of seconds" in proc.stderr
        assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_a_missing_data_root_fails_before_anything_starts(tmp_path):
    """Exit 2 with every problem listed, and no store, Ray results or runs created."""
    study = REPO / "studies" / "cpu" / "geco.yaml"
    args = ["run", str(study), "--set", "data.root=/nonexistent", "--set", "study.resources.cpu=64"]
    started = time.monotonic()
    proc = cli(args, tmp_path, timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert "/nonexistent/MNIST/raw" in proc.stderr and "study.resources.cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow/, no ray_results/
    assert took < 60  # seconds, not the minutes a Ray start and a failing trial take
    proc = cli(["validate", str(study), "--set", "data.root=/nonexistent"], tmp_path)
    assert proc.returncode == EXIT_BAD_INPUT and "/nonexistent/MNIST/raw" in proc.stderr


def test_an_unreachable_cluster_fails_before_anything_starts(tmp_path, shared_data):
    """Ray would retry an unreachable --address for minutes, printing as it goes."""
    study = REPO / "studies" / "cpu" / "geco.yaml"
    address = f"127.0.0.1:{free_port()}"
    args = ["run", str(study), "--set", f"data.root={shared_data}", "--address", address]
    proc = cli(args, tmp_path, timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert f"Ray cluster {address} is unreachable" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_preflight_checks_every_data_config_and_the_stores(tmp_path, shared_data, tiny_mnist):
    """A searched data root is checked for each value; an unreachable server and an unwritable
    storage path are reported together."""
    path = write_study(
        tmp_path,
        shared_data,
        search={
            "objective.kappa": {"uniform": [80, 90]},
            "data.root": {"choice": [str(shared_data), str(tiny_mnist), str(tmp_path / "nothing")]},
        },
    )
    study = load_study(path)
    assert len(data_configs(study)) == 3
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    problems = study_problems(
        study, tracking_uri=f"http://127.0.0.1:{free_port()}", storage_path=str(blocker / "x")
    )
    assert len(problems) == 3, problems
    assert str(tmp_path / "nothing") in problems[0]
    assert "unreachable" in problems[1] and "is a file" in problems[2]
    (tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    assert "not an IDX file" in study_problems(study)[0]


def test_preflight_checks_storage_uris_and_the_optuna_database(tmp_path, shared_data, monkeypatch):
    """Tune storage as a URI is opened as Tune would (no local `s3:` folder); the Optuna
    database must answer, and its password is never printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    for key, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")):
        monkeypatch.setenv(key, value)
    study = load_study(write_study(tmp_path, shared_data))
    database = f"postgresql://vaestudy:s3cret@127.0.0.1:{free_port()}/optuna"
    problems = study_problems(
        study, storage_path="s3://bucket/ray_results", optuna_storage=database
    )
    assert len(problems) == 2, problems
    assert (
        problems[0].startswith("Optuna storage postgresql://127.0.0.1:")
        and "unreachable" in problems[0]
    )
    assert "Ray Tune storage s3://bucket/ray_results cannot be opened" in problems[1]
    assert "s3cret" not in " ".join(problems) and not list(tmp_path.glob("s3*"))
    assert redacted(database) == database.replace("s3cret", "***")
    assert tune_storage_uri("s3://bucket/ray_results/") == "s3://bucket/ray_results"
    monkeypatch.setenv("VAESTUDY_STORAGE_PATH", "gs://other/path")
    assert tune_storage_uri(None) == "gs://other/path"


def test_resume_needs_the_optuna_password_that_was_not_recorded(monkeypatch):
    monkeypatch.delenv("VAESTUDY_OPTUNA_STORAGE", raising=False)
    tags = {"vaestudy.optuna_study": "geco-2",
            "vaestudy.optuna_storage": "postgresql://vs:***@db:5432/optuna"}  # fmt: skip
    with pytest.raises(UserError, match="pass that URL with its password as --optuna-storage"):
        resumed_ledger(tags, None)
    with pytest.raises(UserError, match="lives in postgresql://vs:\\*\\*\\*@db:5432/optuna"):
        resumed_ledger(tags, "postgresql://vs:pw@elsewhere:5432/optuna")
    assert resumed_ledger(tags, "postgresql://vs:pw@db:5432/optuna") == Ledger(
        "geco-2", "postgresql://vs:pw@db:5432/optuna"
    )
    sqlite = {"vaestudy.optuna_study": "geco", "vaestudy.optuna_storage": "sqlite:////a/b.db"}
    assert resumed_ledger(sqlite, None).storage == "sqlite:////a/b.db"  # recorded in full


def test_every_node_checks_it_reaches_the_stores(ray_session, tmp_path):
    """The check `vaestudy run` makes on each node of a cluster, as a real Ray task: an
    unreachable tracking server and a storage folder the node does not see."""
    import ray

    probe = ray.remote(num_cpus=0)(reach_problems)
    tracking = f"http://127.0.0.1:{free_port()}"
    unseen = str(tmp_path / "not-written-by-the-driver")
    problems = ray.get(probe.remote(tracking, str(tmp_path), unseen))
    assert len(problems) == 2
    assert tracking in problems[0] and "--tracking-uri http://HOST:PORT" in problems[0]
    assert "does not see" in problems[1] and "s3://" in problems[1]
    (tmp_path / "marker").write_text("")
    assert ray.get(probe.remote(tracking, str(tmp_path), str(tmp_path / "marker")))[1:] == []


def test_a_local_ray_start_that_times_out_is_stopped_and_tried_again(monkeypatch, capsys):
    """Ray's own fixed 30 s wait for a new local node, missed (the fault injected into
    `ray.init` after it started a process): what the failed start left running is stopped and
    the start tried again, saying so; a start that keeps timing out ends in a `ClusterError`
    naming local causes, after `LOCAL_ATTEMPTS` tries."""
    import ray

    started: list[subprocess.Popen] = []
    timeout = "The current node timed out during startup. This could happen because ..."

    def init(**kwargs) -> None:
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        if len(started) == 1:
            raise Exception(timeout)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)  # a shared test session stays up
    monkeypatch.setattr(ray, "init", init)
    cluster.start_ray(None)
    assert started[0].wait(timeout=10) == -signal.SIGKILL  # the failed start's process
    assert started[1].poll() is None  # the second start's, left running
    started[1].kill()
    said = capsys.readouterr().err
    assert "did not start within Ray's fixed 30 s (load average" in said
    assert "starting it again (attempt 2 of 3)" in said

    def never(**kwargs) -> None:
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        raise Exception(timeout)

    monkeypatch.setattr(ray, "init", never)
    with pytest.raises(ClusterError, match=r"local Ray instance \(attempt 3 of 3\).*too loaded"):
        cluster.start_ray(None)
    assert all(p.wait(timeout=10) == -signal.SIGKILL for p in started[2:])
    assert len(started) == 2 + cluster.LOCAL_ATTEMPTS


def test_resume_overrides_must_agree_with_the_start():
    stored = ["data.root=/d", "study.num_trials=3"]
    assert merged_overrides(stored, ["study.num_trials=3"], "s.yaml") == stored
    with pytest.raises(ConfigError, match=r"study.num_trials: started with 3, now 5"):
        merged_overrides(stored, ["study.num_trials=5"], "s.yaml")
    with pytest.raises(ConfigError, match=r"train.lr: started with the file's value"):
        merged_overrides(stored, ["train.lr=0.1"], "s.yaml")


def test_sigint_then_resume_with_the_remembered_overrides(tmp_path, shared_data, server):
    """Ctrl-C a study started with overrides: exit 130 and a printed command; `--resume`
    without the overrides finishes the same study (same parent run, its trial count)."""
    path = write_study(tmp_path, shared_data, name="interrupted", max_concurrent=1)
    overrides = [*TINY, "train.epochs=3", "study.resources.cpu=1"]
    args = ["run", str(path), "--tracking-uri", server, *sets(overrides), "--trials", "3"]
    driver = subprocess.Popen(
        [*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    client = MlflowClient(server)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # SIGINT once the first trial has finished
        exp = client.get_experiment_by_name("interrupted")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if any(r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags for r in runs):
            break
        time.sleep(1)
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == EXIT_INTERRUPTED, err
    assert "continue it with: vaestudy run" in err and "--resume" in err
    parent = next(r for r in runs if r.data.tags.get("vaestudy.kind") == "study")
    assert json.loads(parent.data.tags[TAG_OVERRIDES]) == [*overrides, "study.num_trials=3"]

    proc = cli(["run", str(path), "--tracking-uri", server, "--resume"], tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    kids = children(client, parent.info.run_id)
    assert sum(r.info.status == "FINISHED" for r in kids) == 3
    assert all(float(r.data.params["train.epochs"]) == 3 for r in kids)
    again = cli(["run", str(path), "--tracking-uri", server, "--resume", "--trials", "4"], tmp_path)
    assert again.returncode == EXIT_BAD_INPUT and "started with 3, now 4" in again.stderr


def test_an_erroring_trial_exits_1_and_a_diverged_one_exits_0(tmp_path, shared_data, server):
    """Infrastructure errors are not results: exit 1. A diverged trial is a result: exit 0."""
    path = write_study(tmp_path, shared_data, name="exits", max_failures=0)
    base = ["run", str(path), "--tracking-uri", server, *sets(TINY), "--trials", "1"]
    # A device this machine lacks (mps: Apple's GPUs, which Ray does not schedule): every
    # attempt of the trial errors inside the worker.
    proc = cli([*base, "--set", "train.device=mps"], tmp_path)
    assert proc.returncode == EXIT_INFRA, proc.stdout + proc.stderr
    assert "1 errored" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    cause = "RuntimeError: PyTorch is not linked with support for"  # (mps devices)
    assert f"errored: {cause}" in proc.stdout  # the cause, at once
    hint = proc.stderr.replace("\n", " ")  # resuming alone would raise it again: fix it first
    assert f"they raised {cause}" in hint
    assert "Fix that first: then vaestudy run" in hint and "--resume runs 1 more" in hint
    client = MlflowClient(server)
    parent = client.get_run(_newest_parent(client, "exits"))
    (errored,) = children(client, parent.info.run_id)
    tags = errored.data.tags  # the error and where it happened, on the trial's run
    assert tags["vaestudy.failure_reason"].startswith(f"error on {tags['vaestudy.node']}: ")
    assert cause in tags["vaestudy.failure_reason"]
    assert tags["vaestudy.attempt.1"].startswith(tags["vaestudy.node"])
    storage = f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}"
    ledger = optuna.load_study(study_name=parent.info.run_name, storage=storage)
    assert [t.state.name for t in ledger.trials] == ["FAIL"]
    assert not counts(ledger.trials[0])  # it did not use up the study's one trial...
    again = cli([*base[:2], "--tracking-uri", server, "--resume"], tmp_path)
    assert again.returncode == EXIT_INFRA, again.stdout + again.stderr
    assert len(children(client, parent.info.run_id)) == 2  # ...so --resume ran it again
    # GECO with a huge multiplier rate: λ runs away (as in test_a_diverging_trial_fails_alone).
    diverging = sets(
        [
            "study.search={objective.multiplier.lr: {choice: [1.0]}}",
            "objective.multiplier.max=1.0e+12",
            "objective.multiplier.warmup_steps=0",
        ]
    )
    proc = cli([*base, *diverging], tmp_path)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert "1 diverged, 0 errored" in proc.stdout


def _newest_parent(client: MlflowClient, study: str) -> str:
    experiment = client.get_experiment_by_name(study).experiment_id
    return latest_study_run(client, experiment, study).info.run_id


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_its_server_on_a_signal(tmp_path, sig):
    port = free_port()
    ui = subprocess.Popen(
        [*CLI, "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert "MLflow UI on" in ui.stdout.readline()  # printed once the server answers
    assert _listening(port)
    ui.send_signal(sig)
    assert ui.wait(timeout=60) == EXIT_OK
    assert not _listening(port)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////tmp/x.db?timeout=30", "/tmp/x.db"),  # the query is no part of the path
        ("sqlite:///mlflow/mlflow.db", "mlflow/mlflow.db"),
        ("sqlite:////abs/store.db", "/abs/store.db"),
        ("sqlite://", None),  # in memory
        ("sqlite:///:memory:", None),
        ("postgresql://user:secret@db:5432/optuna", None),
        ("http://127.0.0.1:5000", None),
        ("not a url", None),
    ],
)
def test_sqlite_urls_are_parsed_by_sqlalchemy(url, path):
    from pathlib import Path

    from vaestudy.tracking.stores import sqlite_file

    assert sqlite_file(url) == (None if path is None else Path(path))


@pytest.mark.slow
def test_a_sqlite_store_url_with_a_query_runs_and_reads_back(tmp_path, shared_data):
    """`--tracking-uri "sqlite:////abs/store.db?timeout=30"` (issue 38): the study trains, its
    answer is read back from `store.db` (not `store.db?timeout=30`), exit 0, and no file named
    after the query is left beside the store."""
    path = write_study(tmp_path, shared_data, name="queried")
    store = tmp_path / "stores" / "store.db"
    url = f"sqlite:///{store}?timeout=30"
    proc = cli(["run", str(path), "--tracking-uri", url, *sets(TINY), "--trials", "1"], tmp_path)
    assert proc.returncode == EXIT_OK, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Feasible = " in proc.stdout  # the answer, read back from the store
    assert store.is_file() and not [p for p in store.parent.iterdir() if "?" in p.name]
    assert [run.info.run_name for run in MlflowClient(url).search_runs(
        [MlflowClient(url).get_experiment_by_name("queried").experiment_id])]  # fmt: skip


def test_processes_are_found_by_descent_and_group():
    """`vaestudy.tracking.processes` (psutil): a child in a process group of its own and its
    child are this process's descendants and that group's members, alive until killed."""
    from vaestudy.tracking.processes import alive, descendants, group_members, kill

    script = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        ours = {child.pid, *descendants(child.pid)}  # never this process's other children
        assert len(ours) == 2 and ours <= descendants()
        assert group_members(child.pid) == ours
        assert alive(ours) == ours
        kill(ours)
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(ours)
    finally:
        with contextlib.suppress(OSError):
            child.kill()
