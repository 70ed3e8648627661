"""Constraint-aware search on real Optuna studies (SQLite storage), driven through vaestudy's
Ray Tune searchers the way Tune drives them: `suggest`, then `on_trial_complete` with the trial's
final report. No Ray runtime is needed for the searcher itself."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import REPO
from vaestudy.study.hopeless import HopelessStopper
from vaestudy.study.report_keys import DIVERGED, PROGRESS, SATURATED
from vaestudy.study.search import make_search
from vaestudy.study.spec import VARIANT_SEP, extremes, load_study

GECO = REPO / "studies" / "geco.yaml"  # metric val/kl (min); yardstick recon <= 110
# 8 objective variants, 3 trials each, TPE over each variant's own keys; metric val/iwae_nll
CPU_COMPARE = REPO / "studies" / "cpu" / "compare.yaml"


def final(kl: float, recon: float, kappa: float, saturated: str = "") -> dict:
    """A finished GECO trial's final report, as `study.trial` sends it."""
    return {
        "val/kl": kl,
        "val/recon": recon,
        "val/constraint/recon": recon,
        "val/target/recon": kappa,
        DIVERGED: 0,
        SATURATED: saturated,
    }


def searcher(tmp_path, *overrides: str, path=GECO):
    """The study's search (TPE unless `overrides` choose) on an Optuna study in `tmp_path`."""
    study = load_study(path, ["study.sampler.kind=tpe", *overrides])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = make_search(study, storage, "s")
    return search, lambda: optuna.load_study(study_name="s", storage=storage)


def test_constraint_values_are_stored_and_best_trial_is_feasible(tmp_path):
    search, ot = searcher(tmp_path)
    for tid in ("low_kl", "feasible", "pinned"):
        search.suggest(tid)
    search.on_trial_complete("low_kl", final(kl=2.0, recon=130.0, kappa=120.0))
    search.on_trial_complete("feasible", final(kl=9.0, recon=95.0, kappa=100.0))
    search.on_trial_complete("pinned", final(kl=1.0, recon=99.0, kappa=90.0, saturated="recon"))
    trials = {t.user_attrs["tune_trial_id"]: t for t in ot().trials}
    assert trials["low_kl"].constraints == {
        "own": 10.0,
        "saturated": 0.0,
        "yardstick:recon<=110": 20.0,
    }
    assert trials["feasible"].constraints == {
        "own": -5.0,
        "saturated": 0.0,
        "yardstick:recon<=110": -15.0,
    }
    assert trials["pinned"].constraints["saturated"] == 1.0  # a saturated multiplier: infeasible
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    best = ot().best_trial
    assert best.user_attrs["tune_trial_id"] == "feasible" and best.value == 9.0


@pytest.mark.parametrize(
    "scope, keys",
    [
        ("own", {"own", "saturated"}),
        ("yardstick", {"yardstick:recon<=110"}),
        ("none", set()),
    ],
)
def test_the_study_key_chooses_what_the_search_sees(tmp_path, scope, keys):
    search, ot = searcher(tmp_path, f"study.search_constraints={scope}")
    search.suggest("t")
    search.on_trial_complete("t", final(kl=2.0, recon=130.0, kappa=120.0))
    assert set(ot().trials[0].constraints) == keys


def test_a_diverged_trial_is_infeasible_where_the_sampler_reads_constraints(tmp_path):
    search, ot = searcher(tmp_path)  # tpe
    search.suggest("d")
    search.on_trial_complete("d", {DIVERGED: 1, "val/kl": 1e30})
    trial = ot().trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == math.inf
    assert trial.constraints == dict.fromkeys(["own", "saturated", "yardstick:recon<=110"], 1e30)

    (tmp_path / "random").mkdir()
    plain, ot_plain = searcher(tmp_path / "random", "study.sampler.kind=random")
    plain.suggest("d")
    plain.on_trial_complete("d", {DIVERGED: 1, "val/kl": 1e30})
    assert ot_plain().trials[0].state == TrialState.FAIL  # random search reads no constraints


