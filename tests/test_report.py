"""The report on a real MLflow store filled with runs of known values: one trial in each state
(feasible, yardstick only, own only, neither), saturated multipliers, two variants of one
objective, a diverged and an interrupted trial."""

import math

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from vaestudy.cli import main
from vaestudy.errors import UserError
from vaestudy.report import build_report, log_answer, write_report
from vaestudy.tracking import (
    PARENT,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_SATURATED,
    TAG_STOPPED,
    TAG_STUDY,
    TAG_VARIANT,
)

# GECO trial whose training constraint holds only in its last two points (steps 90, 100).
LATE = [120, 115, 110, 105, 100, 95, 92, 91, 89, 88]
LINEAR, CYCLICAL = "kl_annealing[kind=linear]", "kl_annealing[kind=cyclical]"


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


def geco(kappa: float, recon: float, iwae: float) -> dict[str, float]:
    return {
        "kappa": kappa,
        "test/kl": 20.0,
        "test/elbo": -(recon + 20.0),
        "test/active_units": 12.0,
        "test/recon": recon,
        "test/constraint/recon": recon,
        "test/target/recon": kappa,
        "test/iwae_nll": iwae,
    }


def elbo(recon: float, iwae: float) -> dict[str, float]:
    return {"test/recon": recon, "test/kl": 25.0, "test/elbo": -(recon + 25), "test/iwae_nll": iwae}


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
    lam = [1, 1.5, 2, 2.5, 3, 3.2, 3.1, 3.0, 2.7, 2.5]
    child(  # own 89 <= 90, yardstick 89 <= 100: feasible
        client, exp, pid, "both", "geco", "FINISHED", geco(90, 89.0, 105.0),
        history={"train/constraint/recon": LATE, "train/target/recon": [90] * 10,
                 "train/lambda/recon": lam, "train/kl": [5] * 10},
    )  # fmt: skip
    child(  # own 95 > 80, yardstick 95 <= 100; lower IWAE than "both", yet not feasible
        client, exp, pid, "yard_only", "geco", "FINISHED", geco(80, 95.0, 100.0),
        history={"train/constraint/recon": [99] * 10, "train/target/recon": [80] * 10},
    )  # fmt: skip
    child(  # own 110 <= 120, yardstick 110 > 100
        client, exp, pid, "own_only", "geco", "FINISHED", geco(120, 110.0, 99.0)
    )
    child(  # 88 <= 90 on test, but λ sat at its clip: saturated, so not satisfied
        client, exp, pid, "pinned", "geco", "FINISHED", geco(90, 88.0, 98.0),
        tags={TAG_SATURATED: "recon"},
    )  # fmt: skip
    child(  # stopped early by train.stop_saturated, evaluated where it stopped
        client, exp, pid, "stopped", "geco", "FINISHED", geco(70, 120.0, 130.0),
        tags={TAG_SATURATED: "recon", TAG_STOPPED: "saturated (recon) at step 60"},
    )  # fmt: skip
    child(
        client, exp, pid, "plain", "elbo", "FINISHED", elbo(105.0, 98.0),
        history={"train/kl": [30, 25], "train/recon": [130, 106]},
    )  # fmt: skip
    child(
        client, exp, pid, "lin", "kl_annealing", "FINISHED", elbo(95.0, 97.0),
        history={"train/kl": [30, 20], "train/recon": [120, 96]}, tags={TAG_VARIANT: LINEAR},
    )  # fmt: skip
    child(
        client, exp, pid, "cyc", "kl_annealing", "FINISHED", elbo(102.0, 96.0),
        tags={TAG_VARIANT: CYCLICAL},
    )  # fmt: skip
    child(
        client, exp, pid, "nan", "lagvae", "FAILED", {"train/loss": 3.0},
        tags={TAG_FAILURE: "non-finite loss", TAG_FAILURE_STEP: "30"},
    )  # fmt: skip
    child(  # a killed study's unfinished attempt, run again as a new trial by --resume
        client, exp, pid, "cut", "geco", "KILLED", {"train/loss": 3.0},
        tags={TAG_INTERRUPTED: "run again as a new trial"},
    )  # fmt: skip
    return client


COLUMNS = ["variant", "status", "satisfies_own", "satisfies_yardstick", "feasible", "state"]


def row(values: list) -> dict:
    return dict(zip(COLUMNS, values, strict=True))


def test_every_trial_is_judged_by_the_one_rule(known_study):
    t = build_report(known_study, "known").trials.set_index("trial")
    assert t[COLUMNS].to_dict("index") == {
        "plain": row(["elbo", "finished", True, False, False, "own only"]),
        "both": row(["geco", "finished", True, True, True, "feasible"]),
        "cut": row(["geco", "interrupted", False, False, False, "interrupted"]),
        "own_only": row(["geco", "finished", True, False, False, "own only"]),
        "pinned": row(["geco", "finished", False, True, False, "yardstick only"]),
        "stopped": row(["geco", "stopped: saturated", False, False, False, "neither"]),
        "yard_only": row(["geco", "finished", False, True, False, "yardstick only"]),
        "cyc": row([CYCLICAL, "finished", True, False, False, "own only"]),
        "lin": row([LINEAR, "finished", True, True, True, "feasible"]),
        "nan": row(["lagvae", "failed", False, False, False, "failed"]),
    }
    assert list(t.index) == [
        "plain",
        "both",
        "cut",
        "own_only",
        "pinned",
        "stopped",
        "yard_only",
        "cyc",
        "lin",
        "nan",
    ]  # fmt: skip  (by variant, then trial)


