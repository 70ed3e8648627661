"""The report on a real MLflow store filled with runs of known values: one trial in each state
(feasible, yardstick only, own only, neither), saturated multipliers, two variants of one
objective, a diverged and an interrupted trial."""

import dataclasses
import math
import sqlite3

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from vaestudy.cli import main
from vaestudy.errors import UserError
from vaestudy.report.comparison import share_comparison
from vaestudy.report.files import rate_distortion_figure, trajectory_runs, write_report
from vaestudy.report.tables import (
    WITHIN_NOISE,
    Report,
    answer,
    answer_table,
    build_report,
    deciding_runs,
    log_answer,
    margin_table,
    read_history,
    seed_noise,
    view_key,
    within_noise,
)
from vaestudy.tracking.run_reader import (
    TESTED_SCHEMAS,
    ClientReader,
    RunRecord,
    SqliteReader,
    as_reader,
    local_reader,
    reader,
    schema_revision,
)
from vaestudy.tracking.tags import (
    CONFIRM,
    PARENT,
    TAG_CONFIRMS,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_PHASE,
    TAG_SATURATED,
    TAG_STOPPED,
    TAG_STUDY,
    TAG_VARIANT,
)
from vaestudy.tracking.ui_views import VIEW_TAG_PREFIX, decode, view_url
from vaestudy.training.plots import trajectory_figure

# GECO trial whose training constraint holds only in its last two points (steps 90, 100).
LATE = [120, 115, 110, 105, 100, 95, 92, 91, 89, 88]
LINEAR, CYCLICAL = "kl_annealing[kind=linear]", "kl_annealing[kind=cyclical]"


def child(client, exp, parent, name, objective, status, test, history=None, tags=None, val=None,
          seed=0):  # fmt: skip
    """A trial run; its validation metrics are its test metrics unless `val` says otherwise."""
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
        Param("train.seed", str(seed)),
    ]
    held = {**test, **{"val/" + k.removeprefix("test/"): v for k, v in test.items()
                       if k.startswith("test/")}, **(val or {})}  # fmt: skip
    metrics = [Metric(k, v, 0, 100) for k, v in held.items()]
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