def test_trials_tune_ended_early_are_pruned_or_failed(tmp_path):
    search, ot = searcher(tmp_path)
    for tid in ("stopped", "crashed"):
        search.suggest(tid)
    intermediate = {"val/kl": 3.0, "val/recon": 100.0}  # an evaluation's report: no DIVERGED
    search.on_trial_complete("stopped", intermediate)  # a scheduler stopped it
    search.on_trial_complete("crashed", intermediate, error=True)
    states = {t.user_attrs["tune_trial_id"]: t.state for t in ot().trials}
    assert states == {"stopped": TrialState.PRUNED, "crashed": TrialState.FAIL}


def test_constraints_reach_the_sampler(tmp_path):
    """KL falls as κ rises, but κ > 100 breaks both constraints. After 20 trials told so, TPE
    with the constraints homes in on the feasible optimum κ = 100; without them it chases the
    lower KL of larger κ."""
    proposals = {}
    for scope in ("both", "none"):
        folder = tmp_path / scope
        folder.mkdir()
        search, _ = searcher(folder, f"study.search_constraints={scope}", "study.num_trials=30")
        kappas = []
        for i in range(30):
            kappa = search.suggest(f"t{i}")["objective.kappa"]
            kappas.append(kappa)
            recon = 100.0 + (kappa - 100.0) * 2  # recon meets κ only while κ <= 100
            search.on_trial_complete(f"t{i}", final(kl=200.0 - kappa, recon=recon, kappa=kappa))
        proposals[scope] = kappas[20:]  # TPE's own proposals (10 start-up trials are random)
    assert 95 <= statistics.median(proposals["both"]) <= 105, proposals
    assert statistics.median(proposals["none"]) > 110, proposals


def test_multi_objective_best_trials_are_feasible(tmp_path):
    search, ot = searcher(tmp_path, "study.metric=[val/kl, val/recon]", "study.mode=[min, min]")
    for tid in ("a", "b", "c"):
        search.suggest(tid)
    search.on_trial_complete("a", final(kl=1.0, recon=150.0, kappa=160.0))  # yardstick broken
    search.on_trial_complete("b", final(kl=10.0, recon=100.0, kappa=105.0))
    search.on_trial_complete("c", final(kl=20.0, recon=90.0, kappa=95.0))
    front = {t.user_attrs["tune_trial_id"] for t in ot().best_trials}
    assert front == {"b", "c"}  # "a" dominates nothing it may: it is infeasible


def test_packed_members_are_told_their_own_constraints(tmp_path):
    search, ot = searcher(
        tmp_path, "study.pack=2", "study.search={objective.kappa: {uniform: [80, 120]}}"
    )
    config = search.suggest("p")
    assert len(config["members"]) == 2
    result = {f"member0/{k}": v for k, v in final(kl=2.0, recon=130.0, kappa=120.0).items()}
    result |= {f"member1/{k}": v for k, v in final(kl=9.0, recon=95.0, kappa=100.0).items()}
    search.on_trial_complete("p", result)
    got = {t.user_attrs["tune_trial_id"]: t.constraints["own"] for t in ot().trials}
    assert got == {"p/0": 10.0, "p/1": -5.0}
    assert ot().best_trial.user_attrs["tune_trial_id"] == "p/1"


def test_an_exhausted_grid_is_no_error(tmp_path):
    """The grid sampler calls `study.stop()` when its last point is told; outside
    `Study.optimize` Optuna raises, after storing the result: the search carries on."""
    search, ot = searcher(
        tmp_path, "study.sampler.kind=grid", "study.search={objective.kappa: {choice: [90, 100]}}"
    )
    for tid in ("a", "b"):
        search.suggest(tid)
    for tid in ("a", "b"):
        search.on_trial_complete(tid, final(kl=2.0, recon=95.0, kappa=100.0))
    assert [t.state for t in ot().trials] == [TrialState.COMPLETE] * 2


