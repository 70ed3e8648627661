"""The test split is for the verdict only; confirmation retrains each selection with fresh seeds.
Real Ray Tune, real Optuna, a real MLflow server and SQLite store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import CLI, TINY, children, sets, write_idx, write_study
from vaestudy.config.dotted import unprefixed
from vaestudy.report.tables import build_report, deciding_runs, view_key
from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking.tags import TAG_CONFIRMS, TAG_PHASE, TAG_TRIAL
from vaestudy.tracking.ui_views import VIEW_TAG_PREFIX, decode, view_url

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


def test_confirmation_races_packed_seeds_and_resumes_mid_race(tmp_path, shared_data, server):
    """Two variants on a grid (one trial each), confirmed by a race: one seed each first (one
    seed decides nothing, so both stay open), then two more each, trained as one pack per
    variant (`pack: true`: on a CPU it is off by default). The driver is interrupted (SIGINT)
    once the second look's first pack has finished;
    `--resume` runs exactly the missing seeds; the report gives every variant's every
    constraint a margin with an interval and a verdict, and the pair its paired difference."""
    path = write_study(
        tmp_path, shared_data, name="confirmed-e2e", max_concurrent=1,
        sampler={"kind": "grid", "seed": 0}, search={"objective": VARIANTS},
        confirm={"seeds": 1, "max_seeds": 3, "step": 2, "first_seed": 1000, "pack": True},
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

    def second_look(runs: list) -> list:
        return [r for r in runs if r.data.params["train.seed"] != "1000"]

    deadline = time.monotonic() + 400
    while not second_look(confirmations("FINISHED")) and time.monotonic() < deadline:
        assert driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
    before = {r.info.run_id for r in confirmations("FINISHED")}
    assert 2 < len(before) < 6  # cut in the middle of the second look

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env=os.environ)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    done = confirmations("FINISHED")
    report = build_report(client, "confirmed-e2e")
    search = report.search_trials()
    assert len(search) == 2 and set(search["variant"]) == {"elbo", "beta_vae"}
    selected = dict(zip(search["variant"], search["run_id"], strict=True))  # one trial each
    plan = sorted((r.data.tags[TAG_CONFIRMS], r.data.params["train.seed"]) for r in done)
    assert plan == sorted(
        (run_id, seed) for run_id in selected.values() for seed in ("1000", "1001", "1002")
    )  # every seed of every variant exactly once: the resume ran only the missing ones
    assert before <= {r.info.run_id for r in done}  # what had finished was not run again
    for run in done:
        assert run.data.tags["vaestudy.variant"] == next(
            v for v, rid in selected.items() if rid == run.data.tags[TAG_CONFIRMS]
        )
        assert run.info.run_name.endswith(f"seed {run.data.params['train.seed']}")
    packs = {}  # the second look: each variant's two seeds as one Tune trial (members `<id>/i`)
    for run in second_look(done):
        packs.setdefault(run.data.tags[TAG_TRIAL].split("/")[0], set()).add(
            run.data.tags["vaestudy.variant"]
        )
    assert sorted(len(v) for v in packs.values()) == [1, 1] and len(packs) == 2

    c = report.confirmation.set_index("variant")
    assert sorted(c.index) == ["beta_vae", "elbo"] and (c["seeds"] == 3).all()
    assert c["test/kl mean"].notna().all() and c["test/kl ±95%"].gt(0).all()  # metric: val/kl
    assert c["feasible 95% CI"].str.match(r"\[\d\.\d\d, \d\.\d\d\]").all()
    m = report.margins
    assert set(zip(m["variant"], m["constraint"], strict=True)) >= {
        ("elbo", "recon<=110"), ("beta_vae", "recon<=110")}  # fmt: skip
    assert m["margin low"].notna().all() and m["verdict"].isin(
        ["satisfied", "violated", "undecided"]).all()  # fmt: skip
    undecided = m[m["verdict"] == "undecided"]
    assert (undecided["stopped"] == "max_seeds (3) reached").all()
    assert len(report.pairs) == 1 and report.pairs["seeds"].iloc[0] == 3
    assert report.race.level == pytest.approx(1 - 0.05 / 2)  # two looks: 1, 3 seeds
    assert (
        "Confirmed on test, ranked by" in resumed.stdout and "Constraint margins" in resumed.stdout
    )
    answer = resumed.stdout[resumed.stdout.index("Feasible = ") :]  # the answer, and after it
    prose = [line for line in answer.splitlines() if " " in line]  # a link alone is not broken
    assert max(len(line) for line in prose) <= 120, answer
    view = view_url(server, report.experiment_id, view_key(report))
    assert f"\nthe runs that decided it, side by side:\n{view}\n" in resumed.stdout  # the end
    parent = client.get_run(report.parent_run_id)
    assert parent.data.tags["vaestudy.answer"].startswith("confirmed on test")
    # printed once: the table; the one-line answer lives on the parent run, not on the console
    line = parent.data.tags["vaestudy.answer"]  # `confirmed on test, ranked by ... mean (...): `
    first = re.split(r" mean(?: \(.*?\))?: ", line, maxsplit=1)[1].split("; ")[0]
    assert first.split()[1] in resumed.stdout and first not in resumed.stdout
    assert "confirmed/feasible_low/elbo" in parent.data.metrics
    assert "confirmed/margin_high/recon_le_110/elbo" in parent.data.metrics
    assert parent.data.tags["vaestudy.verdict.elbo"] == c.loc["elbo", "constraints"]
    # From the study to the comparison: the runs that decided it, in a saved view of the UI
    assert sorted(deciding_runs(report)) == sorted(r.info.run_id for r in done)
    experiment = parent.info.experiment_id
    link = view_url("", experiment, view_key(report))
    assert f"]({link})" in parent.data.tags["mlflow.note.content"]  # the description links it
    saved = client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + view_key(report)]
    assert f"'{done[0].info.run_id}'" in decode(saved)["searchFilter"]
    ui = subprocess.run([*CLI, "ui", "confirmed-e2e", "--compare", "--tracking-uri", server],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ui.returncode == 0, ui.stderr
    assert ui.stdout.strip() == (
        f"open {view_url(server, experiment, view_key(report))} in a browser: that server is the UI"
    )
