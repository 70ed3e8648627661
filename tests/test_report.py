"""The report on a real MLflow store filled with runs of known values."""

import math

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from vaestudy.cli import main
from vaestudy.errors import UserError
from vaestudy.report import build_report, write_report
from vaestudy.tracking import (
    PARENT,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_STUDY,
)

# GECO trial whose training constraint holds only in its last two points (steps 90, 100).
LATE = [120, 115, 110, 105, 100, 95, 92, 91, 89, 88]


def child(client, exp, parent, name, objective, status, test, history=None, tags=None):
    run = client.create_run(
        exp,
        run_name=name,
        tags={
            PARENT: parent,
            "vaestudy.objective": objective,
            "vaestudy.model": "mlp",
            **(tags or {}),
        },
    )
    rid = run.info.run_id
    params = [
        Param("objective.name", objective),
        Param("objective.kappa", str(test.pop("kappa", ""))),
    ]
    metrics = [Metric(k, v, 0, 100) for k, v in test.items()]
    for key, values in (history or {}).items():
        metrics += [Metric(key, float(v), 0, 10 * (i + 1)) for i, v in enumerate(values)]
    client.log_batch(rid, metrics=metrics, params=params)
    client.set_terminated(rid, status=status)
    return rid


@pytest.fixture(scope="module")
def known_study(server):
    client = MlflowClient(server)
    exp = client.create_experiment("known")
    parent = client.create_run(exp, run_name="known", tags={TAG_KIND: "study", TAG_STUDY: "known"})
    pid = parent.info.run_id
    params = {
        "study.metric": "test/iwae_nll",
        "study.mode": "min",
        "study.constraints.0.metric": "test/recon",
        "study.constraints.0.bound": "100",
        "study.constraints.0.direction": "<=",
        "study.search.objective.kappa.uniform.0": "80",
        "study.search.objective.kappa.uniform.1": "90",
    }
    client.log_batch(pid, params=[Param(k, v) for k, v in params.items()])
    geco_test = {"test/kl": 20.0, "test/elbo": -109.0, "test/active_units": 12.0}
    child(
        client, exp, pid, "late", "geco", "FINISHED",
        {**geco_test, "kappa": 90, "test/recon": 89.0, "test/constraint/recon": 89.0,
         "test/target/recon": 90.0, "test/iwae_nll": 105.0},
        history={
            "train/constraint/recon": LATE,
            "train/target/recon": [90] * 10,
            "train/lambda/recon": [1, 1.5, 2, 2.5, 3, 3.2, 3.1, 3.0, 2.7, 2.5],
            "train/kl": [5] * 10,
        },
    )  # fmt: skip
    child(
        client, exp, pid, "never", "geco", "FINISHED",
        {**geco_test, "kappa": 80, "test/recon": 95.0, "test/constraint/recon": 95.0,
         "test/target/recon": 80.0, "test/iwae_nll": 100.0},
        history={"train/constraint/recon": [99] * 10, "train/target/recon": [80] * 10},
    )  # fmt: skip
    child(
        client,
        exp,
        pid,
        "plain",
        "elbo",
        "FINISHED",
        {"test/recon": 105.0, "test/kl": 25.0, "test/elbo": -130.0, "test/iwae_nll": 98.0},
    )
    child(
        client, exp, pid, "nan", "lagvae", "FAILED", {"train/loss": 3.0},
        tags={TAG_FAILURE: "non-finite loss", TAG_FAILURE_STEP: "30"},
    )  # fmt: skip
    child(  # a killed study's unfinished attempt, run again as a new trial by --resume
        client, exp, pid, "cut", "geco", "KILLED", {"train/loss": 3.0},
        tags={TAG_INTERRUPTED: "run again as a new trial"},
    )  # fmt: skip
    return client


def test_trial_table_holds_the_expected_rows(known_study):
    report = build_report(known_study, "known")
    t = report.trials.set_index("trial")
    assert list(t.index) == ["plain", "cut", "late", "never", "nan"]
    assert t.loc["cut", "status"] == "interrupted"
    late, never = t.loc["late"], t.loc["never"]
    assert late["recon:target"] == 90 and late["recon:test"] == 89 and late["recon:sat"]
    assert late["recon:held_last20"] == pytest.approx(2 / 3)  # steps 80, 90, 100: held at 90, 100
    assert late["recon:held_from"] == 90 and late["recon:lambda"] == 2.5
    assert late["test_neg_elbo"] == 109 and late["rate_kl"] == 20 and late["active_units"] == 12
    assert late["objective.kappa"] == 90
    assert not never["recon:sat"] and never["recon:held_last20"] == 0
    assert math.isnan(never["recon:held_from"])
    assert t.loc["plain", "own_constraints_ok"] and not t.loc["plain", "yardstick_ok"]
    nan = t.loc["nan"]
    assert nan["status"] == "failed" and nan["reason"] == "non-finite loss"
    assert nan["failed_at_step"] == 30 and not nan["yardstick_ok"]


def test_summary_answers_which_objectives_satisfy_constraints(known_study, tmp_path):
    report = build_report(known_study, "known")
    s = report.summary.set_index("objective")
    assert list(s.index) == ["elbo", "geco", "lagvae"]
    assert s.loc["geco", ["trials", "finished", "satisfy_own", "satisfy_yardstick"]].tolist() == [
        2,
        2,
        1,
        2,
    ]  # fmt: skip  (the interrupted attempt is not a trial)
    assert s.loc["geco", "best_trial"] == "never"  # feasible under the yardstick, lower IWAE
    assert s.loc["geco", "best_test/iwae_nll"] == 100
    assert s.loc["geco", "median_distortion"] == 92
    assert s.loc["elbo", ["satisfy_own", "satisfy_yardstick", "best_trial"]].tolist() == [1, 0, ""]
    assert s.loc["lagvae", ["trials", "finished", "satisfy_own"]].tolist() == [1, 0, 0]
    files = {p.name for p in write_report(report, tmp_path)}
    assert {"report.md", "report.html", "trials.csv", "summary.csv", "rate_distortion.png"} <= files
    assert "trajectories_geco.png" in files
    assert "| geco " in (tmp_path / "report.md").read_text()


def test_unknown_and_empty_studies_get_a_clear_message(known_study, server, capsys):
    with pytest.raises(UserError, match="no study named 'nope'.*known"):
        build_report(known_study, "nope")
    exp = known_study.create_experiment("empty")
    known_study.create_run(exp, tags={TAG_KIND: "study", TAG_STUDY: "empty"})
    assert main(["report", "empty", "--tracking-uri", server]) == 2
    err = capsys.readouterr().err
    assert "has no trials yet" in err and "Traceback" not in err