def test_every_variant_gets_exactly_its_budget_over_its_own_keys(tmp_path):
    """`budget_per_variant: 3` over 8 variants: 24 trials, 3 per variant whatever TPE would
    prefer (the first trial's value is far better than the rest), each sampling only its own
    variant's keys within their bounds; a trial whose attempts errored is run again in its
    variant, and the budget is then spent."""
    study = load_study(CPU_COMPARE)
    search, ot = searcher(tmp_path, path=CPU_COMPARE)
    assert study.spec.num_trials == 3 * len(study.variants) == 24
    own = dict(zip(study.variants, study.variant_distributions, strict=True))
    configs = {}
    for i in range(25):
        tid = f"t{i}"
        configs[tid] = config = search.suggest(tid)
        variant = study.variant(config)
        trial_config = study.trial_config(config).model_dump(mode="json")
        searched = {k.split(VARIANT_SEP)[0] for k in config if VARIANT_SEP in k}
        assert searched == set(own[variant])  # its own keys, no other variant's
        for key, dist in own[variant].items():
            node = trial_config
            for part in key.split("."):
                node = node[int(part) if isinstance(node, list) else part]
            low, high = extremes(dist)[0], extremes(dist)[-1]
            assert low <= node <= high and node == config[f"{key}{VARIANT_SEP}{variant}"]
        if i == 3:  # an infrastructure error: not a result, run again
            search.on_trial_complete(tid, {"val/iwae_nll": 90.0}, error=True)
            continue
        nll = 90.0 if i == 0 else 200.0
        search.on_trial_complete(tid, {"val/iwae_nll": nll, "val/recon": 80.0, "val/kl": 9.0,
                                       DIVERGED: 0, SATURATED: ""})  # fmt: skip
    assert search.suggest("t25") == search.FINISHED
    assert study.variant(configs["t4"]) == study.variant(configs["t3"])  # run again next
    told = [t for t in ot().trials if t.state == TrialState.COMPLETE]
    per_variant = Counter(study.variant(search.space.resolve(t.params)) for t in told)
    assert per_variant == dict.fromkeys(study.variants, 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["study.num_trials=16"], "num_trials is 16, but budget_per_variant 3 x 8 objective "
         "variants = 24 trials"),
        (["study.sampler.kind=grid"], "the grid sampler enumerates every combination itself"),
        (["study.search={train.seed: {int: [0, 9]}}"], "it needs the variants"),
        (["study.search.objective.choice.1.beta={choice: [{a: 1}, 2]}"],
         "study.search.objective.choice.1.beta: a variant's own choice takes plain values"),
        (["study.search.objective.choice.4.kappa={uniform: [135, 115]}"],
         "study.search.objective.choice.4.kappa"),
    ],
)  # fmt: skip
def test_a_budget_per_variant_that_cannot_hold_is_refused(overrides, message):
    from vaestudy.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_study(CPU_COMPARE, overrides)


def test_a_resumed_search_never_repeats_the_first_sessions_draws(tmp_path):
    """A search made again over the same ledger (what `--resume` does) draws from a seed moved
    by the trials already there: its proposals are none of the first session's."""
    first, _ = searcher(tmp_path)
    earlier = []
    for i in range(3):
        earlier.append(first.suggest(f"a{i}"))
        first.on_trial_complete(f"a{i}", final(kl=5.0, recon=100.0, kappa=100.0))
    resumed, ot = searcher(tmp_path)
    later = [resumed.suggest(f"b{i}") for i in range(3)]
    assert all(config not in earlier for config in later)
    assert len({t.params["objective.kappa"] for t in ot().trials}) == 6


def evaluation(progress: float, recon: float, kappa: float = 100.0) -> dict:
    """A GECO trial's report at an evaluation during training (no DIVERGED: not its end)."""
    return {"val/kl": 5.0, "val/recon": recon, "val/constraint/recon": recon,
            "val/target/recon": kappa, PROGRESS: progress}  # fmt: skip


