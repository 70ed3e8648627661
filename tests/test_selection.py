"""The test split is for the verdict only; confirmation retrains each selection with fresh seeds.
Real Ray Tune, real Optuna, a real MLflow server and SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CLI, TINY, children, sets, write_idx, write_study
from vaestudy.config.dotted import unprefixed
from vaestudy.report.tables import build_report
from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking.tags import TAG_CONFIRMS, TAG_PHASE

pytestmark = pytest.mark.slow


def read_idx(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(path.read_bytes()[header:], dtype=np.uint8)


def with_other_test_images(shared_data: Path, root: Path) -> Path:
    """The shared MNIST subset with the same training files and other test images (each test
    image's pixels shuffled, labels kept)."""
    raw, shared = root / "MNIST" / "raw", shared_data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to(shared / name)
    images = read_idx(shared / "t10k-images-idx3-ubyte", 16).reshape(-1, 28 * 28)
    labels = read_idx(shared / "t10k-labels-idx1-ubyte", 8)
    shuffled = images[:, np.random.default_rng(0).permutation(28 * 28)]
    write_idx(raw, "t10k", shuffled.reshape(-1, 28, 28), labels)
    return root


def test_the_search_never_reads_the_test_split(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    """The same seeded TPE study (one trial at a time, the model after two random trials) on
    the shared data and on the same data with other test images: identical proposals, values,
    constraint values, selection and validation metrics; only `test/...` differs."""
    monkeypatch.chdir(tmp_path)
    other = with_other_test_images(shared_data, tmp_path / "other")
    sampler = {"kind": "tpe", "seed": 0, "startup_trials": 2}
    overrides = [*TINY, "study.num_trials=5", "train.epochs=2"]
    client = MlflowClient(server)
    runs, ledgers, reports = [], [], []
    for name, root in (("blind-a", shared_data), ("blind-b", other)):
        path = write_study(tmp_path, root, name=name, max_concurrent=1, sampler=sampler)
        outcome = run_study(load_study(path, overrides), tracking_uri=server)
        ledgers.append(optuna.load_study(study_name=name, storage="sqlite:///mlflow/optuna.db"))
        kids = children(client, outcome.parent_run_id)
        runs.append({r.info.run_name: r for r in kids})
        reports.append(outcome.report)

    a, b = ledgers
    assert len(a.trials) == len(b.trials) == 5
    for ta, tb in zip(a.trials, b.trials, strict=True):
        assert ta.params == tb.params and ta.values == tb.values
        assert ta.system_attrs.get("constraints") == tb.system_attrs.get("constraints")
    assert runs[0].keys() == runs[1].keys()
    differs = 0
    for name, ra in runs[0].items():
        rb = runs[1][name]
        assert unprefixed(ra.data.metrics, "val/") == unprefixed(rb.data.metrics, "val/"), name
        test_a, test_b = (unprefixed(r.data.metrics, "test/") for r in (ra, rb))
        differs += test_a.keys() == test_b.keys() and test_a["recon"] != test_b["recon"]
    assert differs == len(runs[0])  # every trial's verdict read its own (different) test split
    sel_a, sel_b = (r.summary["selected"].tolist() for r in reports)
    assert sel_a == sel_b
    best_a, best_b = (r.best_feasible() for r in reports)
    assert (best_a is None) == (best_b is None)
    if best_a is not None:
        assert best_a["trial"] == best_b["trial"]


VARIANTS = {"choice": [{"name": "elbo"}, {"name": "beta_vae", "beta": 2.0}]}


def test_confirmation_retrains_each_selection_with_fresh_seeds_and_resumes(
    tmp_path, shared_data, server
):
    """Two variants on a grid (one trial each), then two fresh seeds each. The driver is
    interrupted (SIGINT) after the first confirmation run; `--resume` runs exactly the missing
    ones; the report gives every variant its rates and mean with intervals."""
    path = write_study(
        tmp_path, shared_data, name="confirmed-e2e", max_concurrent=1,
        sampler={"kind": "grid", "seed": 0}, search={"objective": VARIANTS},
        confirm={"seeds": 2, "first_seed": 1000},
    )  # fmt: skip
    overrides = sets([*TINY, "study.num_trials=2", "train.epochs=3"])
    command = [*CLI, "run", str(path), "--tracking-uri", server, *overrides]
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=log.open("wb"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    client = MlflowClient(server)

    def confirmations(status: str | None = None) -> list:
        exp = client.get_experiment_by_name("confirmed-e2e")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return [
            r for r in runs if r.data.tags.get(TAG_PHASE) == "confirm"
            and (status is None or r.info.status == status)
        ]  # fmt: skip

    deadline = time.monotonic() + 400
    while not confirmations("FINISHED") and time.monotonic() < deadline:
        assert driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
    assert len(confirmations("FINISHED")) < 4  # cut in the middle

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env=os.environ)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    done = confirmations("FINISHED")
    report = build_report(client, "confirmed-e2e")
    search = report.search_trials()
    assert len(search) == 2 and set(search["variant"]) == {"elbo", "beta_vae"}
    selected = dict(zip(search["variant"], search["run_id"], strict=True))  # one trial each
    plan = {(r.data.tags[TAG_CONFIRMS], r.data.params["train.seed"]) for r in done}
    assert len(done) == 4 and plan == {
        (run_id, seed) for run_id in selected.values() for seed in ("1000", "1001")
    }  # every entry exactly once, each confirming its variant's selected trial
    for run in done:
        assert run.data.tags["vaestudy.variant"] == next(
            v for v, rid in selected.items() if rid == run.data.tags[TAG_CONFIRMS]
        )
        assert run.info.run_name.endswith(f"seed {run.data.params['train.seed']}")
    c = report.confirmation.set_index("variant")
    assert sorted(c.index) == ["beta_vae", "elbo"] and (c["seeds"] == 2).all()
    assert c["test/kl mean"].notna().all() and c["test/kl ±95%"].gt(0).all()  # metric: val/kl
    assert c["feasible 95% CI"].str.match(r"\[\d\.\d\d, \d\.\d\d\]").all()
    assert "confirmed on test" in resumed.stdout
    answer = resumed.stdout[resumed.stdout.index("Feasible = ") :]  # the answer, and after it
    assert max(len(line) for line in answer.splitlines()) <= 120, answer
    parent = client.get_run(report.parent_run_id)
    assert parent.data.tags["vaestudy.answer"].startswith("confirmed on test")
    assert "confirmed/feasible_low/elbo" in parent.data.metrics
    table = pd.DataFrame(report.trials)
    assert (table["phase"] == "confirm").sum() >= 4
