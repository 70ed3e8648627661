"""A study on a real multi-node Ray cluster with no shared filesystem (`loopback_cluster`):
PostgreSQL as MLflow's backend store and the Optuna storage, an S3-compatible object store as
Ray Tune's storage and MLflow's artifact store, trials on worker nodes that cannot see the
driver's disk. Faults injected for real: a driver whose storage the nodes cannot see, a worker
node's raylet killed mid-trial, the driver killed mid-study and resumed from another folder with
nothing but the URIs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, FEASIBLE_GECO, write_study
from tests.loopback_cluster import BUCKET, DATABASE, HEAD, TRACKING, LoopbackCluster

TRIALS = 4
STEPS = 2700  # 3,600 images (400 more for validation) / batch 40 = 90 steps per epoch, 30 epochs
SETTINGS = [
    "train.batch_size=40",
    "train.epochs=30",
    "train.log_every=50",
    "train.eval_every=100",
    "train.iwae_samples=5",
    "data.test_limit=200",
    "study.resources.cpu=1",
    "study.max_concurrent=2",
    "study.checkpoint_interval_s=2",
    f"study.num_trials={TRIALS}",
]
CLUSTER_ARGS = ["--address", HEAD, "--tracking-uri", TRACKING]


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))  # short: Ray's socket paths
    root.chmod(0o755)  # PostgreSQL runs as its own user
    drivers = [root / "driver", root / "driver2"]
    for folder in drivers:
        folder.mkdir()
    try:
        with LoopbackCluster(root, hidden=drivers, workers=2) as built:
            yield built
    finally:
        shutil.rmtree(root, ignore_errors=True)


def query(cluster: LoopbackCluster, code: str):
    """Run `code` (which binds `out`) in the cluster's network, return `out` (JSON)."""
    script = (
        "import json\nfrom mlflow.tracking import MlflowClient\n"
        f"client = MlflowClient({TRACKING!r})\n{code}\nprint(json.dumps(out))\n"
    )
    proc = cluster.run([sys.executable, "-c", script], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


TRIAL_RUNS = """
exp = client.get_experiment_by_name("geco")
runs = client.search_runs([exp.experiment_id], "tags.`vaestudy.trial_id` LIKE '%'") if exp else []
out = [
    {"id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
     "tags": r.data.tags, "steps": [m.step for m in client.get_metric_history(r.info.run_id,
     "train/loss")]}
    for r in runs
]
"""


def vaestudy(cluster: LoopbackCluster, folder: Path, args: list[str], name: str):
    shutil.copy(folder.parent / "study.yaml", folder / "study.yaml")
    command = [*CLI, "run", "study.yaml", *args]
    return cluster.start(name, command, cwd=folder)


def wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@pytest.mark.alone  # 3 Ray nodes, PostgreSQL and S3 on 2 cores: no room for another test
def test_a_study_survives_a_dead_node_and_a_dead_driver(cluster, shared_data):
    root = cluster.root
    write_study(root, shared_data, **FEASIBLE_GECO)  # no trial diverges: all must finish
    settings = [item for s in SETTINGS for item in ("--set", s)]
    driver, driver2 = root / "driver", root / "driver2"

    # Tune storage on the driver's disk: the worker nodes cannot see it. Stopped before any run.
    local = vaestudy(cluster, driver, [*CLUSTER_ARGS, *settings], "local-storage")
    assert wait(local, 300) == 2
    said = (root / "local-storage.log").read_text()
    assert "node 127.0.0.2" in said and "does not see" in said and "s3://" in said
    assert query(cluster, TRIAL_RUNS) == []

    s3 = [*CLUSTER_ARGS, "--storage-path", f"s3://{BUCKET}/ray_results",
          "--optuna-storage", f"{DATABASE}/optuna"]  # fmt: skip
    first = vaestudy(cluster, driver, [*s3, *settings], "driver")
    # A worker node dies mid-trial, after its trial's first checkpoints reached the store.
    deadline = time.monotonic() + 600
    while True:
        runs = query(cluster, TRIAL_RUNS)
        on_w1 = [r for r in runs if r["tags"].get("vaestudy.node", "").startswith("127.0.0.2 ")
                 and r["status"] == "RUNNING" and max(r["steps"], default=0) >= 300]  # fmt: skip
        if on_w1:
            break
        assert first.poll() is None and time.monotonic() < deadline, "no trial ran on 127.0.0.2"
        time.sleep(2)
    moved = on_w1[0]["id"]
    cluster.kill_raylet("127.0.0.2")
    # Then the driver dies, with trials still to run.
    while sum(r["status"] == "FINISHED" for r in query(cluster, TRIAL_RUNS)) < 1:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert sum(r["status"] == "FINISHED" for r in query(cluster, TRIAL_RUNS)) < TRIALS

    # Resumed from another folder with nothing but the URIs (the rest is on the parent run).
    resumed = vaestudy(cluster, driver2, [*CLUSTER_ARGS, "--resume"], "driver2")
    assert wait(resumed, 900) == 0, (root / "driver2.log").read_text()[-3000:]

    runs = query(cluster, TRIAL_RUNS)
    finished = [r for r in runs if r["status"] == "FINISHED"]
    assert len(finished) == TRIALS  # each trial finished once: none was run twice
    assert len({r["tags"]["vaestudy.trial_id"] for r in finished}) == TRIALS
    expected = list(range(50, STEPS + 1, 50))
    for run in finished:  # every trajectory complete, whatever happened to its attempts
        assert run["steps"] == expected, run["name"]
        assert not run["tags"]["vaestudy.node"].startswith("127.0.0.1 ")  # never on the head
    tags = next(r for r in runs if r["id"] == moved)["tags"]
    attempts = sorted(v for k, v in tags.items() if k.startswith("vaestudy.attempt."))
    assert attempts[0].startswith("127.0.0.2 ") and attempts[-1].startswith("127.0.0.3 ")
    assert int(tags["vaestudy.restored_from_step"]) >= 100  # from its checkpoint in S3

    stored = query(cluster, f"""
import boto3, optuna
keys = [o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(
    Bucket={BUCKET!r}) for o in page.get("Contents", [])]
parent = client.search_runs([client.get_experiment_by_name("geco").experiment_id],
                            "tags.`vaestudy.kind` = 'study'")[0]
ledger = optuna.load_study(study_name=parent.data.tags["vaestudy.optuna_study"],
                           storage={DATABASE + "/optuna"!r})
out = {{"keys": keys, "tags": parent.data.tags, "status": parent.info.status,
        "optuna": [t.state.name for t in ledger.trials]}}
""")  # fmt: skip
    assert stored["status"] == "FINISHED"
    assert stored["tags"]["vaestudy.tune_path"].startswith(f"s3://{BUCKET}/ray_results/geco")
    assert stored["tags"]["vaestudy.optuna_storage"] == f"{DATABASE}/optuna"
    assert stored["optuna"].count("COMPLETE") == TRIALS
    for run in finished:  # artifacts in the object store, through the tracking server
        assert any(k.endswith(f"{run['id']}/artifacts/samples.png") for k in stored["keys"])
    assert any(k.startswith("ray_results/geco") for k in stored["keys"])  # Tune's state
    assert not list(driver.glob("s3*")) and not list(driver2.glob("s3*"))  # no local "s3:"