def test_a_hopeless_trial_is_stopped_and_told_to_the_sampler_as_infeasible(tmp_path):
    """Four trials end after recovering at most 12 nats of `own` (recon − κ) from half-way; a
    fifth misses κ by 30 nats half-way: no trial ever made that up, so the stopper stops it, and
    the search tells Optuna it is COMPLETE, infeasible, with its last evaluation and the reason.
    Before four trials have ended, or before `after`, nothing is stopped."""
    search, ot = searcher(tmp_path, "study.stop_hopeless={min_ended: 4, after: 0.25}")
    stopper = HopelessStopper(load_study(GECO, ["study.stop_hopeless={min_ended: 4, after: 0.25}"]))
    search.stopped = stopper.stopped  # as `tune_study` shares them
    for i, recovered in enumerate([4.0, 12.0, 8.0, 0.0]):
        tid = f"ended{i}"
        search.suggest(tid)
        assert not stopper(tid, evaluation(0.5, recon=100.0 + recovered + 2.0))
        end = final(kl=5.0, recon=102.0, kappa=100.0) | {PROGRESS: 1.0}
        assert not stopper(tid, end)
        search.on_trial_complete(tid, end)
        if i == 2:  # three ended: too few to bound anything
            search.suggest("early")
            assert not stopper("early", evaluation(0.5, recon=200.0))
    search.suggest("hopeless")
    assert not stopper("hopeless", evaluation(0.2, recon=130.0))  # before `after`
    assert not stopper("hopeless", evaluation(0.5, recon=111.0))  # 11 <= 12: can recover
    last = evaluation(0.5, recon=130.0)
    assert stopper("hopeless", last)  # 30 > 12
    search.on_trial_complete("hopeless", last)  # Tune ends it with its last result
    trial = next(t for t in ot().trials if t.user_attrs["tune_trial_id"] == "hopeless")
    assert trial.state == TrialState.COMPLETE and trial.value == 5.0
    assert trial.constraints["own"] == 30.0  # infeasible, from its last evaluation
    assert "own misses by 30 at 50% of training" in trial.user_attrs["vaestudy_stopped"]
    assert (
        "the most any of 4 ended trials recovered from there is 12" in stopper.stopped["hopeless"]
    )


def test_a_pack_stops_when_every_member_is_hopeless(tmp_path):
    study = load_study(GECO, ["study.stop_hopeless={min_ended: 1}"])
    stopper = HopelessStopper(study)
    both = {f"member{i}/{k}": v for i in range(2) for k, v in evaluation(0.5, 100.0).items()}
    ended = {f"member{i}/{k}": v for i in range(2) for k, v in
             (final(kl=5.0, recon=100.0, kappa=100.0) | {PROGRESS: 1.0}).items()}  # fmt: skip
    assert not stopper("p", both) and not stopper("p", ended)  # recovered 0 from half-way
    one = both | {"member0/val/constraint/recon": 120.0}  # member 1 meets κ: the pack goes on
    assert not stopper("q", one)
    two = one | {"member1/val/constraint/recon": 110.0}
    assert stopper("q", two)
    assert set(stopper.stopped) == {"q/0", "q/1"}  # each member's own reason


def test_the_gp_sampler_models_the_constraints_and_restores_its_trials(tmp_path):
    """GP search over κ (feasible only for κ <= 100, where KL falls as κ rises): after its
    start-up, the GP's proposals concentrate below 100. A searcher restored from Tune's saved
    state (a new process) tells the trials it had running."""
    search, ot = searcher(tmp_path, "study.sampler.kind=gp", "study.num_trials=16")
    assert isinstance(search.ledger.sampler, optuna.samplers.GPSampler)
    kappas = []
    for i in range(14):
        kappa = search.suggest(f"t{i}")["objective.kappa"]
        kappas.append(kappa)
        recon = 100.0 + (kappa - 100.0) * 2
        search.on_trial_complete(f"t{i}", final(kl=200.0 - kappa, recon=recon, kappa=kappa))
    guided = kappas[4:]  # 16 trials: 4 random start-up trials
    assert sum(95 <= k <= 101 for k in guided) >= 6, kappas
    search.suggest("running")
    saved = tmp_path / "searcher.pkl"
    search.save(str(saved))
    again, _ = searcher(tmp_path, "study.sampler.kind=gp", "study.num_trials=16")
    again.restore(str(saved))
    again.on_trial_complete("running", final(kl=150.0, recon=95.0, kappa=95.0))
    told = next(t for t in ot().trials if t.user_attrs["tune_trial_id"] == "running")
    assert told.state == TrialState.COMPLETE and told.value == 150.0
