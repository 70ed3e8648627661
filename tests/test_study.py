"""Studies end to end: real Ray Tune, real Optuna, a real MLflow server and SQLite store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import CLI, REPO, TINY, children, sets, steps, write_study
from vaestudy.cli import main
from vaestudy.config.dotted import flatten
from vaestudy.errors import ConfigError
from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking.tags import PARENT

KAPPA = {"objective.kappa": {"uniform": [80.0, 120.0]}}
STUDIES = sorted((REPO / "studies").rglob("*.yaml")) + [REPO / "examples" / "plugin" / "study.yaml"]


@pytest.mark.parametrize("path", STUDIES, ids=[str(p.relative_to(REPO)) for p in STUDIES])
def test_every_shipped_study_validates(path):
    study = load_study(path)
    assert study.distributions
    assert study.trial_config({}).objective.name


@pytest.mark.parametrize(
    "change, message",
    [
        ({"search": {"objective.kapa": {"uniform": [1, 2]}}}, "study.search.objective.kapa"),
        ({"search": {"objective.kappa": {"uniform": [5, 1]}}}, "low < high"),
        ({"search": {"objective.multiplier.lr": {"uniform": [-5, 1]}}}, "greater than 0"),
        ({"search": {"objective.kl": {"choice": []}}}, "at least 1 item"),
        ({"search": {"objective": {"choice": [{"name": "vqvae"}]}}}, "vqvae"),
        ({"resources": {"gpu": 2}}, "study.resources.gpu"),
        (
            {"search": {**KAPPA, "train.device": "cuda"}},
            "train.device: cuda, but study.resources.gpu is 0: the trial would use a GPU Ray "
            "did not give it",
        ),
        (
            {"search": {**KAPPA, "train.device": {"choice": ["cpu", "cuda"]}}},
            "train.device: cuda, but study.resources.gpu is 0",
        ),
        (
            {"search": {**KAPPA, "train.device": "cpu"}, "resources": {"gpu": 0.25}},
            "train.device: cpu, but study.resources.gpu is 0.25: each trial would hold a GPU",
        ),
        (
            {"search": {**KAPPA, "train.device": "cuda:1"}, "resources": {"gpu": 0.5}},
            "train.device: cuda:1: in a study Ray assigns each trial its GPU",
        ),
        (
            {"resources": {"gpu": 0.25}},
            "study.resources.gpu: each trial asks for 0.25 of a GPU, but this machine has no "
            "GPU to give it",
        ),
        ({"metric": "val/nonsense"}, "unknown metric"),
        (
            {"metric": "test/kl"},
            "the test split is for the verdict only; the search and every selection read the "
            "validation split: write val/kl",
        ),
        ({"constraints": [{"metric": "test/recon", "bound": 1}]}, "without its split"),
        ({"confirm": {"seeds": 2, "first_seed": 0}}, "overlap the search's train.seed"),
        ({"confirm": {"seeds": 3, "max_seeds": 2}}, "must be at least seeds"),
        (  # the race's later seeds must be fresh too
            {
                "confirm": {"seeds": 2, "max_seeds": 4},
                "search": {"train.seed": {"int": [1002, 1010]}},
            },
            "1000, 1001, 1002, 1003",  # the seeds up to max_seeds, two of them the search's
        ),
        ({"colour": "blue"}, "study.colour: unknown key"),
        ({"pack": 2}, "study.search.objective.multiplier.ema: with study.pack > 1"),
        ({"pack": 2, "scheduler": {"kind": "asha"}}, "a scheduler stops single trials"),
    ],
)
def test_bad_study_fails_before_anything_starts(
    tmp_path, shared_data, capsys, monkeypatch, change, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vaestudy.study.preflight.gpu_memory", list)  # no GPU, whatever the host
    path = write_study(tmp_path, shared_data, **change)
    if "this machine has no GPU" not in message:  # a preflight problem, not the file's
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            load_study(path)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err and "Traceback" not in err
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "ray_results").exists()


def test_many_concurrent_trials_keep_every_trajectory(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    study = load_study(
        write_study(tmp_path, shared_data, name="concurrent", max_concurrent=4),
        [*TINY, "study.num_trials=6", "study.resources.cpu=0.5"],
    )
    outcome = run_study(study, tracking_uri=server)
    client = MlflowClient(server)
    kids = children(client, outcome.parent_run_id)
    assert len(kids) == 6
    for run in kids:
        if run.info.status == "FINISHED":
            for key in ("train/kl", "train/recon", "train/lambda/recon", "train/loss"):
                assert steps(client, run.info.run_id, key) == [2, 4, 6, 8, 10], key
        else:
            assert run.info.status == "FAILED" and "vaestudy.failure_reason" in run.data.tags
    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    assert len(ot.trials) == 6 and all(t.state.is_finished() for t in ot.trials)

    # the report reads this real study back, end to end through the CLI
    out = tmp_path / "report"
    assert main(["report", "concurrent", "--tracking-uri", server, "--out", str(out)]) == 0
    for name in ("report.md", "trials.csv", "summary.csv", "report.html", "rate_distortion.png"):
        assert (out / name).is_file(), name
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and set(trials["objective"]) == {"geco"}
    assert {"recon: target", "recon: test", "recon: held_last20", "test/iwae_nll"} <= set(
        trials.columns
    )
    attached = {a.path for a in client.list_artifacts(outcome.parent_run_id, "report")}
    assert "report/report.md" in attached and "report/rate_distortion.png" in attached


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_resume_runs_only_the_missing_trials(
    tmp_path, shared_data, server, ray_session, monkeypatch, sampler
):
    """`--resume` runs the trials the budget lacks and none that finished; the resumed search
    (TPE, or the GP guiding from its second trial) proposes none of the points already run."""
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, shared_data, name=f"resumable-{sampler}",
                       sampler={"kind": sampler, "seed": 0, "startup_trials": 1})  # fmt: skip
    first = run_study(load_study(path, [*TINY, "study.num_trials=2"]), tracking_uri=server)
    client = MlflowClient(server)
    before = {r.info.run_id: r.info.end_time for r in children(client, first.parent_run_id)}
    assert len(before) == 2
    second = run_study(
        load_study(path, [*TINY, "study.num_trials=4"]), tracking_uri=server, resume=True
    )
    assert second.parent_run_id == first.parent_run_id
    after = children(client, first.parent_run_id)
    assert len(after) == 4
    for run in after:  # the finished trials were not run again
        if run.info.run_id in before:
            assert run.info.end_time == before[run.info.run_id]
    ot = optuna.load_study(
        study_name=second.run_name, storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}"
    )
    points = {tuple(sorted(t.params.items())) for t in ot.trials if t.state.name == "COMPLETE"}
    assert len(points) == 4  # no point proposed twice


def test_a_diverging_trial_fails_alone(tmp_path, shared_data, server, ray_session, monkeypatch):
    """GECO with a huge multiplier rate: λ runs away in one trial, the other finishes."""
    monkeypatch.chdir(tmp_path)
    path = write_study(
        tmp_path,
        shared_data,
        name="diverging",
        sampler={"kind": "grid"},
        search={"objective.multiplier.lr": {"choice": [1.0e-5, 1.0]}},
    )
    overrides = [
        *TINY,
        "study.num_trials=2",
        "objective.multiplier.max=1.0e+12",
        "objective.multiplier.warmup_steps=0",
    ]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    client = MlflowClient(server)
    runs = {
        r.data.params["objective.multiplier.lr"]: r for r in children(client, outcome.parent_run_id)
    }
    bad, good = runs["1.0"], runs["1e-05"]
    assert bad.info.status == "FAILED"
    assert "lambda/recon" in bad.data.tags["vaestudy.failure_reason"]
    assert int(bad.data.tags["vaestudy.failure_step"]) > 0
    assert good.info.status == "FINISHED" and "test/iwae_nll" in good.data.metrics
    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    states = sorted(t.state.name for t in ot.trials)
    assert states == ["COMPLETE", "FAIL"]


def test_a_packed_study_trains_trials_together_and_tells_each_its_own_result(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    """pack: 3 over a 2 x 2 grid: 4 trials in 2 Tune trials (3 + 1). Each trial has its own
    MLflow run with its own parameters, trajectory and test metrics, and its own Optuna result;
    the two members that start with λ above train.max_lambda fail alone."""
    monkeypatch.chdir(tmp_path)
    path = write_study(
        tmp_path,
        shared_data,
        name="packed",
        pack=3,
        sampler={"kind": "grid"},
        search={
            "objective.multiplier.init": {"choice": [1.0, 1.0e9]},
            "objective.kappa": {"choice": [90.0, 110.0]},
        },
    )
    overrides = [*TINY, "study.num_trials=4", "objective.multiplier.max=1.0e+12"]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    assert not outcome.interrupted and (outcome.finished, outcome.failed) == (2, 2)
    client = MlflowClient(server)
    runs = {r.data.tags["vaestudy.trial_id"]: r for r in children(client, outcome.parent_run_id)}
    assert len(runs) == 4
    assert len({key.split("/")[0] for key in runs}) == 2  # two Tune trials
    for run in runs.values():
        if float(run.data.params["objective.multiplier.init"]) > 1:
            assert run.info.status == "FAILED"
            assert "lambda/recon" in run.data.tags["vaestudy.failure_reason"]
            assert steps(client, run.info.run_id, "train/loss") == [2]
        else:
            assert run.info.status == "FINISHED"
            for key in ("train/kl", "train/recon", "train/lambda/recon", "train/loss"):
                assert steps(client, run.info.run_id, key) == [2, 4, 6, 8, 10], key
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"samples.png", "model.pt"} <= names
    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    assert len(ot.trials) == 4
    for trial in ot.trials:  # each Optuna trial holds its own member's parameters and result
        run = runs[trial.user_attrs["tune_trial_id"]]
        for key, value in trial.params.items():
            assert float(run.data.params[key]) == value, key
        if run.info.status == "FINISHED":
            assert trial.state.name == "COMPLETE"
            assert trial.value == pytest.approx(run.data.metrics["val/kl"])
        else:
            assert trial.state.name == "FAIL"
    kl = {r.data.metrics["test/kl"] for r in runs.values() if r.info.status == "FINISHED"}
    assert len(kl) == 2  # the two finished members trained apart


def test_unreachable_tracking_server_is_reported_before_training(
    tmp_path, shared_data, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, shared_data)
    code = main(
        [
            "run",
            str(path),
            "--tracking-uri",
            "http://127.0.0.1:9",
            *sets(TINY),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "http://127.0.0.1:9 is unreachable" in err and "Traceback" not in err
    assert not (tmp_path / "ray_results").exists()


def test_resume_after_the_driver_is_killed(tmp_path, shared_data, server, ray_session, monkeypatch):
    """SIGKILL the driver mid-study, then `--resume`: finished trials keep their data and are
    not re-run, the study reaches its trial count, and no run is left RUNNING."""
    import os
    import signal
    import subprocess
    import time

    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, shared_data, name="killed", max_concurrent=1)
    overrides = [*TINY, "study.num_trials=3", "study.resources.cpu=1"]
    args = [*CLI, "run", str(path), "--tracking-uri", server]
    driver = subprocess.Popen(
        [*args, *sets(overrides)],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = MlflowClient(server)
    first_finished = None
    deadline = time.monotonic() + 400
    while first_finished is None and time.monotonic() < deadline:
        time.sleep(1)
        exp = client.get_experiment_by_name("killed")
        if exp is not None:
            done = client.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'FINISHED'",
            )
            done = [r for r in done if PARENT in r.data.tags]
            first_finished = done[0] if done else None
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert first_finished is not None, "no trial finished before the deadline"

    outcome = run_study(load_study(path, overrides), tracking_uri=server, resume=True)
    assert not outcome.interrupted
    kids = children(client, outcome.parent_run_id)
    assert sum(r.info.status == "FINISHED" for r in kids) == 3
    assert not [r for r in kids if r.info.status == "RUNNING"]
    again = client.get_run(first_finished.info.run_id)
    assert again.info.end_time == first_finished.info.end_time
    assert steps(client, again.info.run_id, "train/kl") == [2, 4, 6, 8, 10]
    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    complete = [t for t in ot.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3  # settled from MLflow or told by the search: constraints alike
    assert all(set(t.constraints) >= {"own", "yardstick:recon<=110"} for t in complete)


def test_a_hopeless_trial_is_stopped_early_and_told_to_the_sampler_as_infeasible(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    """κ is 600 nats (met from the start) or 30 (recon is still ~250 nats after 30 steps). Once
    one trial has ended, a κ = 30 trial that misses by more than any ended trial recovered from
    the same point on is stopped by Tune (`study.stop_hopeless`): its run is closed KILLED with
    the reason and is not selectable, and Optuna holds it COMPLETE, infeasible, with the
    reason; the study ends cleanly."""
    monkeypatch.chdir(tmp_path)
    path = write_study(
        tmp_path,
        shared_data,
        name="hopeless",
        search={"objective.kappa": {"choice": [600.0, 30.0]}},
        sampler={"kind": "random", "seed": 3},
        max_concurrent=1,
        stop_hopeless={"min_ended": 1, "after": 0.3},
        constraints=[{"metric": "recon", "bound": 1000.0}],
    )
    overrides = [*TINY, "study.num_trials=4", "train.epochs=3", "train.eval_every=3"]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    assert not outcome.interrupted and not outcome.errored
    client = MlflowClient(server)
    runs = children(client, outcome.parent_run_id)
    stopped = [
        r for r in runs if r.data.tags.get("vaestudy.stopped_early", "").startswith("hopeless")
    ]
    assert stopped, [(r.info.status, r.data.params.get("objective.kappa")) for r in runs]
    for run in stopped:
        assert run.info.status == "KILLED" and run.data.tags["vaestudy.val_feasible"] == "false"
        assert float(run.data.params["objective.kappa"]) == 30.0
        assert steps(client, run.info.run_id, "train/loss")[-1] < 30  # before its end
    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    told = {t.user_attrs["tune_trial_id"]: t for t in ot.trials}
    for run in stopped:
        trial = told[run.data.tags["vaestudy.trial_id"]]
        assert trial.state.name == "COMPLETE" and trial.constraints["own"] > 0
        assert trial.user_attrs["vaestudy_stopped"] == run.data.tags["vaestudy.stopped_early"]
    assert len(ot.trials) == 4 and all(t.state.name == "COMPLETE" for t in ot.trials)


def test_a_constraint_first_study_end_to_end(
    tmp_path, shared_data, server, ray_session, monkeypatch
):
    """Three objective variants on a grid: two KL-annealing schedules and a GECO trial whose
    target is unreachable (κ = 40 nats, λ clipped at 3) and which `train.stop_saturated` stops.
    Every part gives the same answer: the MLflow tags, the Optuna constraint values and best
    trial, the report, and the parent run."""
    monkeypatch.chdir(tmp_path)
    unreachable = {
        "name": "geco",
        "kappa": 40.0,
        "multiplier": {"update": "geco", "lr": 1.0e-2, "max": 3.0, "warmup_steps": 0},
    }
    path = write_study(
        tmp_path,
        shared_data,
        name="answered",
        sampler={"kind": "grid"},
        search={
            "objective": {
                "choice": [
                    {"name": "kl_annealing", "schedule": {"kind": "linear", "steps": 20}},
                    {"name": "kl_annealing", "schedule": {"kind": "cyclical", "steps": 10}},
                    unreachable,
                ]
            }
        },
        constraints=[{"metric": "recon", "bound": 1000.0}],
    )
    overrides = [*TINY, "study.num_trials=3", "train.epochs=2", "train.stop_saturated=true"]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    client = MlflowClient(server)
    runs = {r.data.tags["vaestudy.variant"]: r for r in children(client, outcome.parent_run_id)}
    linear, cyclical = (
        "kl_annealing[kind=linear, steps=20]",
        "kl_annealing[kind=cyclical, steps=10]",
    )
    assert set(runs) == {linear, cyclical, "geco"}
    for run in runs.values():  # params: exactly the keys its own config has a value for
        path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
        config = flatten(yaml.safe_load(Path(path).read_text()))
        assert set(run.data.params) == {k for k, v in config.items() if v is not None}
        assert "None" not in run.data.params.values()
    assert "objective.kappa" in runs["geco"].data.params
    assert "objective.kappa" not in runs[linear].data.params  # no key its objective lacks
    assert "objective.schedule.kind" not in runs["geco"].data.params
    geco = runs["geco"]
    assert geco.info.status == "FINISHED" and geco.data.tags["vaestudy.saturated"] == "recon"
    assert geco.data.tags["vaestudy.stopped_early"].startswith("saturated (recon) at step")
    assert steps(client, geco.info.run_id, "train/loss")[-1] < 20  # stopped before its end
    assert "test/iwae_nll" in geco.data.metrics  # evaluated where it stopped
    assert geco.data.tags["vaestudy.state"] == "yardstick only"
    for label in (linear, cyclical):
        tags = runs[label].data.tags
        assert (tags["vaestudy.state"], tags["vaestudy.feasible"]) == ("feasible", "true")

    ot = optuna.load_study(
        study_name=client.get_run(outcome.parent_run_id).data.tags["vaestudy.optuna_study"],
        storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}",
    )
    by_run = {r.data.tags["vaestudy.trial_id"]: r for r in runs.values()}
    for trial in ot.trials:  # the constraint values Optuna holds are the run's val metrics
        run = by_run[trial.user_attrs["tune_trial_id"]]
        m = run.data.metrics
        expected = {"saturated": 1.0 if run is geco else 0.0, "own": 0.0}  # none of its own
        expected["yardstick:recon<=1000"] = pytest.approx(m["val/recon"] - 1000)
        if run is geco:
            expected["own"] = pytest.approx(m["val/constraint/recon"] - 40)
        assert trial.constraints == expected
    best_run = by_run[ot.best_trial.user_attrs["tune_trial_id"]]

    report = outcome.report
    assert report.best_feasible()["run_id"] == best_run.info.run_id != geco.info.run_id
    summary = report.summary.set_index("variant")
    assert summary.loc["geco", ["feasible", "saturated", "satisfy_yardstick"]].tolist() == [0, 1, 1]
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["vaestudy.best_feasible"] == best_run.info.run_id
    assert parent.data.metrics["feasible"] == 2 and parent.data.metrics["saturated/geco"] == 1
    assert "geco 0/1" in parent.data.tags["vaestudy.answer"]

    out = tmp_path / "report"
    args = ["report", "answered", "--tracking-uri", server, "--run", outcome.parent_run_id]
    assert main([*args, "--out", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv").set_index("variant")
    assert trials.loc["geco", "status"] == "stopped: saturated"
    assert bool(trials.loc["geco", "recon: saturated"]) and trials.loc[linear, "feasible"]