def test_constraint_columns(known_study):
    t = build_report(known_study, "known").trials.set_index("trial")
    both, yard, pinned = t.loc["both"], t.loc["yard_only"], t.loc["pinned"]
    assert both["recon:target"] == 90 and both["recon:test"] == 89 and both["recon:sat"]
    assert both["recon:held_last20"] == pytest.approx(2 / 3)  # steps 80, 90, 100: held at 90, 100
    assert both["recon:held_from"] == 90 and both["recon:lambda"] == 2.5
    assert both["test_neg_elbo"] == 109 and both["rate_kl"] == 20 and both["active_units"] == 12
    assert both["objective.kappa"] == 90 and not both["recon:saturated"]
    assert not yard["recon:sat"] and yard["recon:held_last20"] == 0
    assert math.isnan(yard["recon:held_from"])
    assert pinned["recon:test"] < pinned["recon:target"] and not pinned["recon:sat"]
    assert pinned["recon:saturated"] and pinned["saturated"] == "recon"
    nan = t.loc["nan"]
    assert nan["reason"] == "non-finite loss" and nan["failed_at_step"] == 30


SUMMARY = [
    "trials", "finished", "satisfy_own", "satisfy_yardstick", "feasible", "saturated",
    "best_feasible",
]  # fmt: skip


def test_summary_has_a_row_per_variant(known_study, tmp_path):
    report = build_report(known_study, "known")
    s = report.summary.set_index("variant")
    assert s[SUMMARY].to_dict("index") == {
        "elbo": dict(zip(SUMMARY, [1, 1, 1, 0, 0, 0, ""], strict=True)),
        "geco": dict(zip(SUMMARY, [5, 5, 2, 3, 1, 2, "both"], strict=True)),  # "cut" is not a trial
        CYCLICAL: dict(zip(SUMMARY, [1, 1, 1, 0, 0, 0, ""], strict=True)),
        LINEAR: dict(zip(SUMMARY, [1, 1, 1, 1, 1, 0, "lin"], strict=True)),
        "lagvae": dict(zip(SUMMARY, [1, 0, 0, 0, 0, 0, ""], strict=True)),
    }
    assert s.loc["geco", "best_test/iwae_nll"] == 105  # lower-IWAE trials are infeasible
    assert s.loc[LINEAR, "objective"] == "kl_annealing"
    assert report.best_feasible()["trial"] == "lin"  # IWAE 97 < 105

    files = {p.name for p in write_report(known_study, report, tmp_path)}
    assert {"report.md", "report.html", "trials.csv", "summary.csv", "rate_distortion.png"} <= files
    assert {"trajectories_geco.png", "trajectories_kl_annealing_kind_linear.png"} <= files
    assert "trajectories_elbo.png" in files  # no feasible trial: its best finished one
    md = (tmp_path / "report.md").read_text()
    assert f"| {LINEAR} " in md and "Feasible = satisfies its own constraints" in md


def test_the_parent_run_carries_the_answer(known_study):
    report = build_report(known_study, "known")
    log_answer(known_study, report)
    parent = known_study.get_run(report.parent_run_id)
    m, tags = parent.data.metrics, parent.data.tags
    assert m["feasible"] == 2
    assert (m["feasible/geco"], m["satisfy_own/geco"], m["saturated/geco"]) == (1, 2, 2)
    assert m["feasible/kl_annealing_kind_linear"] == 1 and m["trials/elbo"] == 1
    lin = report.trials.set_index("trial").loc["lin", "run_id"]
    assert tags["vaestudy.best_feasible"] == lin and tags["vaestudy.best_feasible_trial"] == "lin"
    assert m["best_feasible/test/iwae_nll"] == 97 and m["best_feasible/test/recon"] == 95
    assert "geco 1/5" in tags["vaestudy.answer"]
    assert "best feasible: lin" in tags["vaestudy.answer"]


def test_unknown_and_empty_studies_get_a_clear_message(known_study, server, capsys):
    with pytest.raises(UserError, match="no study named 'nope'.*known"):
        build_report(known_study, "nope")
    exp = known_study.create_experiment("empty")
    known_study.create_run(exp, tags={TAG_KIND: "study", TAG_STUDY: "empty"})
    assert main(["report", "empty", "--tracking-uri", server]) == 2
    err = capsys.readouterr().err
    assert "has no trials yet" in err and "Traceback" not in err
