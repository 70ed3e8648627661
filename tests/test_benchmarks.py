"""Every script in benchmarks/ runs at its smallest size, as a user runs it (a process of its
own, on the CPU): a change that breaks one fails here, not on the day someone measures. The
figures at these sizes mean nothing; each must print its table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

SMOKE = {
    "benchmarks.trainer_speed": ["--steps", "8", "--repeats", "1"],
    "benchmarks.vectorized": ["--members", "2", "--steps", "2"],  # batches shared and own
    "benchmarks.multiplier_dynamics": [
        "--epochs", "0.05", "--cases", "geco κ=100", "--rules", "geco (lr 1e-3, ema 0.9)"
    ],
    "benchmarks.constrained_search": [
        "--seeds", "0", "--epochs", "0.1", "--geco-trials", "2", "--compare-budget", "1",
        "--geco-methods", "random", "gp+stop", "--compare-methods", "tpe", "--noise", "2",
    ],
    "benchmarks.study_throughput": [
        "--trials", "2", "--epochs", "0.1", "--train-limit", "444", "--pack", "2"
    ],
    "benchmarks.quickstart_time": [
        "--study", "studies/cpu/geco.yaml", "--set", "study.num_trials=2",
        "--set", "train.epochs=0.5", "--set", "data.train_limit=444",
        "--set", "study.confirm.seeds=1",
    ],
    "benchmarks.vs_script": ["--trials", "2"],
    "benchmarks.gpu_check": ["--quick"],
}  # fmt: skip
# benchmarks/peer_geco.py is the hand-written peer that benchmarks.vs_script runs.


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {f"benchmarks.{p.stem}" for p in (REPO / "benchmarks").glob("*.py")}
    peer = {"benchmarks.__init__", "benchmarks.common", "benchmarks.peer_geco"}
    assert scripts - peer == set(SMOKE)


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SMOKE))
def test_the_benchmark_runs_at_its_smallest_size(tmp_path, script):
    extra = ["--out", str(tmp_path / "out.png")] if script.endswith("multiplier_dynamics") else []
    extra += ["--out", str(tmp_path / "results.md")] if script.endswith("gpu_check") else []
    device = [] if script.endswith("quickstart_time") else ["--device", "cpu"]
    data = ["--data", str(SHARED_DATA)]
    proc = subprocess.run(
        [sys.executable, "-m", script, *data, *device, *SMOKE[script], *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "|---" in proc.stdout or "|:--" in proc.stdout  # its Markdown table