def study_parent(client, name: str, params: dict[str, str]) -> tuple[str, str]:
    """A study's experiment and parent run with its `study.*` params: (experiment, run id)."""
    exp = client.create_experiment(name)
    parent = client.create_run(exp, run_name=name, tags={TAG_KIND: "study", TAG_STUDY: name})
    client.log_batch(parent.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return exp, parent.info.run_id


@pytest.fixture(scope="module")
def known_study(server):
    client = MlflowClient(server)
    params = {
        "study.metric": "val/iwae_nll",
        "study.mode": "min",
        "study.constraints.0.metric": "recon",
        "study.constraints.0.bound": "100",
        "study.constraints.0.direction": "<=",
        "study.search.objective.kappa.uniform.0": "80",
        "study.search.objective.kappa.uniform.1": "90",
    }
    exp, pid = study_parent(client, "known", params)
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
    child(  # feasible on test with the lowest IWAE, but not on validation: never selected
        client, exp, pid, "lucky", "geco", "FINISHED", geco(90, 89.0, 90.0),
        val={"val/recon": 101.0, "val/constraint/recon": 101.0},
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
        client, exp, pid, "nan", "lagvae", "FAILED", {"train/loss": math.nan},
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
        "lucky": row(["geco", "finished", True, True, True, "feasible"]),
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
        "lucky",
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
    assert both["recon: target"] == 90 and both["recon: test"] == 89 and both["recon: satisfied"]
    assert both["recon: held_last20"] == pytest.approx(2 / 3)  # steps 80, 90, 100: held at 90, 100
    assert both["recon: held_from"] == 90 and both["recon: lambda"] == 2.5
    assert both["test/neg_elbo"] == 109 and both["test/kl"] == 20
    assert both["test/active_units"] == 12
    assert both["objective.kappa"] == 90 and not both["recon: saturated"]
    assert not yard["recon: satisfied"] and yard["recon: held_last20"] == 0
    assert math.isnan(yard["recon: held_from"])
    assert pinned["recon: test"] < pinned["recon: target"] and not pinned["recon: satisfied"]
    assert pinned["recon: saturated"] and pinned["saturated"] == "recon"
    lucky = t.loc["lucky"]
    assert lucky["feasible"] and not lucky["val_feasible"] and lucky["recon: val"] == 101
    columns = list(t.columns)  # each constraint's columns together, none twice
    first = columns.index("recon: target")
    assert columns[first : first + 3] == ["recon: target", "recon: val", "recon: test"]
    assert len(columns) == len(set(columns)) and "iwae_nll" not in columns
    nan = t.loc["nan"]
    assert nan["reason"] == "non-finite loss" and nan["failed_at_step"] == 30


SUMMARY = [
    "trials", "finished", "satisfy_own", "satisfy_yardstick", "feasible", "saturated",
    "val_feasible", "selected",
]  # fmt: skip


def test_summary_has_a_row_per_variant(known_study, tmp_path):
    report = build_report(known_study, "known")
    s = report.summary.set_index("variant")
    assert s[SUMMARY].to_dict("index") == {
        "elbo": dict(zip(SUMMARY, [1, 1, 1, 0, 0, 0, 0, ""], strict=True)),
        # "cut" is not a trial; "lucky" is feasible on test, not on validation: not selected
        "geco": dict(zip(SUMMARY, [6, 6, 3, 4, 2, 2, 1, "both"], strict=True)),
        CYCLICAL: dict(zip(SUMMARY, [1, 1, 1, 0, 0, 0, 0, ""], strict=True)),
        LINEAR: dict(zip(SUMMARY, [1, 1, 1, 1, 1, 0, 1, "lin"], strict=True)),
        "lagvae": dict(zip(SUMMARY, [1, 0, 0, 0, 0, 0, 0, ""], strict=True)),
    }
    assert s.loc["geco", "selected val/iwae_nll"] == 105  # lower-IWAE trials are infeasible
    assert s.loc["geco", "selected test/iwae_nll"] == 105
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
    assert m["feasible"] == 3  # on test: "lucky" too
    assert (m["feasible/geco"], m["satisfy_own/geco"], m["saturated/geco"]) == (2, 3, 2)
    assert m["feasible/kl_annealing_kind_linear"] == 1 and m["trials/elbo"] == 1
    lin = report.trials.set_index("trial").loc["lin", "run_id"]
    assert tags["vaestudy.best_feasible"] == lin and tags["vaestudy.best_feasible_trial"] == "lin"
    assert m["best_feasible/val/iwae_nll"] == 97 and m["best_feasible/test/recon"] == 95
    assert "geco 2/6" in tags["vaestudy.answer"]
    assert "selected: lin (val/iwae_nll 97, test/iwae_nll 97)" in tags["vaestudy.answer"]
    chosen = deciding_runs(report)  # no confirmation: each variant's selected trial
    assert lin in chosen and len(chosen) == 4  # every variant but lagvae: its one trial failed
    link = view_url("", report.experiment_id, view_key(report))  # opens the saved view
    assert tags["mlflow.note.content"].count(link) == 1
    assert share_comparison(as_reader(known_study), known_study, report) == view_key(report)
    saved = known_study.get_experiment(report.experiment_id).tags
    state = decode(saved[VIEW_TAG_PREFIX + view_key(report)])
    assert state["searchFilter"] == f"attributes.run_id IN ({', '.join(repr(r) for r in chosen)})"
    charts = state["compareRunCharts"]
    axes = [c["selectedMetrics"] for c in charts if c["type"] == "PARALLEL"]
    assert axes == [  # every variant: the yardstick, the metric; geco's: its own target and value
        ["test/recon", "test/iwae_nll"],
        ["test/target/recon", "test/constraint/recon", "test/recon", "test/iwae_nll"],
    ]
    lines = [c["selectedMetricKeys"] for c in charts if c["type"] == "LINE"]
    assert lines[0] == ["train/constraint/recon", "train/target/recon"]
    assert ["train/lambda/recon"] in lines and ["val/iwae_nll"] in lines
    log_answer(known_study, report)  # a resumed study ends again: the link is not repeated
    again = known_study.get_run(report.parent_run_id).data.tags["mlflow.note.content"]
    assert again == tags["mlflow.note.content"]
    table = answer_table(report).set_index("variant")
    assert table.loc[LINEAR, "selected"] == "lin" and table.loc["geco", "test/iwae_nll"] == 105
    printed = table.reset_index().to_markdown(index=False, floatfmt=".4g")
    assert max(len(line) for line in printed.splitlines()) <= 120


def test_unknown_and_empty_studies_get_a_clear_message(known_study, server, capsys):
    with pytest.raises(UserError, match="no study named 'nope'.*known"):
        build_report(known_study, "nope")
    exp = known_study.create_experiment("empty")
    known_study.create_run(exp, tags={TAG_KIND: "study", TAG_STUDY: "empty"})
    assert main(["report", "empty", "--tracking-uri", server]) == 2
    err = capsys.readouterr().err
    assert "has no trials yet" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def confirmed_study(server):
    """Three variants, one search trial each, each confirmed with three fresh seeds."""
    client = MlflowClient(server)
    params = {"study.metric": "val/iwae_nll", "study.mode": "min",
              "study.constraints.0.metric": "recon", "study.constraints.0.bound": "100",
              "study.constraints.0.direction": "<=", "study.confirm.seeds": "3"}  # fmt: skip
    exp, pid = study_parent(client, "confirmed", params)
    # variant: (search val IWAE, search test IWAE, confirmation test IWAEs, recons)
    plan = {
        "a": (99.0, 101.0, [100.0, 101.0, 102.0], [95.0, 95.0, 95.0]),
        "b": (98.0, 99.0, [110.0, 111.0, 112.0], [95.0, 105.0, 95.0]),
        "c": (100.0, 100.5, [101.0, 103.0, 99.0], [95.0, 95.0, 95.0]),
    }
    for variant, (val, test, confirmed, recons) in plan.items():
        tags = {TAG_VARIANT: variant}
        picked = child(client, exp, pid, f"{variant} #0", "elbo", "FINISHED", elbo(95.0, test),
                       tags=tags, val={"val/iwae_nll": val})  # fmt: skip
        confirm = {**tags, TAG_PHASE: CONFIRM, TAG_CONFIRMS: picked}
        for seed, (iwae, recon) in enumerate(zip(confirmed, recons, strict=True)):
            shift = 2.0 * seed  # the seeds' trajectories differ: a band
            history = {  # a first-step spike of 500 nats, then settling near the target 90
                "train/kl": [500, 30, 25, 22, 21],
                "train/recon": [500, 120, 100, 95, 92],
                "train/constraint/recon": [500 + shift, 120, 100, 95 + shift, 92 + shift],
                "train/target/recon": [90] * 5,
                "train/lambda/recon": [1, 2, 3, 3, 2.5],
                "val/constraint/recon": [510, 122, 101, 96 + shift],
                "val/target/recon": [90] * 4,
            }
            child(client, exp, pid, f"{variant} #0 seed {seed}", "elbo", "FINISHED",
                  elbo(recon, iwae), tags=confirm, history=history, seed=1000 + seed)  # fmt: skip
    return client


def test_confirmation_gives_rates_and_means_with_intervals_and_ties(confirmed_study, tmp_path):
    report = build_report(confirmed_study, "confirmed")
    c = report.confirmation.set_index("variant")
    assert list(c.index) == ["a", "c", "b"]  # by confirmed mean test IWAE: 101, 101, 111
    assert c.loc["a", "rank"] == "1" and c.loc["c", "rank"] == "=1" and c.loc["b", "rank"] == "3"
    assert c.loc["a", "test/iwae_nll mean"] == 101.0
    assert c.loc["a", "test/iwae_nll ±95%"] == pytest.approx(4.303 / 3**0.5, rel=1e-3)
    assert c.loc["a", "feasible"] == "3/3" and c.loc["b", "feasible"] == "2/3"
    assert c.loc["a", "feasible_low"] == pytest.approx(0.438, abs=1e-3)
    assert c.loc["b", "feasible 95% CI"] == "[0.21, 0.94]"
    assert c.loc["b", "gap"] == 1.0 and c.loc["a", "selected"] == "a #0"
    assert report.summary.set_index("variant").loc["a", "trials"] == 1  # search trials only
    text = answer(report)
    assert text.startswith("confirmed on test, ranked by test/iwae_nll mean (=k: paired tie with "
                           "rank k at 95%)")  # fmt: skip
    assert "=1 c 101±5 meets" in text
    assert "3 b 111±2.5 undecided: recon<=100, feasible 2/3 [0.21, 0.94]" in text
    for table in (answer_table(report), margin_table(report)):
        text = table.to_markdown(index=False, floatfmt=".4g")
        assert max(len(line) for line in text.splitlines()) <= 120
    # margins: recon − 100 per seed; b's (−5, +5, −5) holds 0 at 3 seeds, the study's maximum
    m = report.margins.set_index(["variant", "constraint"])
    assert m.loc[("a", "recon<=100"), "verdict"] == "satisfied"  # −5 on every seed
    b = m.loc[("b", "recon<=100")]
    assert b["verdict"] == "undecided" and b["stopped"] == "max_seeds (3) reached"
    assert b["margin mean"] == pytest.approx(-5 / 3)
    assert c.loc["b", "constraints"] == (
        "undecided: recon<=100 -1.67 (3 seeds, max_seeds (3) reached)"
    )
    assert c.loc["b", "vs above"] == "+10 [3.43, 16.6]"  # b − c per seed: 9, 8, 13
    p = report.pairs.set_index(["A", "B"])
    assert len(p) == 3 and p.loc[("a", "c"), "better"] == "tie"
    assert p.loc[("a", "b"), "better"] == "A" and p.loc[("a", "b"), "P(A better)"] == 1.0

    files = {p.name for p in write_report(confirmed_study, report, tmp_path)}
    md = (tmp_path / "report.md").read_text()
    assert "## Confirmed on test" in md and "Wilson" in md and "### Constraint margins" in md
    assert {"trajectories_a.png", "trajectories_b.png", "rate_distortion.png", "margins.png",
            "pairs.csv", "margins.csv", "confirmation.csv"} <= files  # fmt: skip
    pairs_csv = pd.read_csv(tmp_path / "pairs.csv")
    assert list(pairs_csv["better"]) == ["tie", "A", "A"]


def test_figures_carry_the_confirmation(confirmed_study):
    """What is on the axes, drawn from the real store: a band over the confirmation seeds,
    the validation points, one axis per constraint with its labelled target, λ only where a
    constraint has it, a y-range around the target (the first-step spike clipped)."""
    report = build_report(confirmed_study, "confirmed")
    (variant, run_ids, title), *_ = trajectory_runs(report)
    assert variant == "a" and len(run_ids) == 3 and title.startswith("a #0: 3 confirmation seeds")
    histories = []
    for run_id in run_ids:
        keys = [k for k in confirmed_study.get_run(run_id).data.metrics
                if k.startswith(("train/", "val/"))]  # fmt: skip
        histories.append(read_history(confirmed_study, run_id, keys))
    fig = trajectory_figure(histories, title)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {
        "rate & distortion (nats per example)",
        "constraint recon",
        "multipliers λ (log)",
    }  # fmt: skip  (no weights: elbo's runs here log no coefficient)
    recon = axes["constraint recon"]
    labels = [line.get_label() for line in recon.get_lines()]
    assert "target 90" in labels and "validation" in labels
    assert len(recon.collections) == 1  # the min–max band over the three seeds
    low, high = recon.get_ylim()
    assert low < 90 < high < 200  # the 500-nat first step is clipped, the target shows
    assert axes["multipliers λ (log)"].get_yscale() == "log"
    plt.close(fig)

    plane = rate_distortion_figure(report).axes[0]
    assert len(plane.containers) == 3  # a confirmation mean with CI whiskers per variant
    assert "nats per example" in plane.get_xlabel()
    assert [line.get_ydata()[0] for line in plane.get_lines() if line.get_linestyle() == "--"] == [
        100.0
    ]  # the yardstick recon <= 100


@pytest.mark.parametrize("study", ["known", "confirmed"])
def test_sql_and_mlflows_client_read_the_same_report(known_study, confirmed_study, server_db,
                                                     study):  # fmt: skip
    """A local store read with SQL (what `report`, `best` and `compare` do without a server)
    gives what MLflow's client gives: every run, tag, param, latest metric and trajectory point,
    so the same report."""
    sql, client = SqliteReader(server_db), ClientReader(known_study)
    by_sql, by_client = sql.study_runs(study), client.study_runs(study)
    assert by_sql == by_client and len(by_sql) == 1
    kids = {r.run_id: comparable(r) for r in sql.trial_runs(by_sql[0])}
    assert kids == {r.run_id: comparable(r) for r in client.trial_runs(by_client[0])}
    assert len(kids) >= 9
    for run_id in kids:
        keys = sql.metric_keys(run_id)
        assert sorted(keys) == sorted(client.metric_keys(run_id))
        by_client = [nan_free(row) for row in client.history(run_id, keys)]
        assert [nan_free(row) for row in sql.history(run_id, keys)] == by_client
    with_nan = [r for r in kids.values() if None in r.metrics.values()]
    assert with_nan or study == "confirmed"  # "nan" logged a NaN loss: read back as NaN
    a, b = build_report(sql, study), build_report(client, study)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    assert (a.yardstick, a.metric, a.run_name) == (b.yardstick, b.metric, b.run_name)
    with pytest.raises(UserError, match="no study named 'nope'.*known"):
        build_report(sql, "nope")


def nan_free(values: dict[str, float]) -> dict[str, float | None]:
    """`values` with NaN as None (NaN != NaN)."""
    return {k: None if math.isnan(v) else v for k, v in values.items()}


def comparable(run: RunRecord) -> RunRecord:
    return dataclasses.replace(run, metrics=nan_free(run.metrics))


def test_the_seed_noise_is_pooled_over_confirmation_runs_and_marks_the_search_trials():
    """Variant a's confirmation seeds give 100, 102, 104 (sd 2), b's 50, 51, 52 (sd 1): pooled
    σ = √((2·4 + 2·1) / 4). a's search trials at 100 (selected), 101.5 and 110: the first two
    are within 1.96·√2·σ of the selected one, a difference one seed could make; 110 is not."""
    rows = [("search", "a", v) for v in (100.0, 101.5, 110.0)]
    rows += [("confirm", "a", v) for v in (100.0, 102.0, 104.0)]
    rows += [("confirm", "b", v) for v in (50.0, 51.0, 52.0)]
    columns = ["phase", "variant", "val/iwae_nll"]
    trials = pd.DataFrame(rows, columns=columns).assign(
        status="finished", val_feasible=True, selects_on_test=False
    )
    sigma = seed_noise(trials, "val/iwae_nll")
    assert sigma == pytest.approx(math.sqrt(2.5))
    report = Report("s", "p", trials, pd.DataFrame(), [], "val/iwae_nll", "min", noise=sigma)
    assert within_noise(report).tolist()[:3] == [True, True, False]
    assert within_noise(report)[3:].isna().all()  # confirmation runs are not the search's
    trials[WITHIN_NOISE] = within_noise(report)
    assert "2 of 3 search trials" in report.markdown()
    assert seed_noise(trials[trials["phase"] == "search"], "val/iwae_nll") is None


def test_the_sql_reader_reads_only_store_schemas_it_was_tested_with(tmp_path):
    """A store MLflow 3 made is read with SQL; the same store with another schema revision (made
    or migrated by another MLflow release) is read through MLflow's client; so is a file that is
    no MLflow store yet."""
    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()  # MLflow creates its tables
    assert schema_revision(store) in TESTED_SCHEMAS
    assert isinstance(local_reader(f"sqlite:///{store}"), SqliteReader)
    with sqlite3.connect(store) as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert local_reader(f"sqlite:///{store}") is None
    assert isinstance(reader(f"sqlite:///{store}"), ClientReader)
    (tmp_path / "empty.db").write_bytes(b"")
    assert local_reader(f"sqlite:///{tmp_path / 'empty.db'}") is None
