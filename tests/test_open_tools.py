"""A study opens in MLflow's, Optuna's and pandas' own tools: two real runs of one study on the
default local store (real Ray, a real loopback MLflow server while they run, real Optuna),
then read back with MLflow's client on the SQLite file itself (no server), `optuna.load_study`
by the study's name, optuna-dashboard, the notebook API and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import CLI, FEASIBLE_GECO, TINY, children, sets, steps, write_study
from vaestudy import api
from vaestudy.cli import main
from vaestudy.config.run import load_run_config
from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking.run_reader import ClientReader, SqliteReader
from vaestudy.tracking.runs import find_trial_run
from vaestudy.tracking.stores import free_port
from vaestudy.tracking.ui_views import VIEW_TAG_PREFIX, decode
from vaestudy.training.trainer import Trainer


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, shared_data, ray_session):
    """Study `geco` run twice in a fresh project folder on the default store: 2 trials through
    `run_study`, then 1 through `vaestudy run` (its output kept)."""
    folder = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        path = write_study(folder, shared_data, **FEASIBLE_GECO)
        first = run_study(load_study(path, [*TINY, "study.num_trials=2"]))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["run", str(path), *sets(TINY), "--trials", "1"])
        yield SimpleNamespace(
            folder=folder, path=path, first=first, code=code, printed=out.getvalue()
        )


@pytest.fixture
def in_project(local_runs, monkeypatch):
    monkeypatch.chdir(local_runs.folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return local_runs


def store_client(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")


def test_the_local_store_opens_in_mlflows_client_without_a_server(local_runs, tmp_path):
    client = store_client(local_runs.folder)
    experiment = client.get_experiment_by_name("geco")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # runs table
    view = decode(experiment.tags[VIEW_TAG_PREFIX + local_runs.first.parent_run_id])
    assert view["groupBy"]["groupByKeys"][0]["groupByData"] == "vaestudy.variant"
    parent = client.get_run(local_runs.first.parent_run_id)
    assert parent.info.run_name == "geco"
    kids = children(client, parent.info.run_id)
    assert sorted(run.info.run_name for run in kids) == ["geco #0", "geco #1"]
    for run in kids:
        assert run.info.status == "FINISHED" and run.data.tags["vaestudy.feasible"] == "true"
        # its in-process compute: positive, and less than the run's own wall time (logging out)
        wall_s = (run.info.end_time - run.info.start_time) / 1000
        assert 0 < run.data.metrics["time/compute_s"] < wall_s
        for key in ("train/kl", "train/recon", "train/lambda/recon", "train/constraint/recon"):
            assert steps(client, run.info.run_id, key) == [2, 4, 6, 8, 10]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        expected = {"samples.png", "reconstructions.png", "trajectories.png", "model.pt"}
        assert expected | {"config.yaml"} <= names
        png = client.download_artifacts(run.info.run_id, "samples.png", str(tmp_path))
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    note = parent.data.tags["mlflow.note.content"]  # the run's description in the UI
    assert str(local_runs.path) in note and "`objective.kappa`: uniform [400.0, 500.0]" in note
    assert "Optuna study `geco`" in note and "yardstick `recon<=1000`" in note
    answer = parent.data.tags["vaestudy.answer"]
    assert answer.startswith("feasible trials per variant: geco 2/2")
    head = f"**Answer:** {answer}\n\n[Compare the runs that decided it](#/experiments/"
    assert note.startswith(head)  # before "Show more"
    assert "\n\n**Study `geco`**" in note.split("## Per variant")[0]
    assert "| geco " in note.split("## Per variant")[1]  # the per-variant table below


def test_the_optuna_study_has_the_study_name_and_each_run_its_own(in_project):
    storage = "sqlite:///mlflow/optuna.db"
    first = optuna.load_study(study_name="geco", storage=storage)
    second = optuna.load_study(study_name="geco-2", storage=storage)
    assert len(first.trials) == 2 and len(second.trials) == 1
    assert in_project.code == 0
    assert "run 'geco-2' of study 'geco'" in in_project.printed  # at the start
    end = " ".join(in_project.printed.strip().split("\n\n")[-1].split())  # the last paragraph
    assert "Optuna study 'geco-2'" in end  # and at the end, then where the comparison opens
    assert in_project.printed.rstrip().endswith(
        "\nthe runs that decided it, side by side:\nvaestudy ui geco --compare"
    )
    client = store_client(in_project.folder)
    experiment = client.get_experiment_by_name("geco").experiment_id
    for trial in first.trials:  # Optuna's trial number names the trial's MLflow run
        run = find_trial_run(
            client, experiment, in_project.first.parent_run_id, trial.user_attrs["tune_trial_id"]
        )
        assert run.info.run_name == f"geco #{trial.number}"
        assert trial.constraints["own"] == pytest.approx(
            run.data.metrics["val/constraint/recon"] - run.data.metrics["val/target/recon"]
        )
    assert api.optuna_study("geco", run="geco-2").study_name == "geco-2"


def test_optuna_dashboard_serves_the_study(in_project):
    port = free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(dashboard), "sqlite:///mlflow/optuna.db", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as resp:
                    listed = json.load(resp)["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert {"geco", "geco-2"} <= {s["study_name"] for s in listed}


def test_studies_lists_every_run(in_project, capsys):
    table = api.studies()
    rows = table[table["study"] == "geco"].set_index("run")
    assert list(rows.index) == ["geco-2", "geco"]  # newest first
    assert rows.loc["geco", ["trials", "finished", "feasible"]].tolist() == [2, 2, 2]
    assert rows.loc["geco-2", ["trials", "status", "optuna_study"]].tolist() == [
        1,
        "FINISHED",
        "geco-2",
    ]
    assert rows.loc["geco", "run_id"] == in_project.first.parent_run_id
    assert main(["studies", "--format", "csv"]) == 0
    listed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(listed["run"]) == {"geco", "geco-2"}
    # The file read with SQL gives what MLflow's client (as on a server) gives, run for run.
    store = in_project.folder / "mlflow" / "mlflow.db"
    by_sql = {r.run_id: r for r in SqliteReader(store).tagged_runs()}
    by_client = {r.run_id: r for r in ClientReader(store_client(in_project.folder)).tagged_runs()}
    assert by_sql == by_client and len(by_sql) >= 5  # 2 parent runs, 3 trials


def test_report_by_run_name_with_optunas_figures(in_project, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "geco", "--run", "geco", "--out", str(out)]) == 0
    assert "run `geco`" in capsys.readouterr().out
    assert (out / "optuna_history.png").is_file()  # feasible in colour, infeasible grey
    assert (out / "optuna_importances.png").is_file()
    assert "![optuna_history](optuna_history.png)" in (out / "report.md").read_text()
    attached = store_client(in_project.folder).list_artifacts(
        in_project.first.parent_run_id, "report"
    )
    assert "report/optuna_history.png" in {a.path for a in attached}
    report = api.report("geco", run=in_project.first.parent_run_id[:8])  # an id prefix works
    assert report.run_name == "geco" and len(report.trials) == 2
    assert main(["report", "geco", "--run", "geco-9"]) == 2
    assert "no run matching 'geco-9'; its runs: geco-2" in capsys.readouterr().err


def test_compare_two_runs(in_project, tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "geco@geco", "geco@geco-2", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    assert summary.loc["geco: geco", "trials"] == 2 and summary.loc["geco-2: geco", "trials"] == 1
    assert summary["feasible"].sum() == 3
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["run"]) == ["geco", "geco", "geco-2"]
    assert (out / "rate_distortion.png").is_file()
    assert "geco-2: geco" in capsys.readouterr().out


def test_best_writes_a_config_that_train_runs(in_project, tmp_path, capsys):
    path = tmp_path / "best.yaml"
    assert main(["best", "geco", "--run", "geco", "--out", str(path)]) == 0
    best = api.report("geco", run="geco").best_feasible()
    assert f"trial {best['trial']} of run 'geco'" in capsys.readouterr().err
    config = yaml.safe_load(path.read_text())
    run = store_client(in_project.folder).get_run(best["run_id"])
    assert config["objective"]["kappa"] == pytest.approx(float(run.data.params["objective.kappa"]))
    threads = torch.get_num_threads()
    try:
        assert config["train"]["threads"] == int(run.data.params["train.threads"]) >= 1
        assert main(["train", str(path)]) == 0  # the same trial, trained again without Ray
        printed = capsys.readouterr().out  # 4 significant digits
        val, test = (float(v) for v in re.findall(r"^\W*recon\W+(-?[\d.]+)", printed, re.M))
        assert val == pytest.approx(run.data.metrics["val/recon"], rel=1e-3)
        assert test == pytest.approx(run.data.metrics["test/recon"], rel=1e-3)
        again = Trainer(load_run_config(path)).fit()  # every digit, on the same machine
        for key in ("recon", "kl", "iwae_nll"):
            assert again.test[key] == pytest.approx(run.data.metrics[f"test/{key}"], rel=1e-6)
            assert again.val[key] == pytest.approx(run.data.metrics[f"val/{key}"], rel=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_ui_prints_the_studys_runs_table_in_the_model_training_view(in_project):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        [*CLI, "ui", "geco", "--port", str(port)],
        cwd=in_project.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = ui.stdout.readline()  # printed once the server answers
        experiment = store_client(in_project.folder).get_experiment_by_name("geco").experiment_id
        url = (
            f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        )
        assert f"MLflow UI on {url} " in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as resp:
            assert b"MLflow" in resp.read()
    finally:
        ui.terminate()
        assert ui.wait(timeout=60) == 0
