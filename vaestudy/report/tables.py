"""Study report: which objectives satisfy their constraints, on held-out data, and at what cost.

Reads a study's parent run (the newest, or a given one) and its child runs back from the
tracking store (`vaestudy.tracking.run_reader`: SQL on a local store, MLflow's client elsewhere)
into pandas. Every judgement uses `vaestudy.training.feasibility`: a trial *satisfies
its own constraints* (its objective's, on the test split, no multiplier saturated), *satisfies
the yardstick* (the study's `constraints`), or both: *feasible*.

- `trials`: one row per trial: variant (the objective, or its label when the study searches
  whole objective configs), objective, model, swept hyperparameters; per own constraint its
  target, test value, `sat` (held at the end on the test split), `saturated` (λ at its clip over
  the last 20% of training: target unreachable at this budget), `held_last20` (fraction of the
  trajectory points in the last 20% of training steps where the training constraint held),
  `held_from` (first step from which it held at every later point), final λ; then test −ELBO,
  IWAE NLL, rate (KL), distortion (recon), active units, probe accuracy; `satisfies_own`,
  `satisfies_yardstick`, `feasible`, `state`; status and failure reason. Status `interrupted`
  marks a killed study's unfinished attempt that `--resume` ran again as a new trial: it stays in
  this table but out of every count of the summary.
- `summary`: per variant: trials, finished (with final test metrics), satisfying their own
  constraints, satisfying the yardstick, feasible, saturated, the best feasible trial by the
  study's first metric, and median figures.
- figures: the rate–distortion plane (colour = variant, marker = state: ● feasible, ○ yardstick
  only, △ own only, × neither; dashed yardstick bounds) and the trajectories of each variant's
  best feasible trial (its best finished one, so labelled, when none is feasible).

`write_report` writes Markdown, CSV, HTML and PNG files and `attach` puts them on the parent run
under `report/`; `log_answer` writes the per-variant counts and the best feasible trial onto the
parent run as metrics and tags, so the MLflow runs table answers the question by itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from vaestudy.config.dotted import unprefixed
from vaestudy.errors import UserError
from vaestudy.report.intervals import mean_ci, wilson
from vaestudy.report.verdicts import (
    Race,
    ci_text,
    margins,
    open_questions,
    pairs,
    per_seed,
    ranking,
    variant_verdicts,
)
from vaestudy.tracking.run_reader import History, RunReader, RunRecord, as_reader
from vaestudy.tracking.tags import (
    CONFIRM,
    SEARCH,
    TAG_CONFIRMS,
    TAG_FAILURE,
    TAG_FAILURE_STEP,
    TAG_INTERRUPTED,
    TAG_MODEL,
    TAG_NOTE,
    TAG_OBJECTIVE,
    TAG_OPTUNA,
    TAG_OPTUNA_STORAGE,
    TAG_PHASE,
    TAG_SATURATED,
    TAG_STOPPED,
    TAG_VARIANT,
)
from vaestudy.tracking.ui_views import view_url
from vaestudy.training.feasibility import (
    TAIL,
    Yardstick,
    judge,
    split_names,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

INTERRUPTED = "interrupted"  # status of a killed attempt that was run again (not counted)
STOPPED_SATURATED = "stopped: saturated"  # train.stop_saturated ended it early (evaluated)
WITH_TEST = ("finished", STOPPED_SATURATED)  # statuses that come with final test metrics
_SEARCH_PARAM = re.compile(r"\.(choice|uniform|loguniform|int|step)(\..*)?$")
_SHOWN_METRICS = ("test/iwae_nll", "test/kl", "test/recon", "test/active_units", "test/probe_acc")
TAG_BEST = "vaestudy.best_feasible"  # parent run: the best feasible trial's run id
TAG_ANSWER = "vaestudy.answer"  # parent run: the answer in one line
TAG_VERDICT = "vaestudy.verdict"  # parent run, `.<variant>`: the verdict on its constraints
TAG_RANK = "vaestudy.rank"  # parent run, `.<variant>`: its rank from paired differences
ANSWER_PREFIX = "**Answer:** "  # the parent run's description starts with the answer
COMPARE_LINK = "Compare the runs that decided it"  # then links their saved view (comparison.py)
SUMMARY_HEADING = "## Per variant"  # and ends with the per-variant table
MAX_TAG_CHARS = 8000  # MLflow's limit on a tag's value (the description is one)


@dataclass
class Report:
    study: str
    parent_run_id: str
    trials: pd.DataFrame
    summary: pd.DataFrame
    yardstick: list[Yardstick]
    metric: str  # the study's first metric: a validation metric (`val/...`)
    mode: str
    run_name: str = ""  # the study run's name (= its Optuna study's name)
    metrics: tuple[str, ...] = ()  # every metric of the search (several: multi-objective)
    optuna_storage: str = ""  # where the search's Optuna study lives ("" if not recorded)
    confirmation: pd.DataFrame | None = None  # per variant, from the confirmation runs on test
    margins: pd.DataFrame | None = None  # per confirmed variant and constraint (`verdicts`)
    pairs: pd.DataFrame | None = None  # per pair of confirmed variants (`verdicts.pairs`)
    race: Race = Race(0, 0, 0)  # the confirmation's schedule: its decision level
    noise: float | None = None  # σ of `metric` between seeds of one configuration (`seed_noise`)
    experiment_id: str = ""  # the study's MLflow experiment

    @property
    def test_metric(self) -> str:
        return test_twin(self.metric)

    @property
    def selects_on_test(self) -> bool:
        """Whether the study ran with `data.validation: 0` (selection read the test split)."""
        return bool(self.trials["selects_on_test"].any()) if len(self.trials) else False

    def rules_text(self) -> str:
        rules = ", ".join(y.label for y in self.yardstick) or "none"
        return (
            f"Feasible = satisfies its own constraints (no multiplier saturated) and the study's "
            f"yardstick ({rules}). Selected = each variant's best trial feasible on the "
            f"validation split, by {self.metric} ({self.mode}); counts and confirmation are "
            f"judged on the test split."
        )

    def warning(self) -> str:
        """The first line of every report when selection read the test split."""
        if not self.selects_on_test:
            return ""
        return (
            "**Warning: selection used the test split** (data.validation: 0): the selected "
            "trials' test figures are optimistic."
        )

    def markdown(self) -> str:
        run = f"run `{self.run_name}`, " if self.run_name else ""
        lines = [self.warning(), ""] if self.warning() else []
        lines += [f"# Study `{self.study}` ({run}parent run {self.parent_run_id})", ""]
        lines += [self.rules_text(), ""]
        if self.confirmation is not None and len(self.confirmation):
            lines += ["## Confirmed on test", "", _confirm_note(self), ""]
            lines += [_md(self.confirmation), ""]
            lines += ["### Constraint margins", "", _margins_note(self), ""]
            lines += [_md(self.margins), "", "### Pairs", "", _pairs_note(self), ""]
            lines += [_md(self.pairs), ""]
        lines += [SUMMARY_HEADING, "", _md(self.summary), ""]
        lines += ["## Trials", "", _noise_note(self), "", _md(self.trials)]
        return "\n".join(lines) + "\n"

    def search_trials(self) -> pd.DataFrame:
        return self.trials[self.trials["phase"] == SEARCH]

    def best_feasible(self) -> pd.Series | None:
        """The search's best trial feasible on validation, by the study's first metric (a
        validation metric): what `vaestudy best` writes out."""
        search = self.search_trials()
        return _best(search[search["val_feasible"]], self.metric, self.mode)

    def selection(self, variant: str) -> tuple[pd.Series | None, bool]:
        """A variant's selected search trial and whether it is feasible on validation: its best
        trial feasible there by the study's first metric, else its best finished one (False),
        else None."""
        search = self.search_trials()
        group = search[(search["variant"] == variant) & search["status"].isin(WITH_TEST)]
        best = _best(group[group["val_feasible"]], self.metric, self.mode)
        if best is not None:
            return best, True
        return _best(group, self.metric, self.mode), False

    def best_finished(self) -> pd.Series | None:
        """The search's best trial with final metrics by the study's first metric, feasible or
        not."""
        search = self.search_trials()
        return _best(search[search["status"].isin(WITH_TEST)], self.metric, self.mode)


def _confirm_note(report: Report) -> str:
    return (
        "Each variant's selected configuration retrained with fresh seeds, common to every "
        "variant; `constraints`: every constraint satisfied (`meets`), any violated (`fails`), "
        "else `undecided` (see the margins); rates are runs satisfying their own constraints / "
        "the yardstick / both on the test split with 95% Wilson intervals; "
        f"{report.test_metric} is the mean ± the 95% t half-width; `gap` = the selected trial's "
        "test − validation value; `rank` from paired differences per seed (`=k`: a tie with "
        f"rank k at {report.race.level_text()}); `vs above`: the paired difference to the "
        "variant above, with its interval."
    )


def _noise_note(report: Report) -> str:
    if report.noise is None:
        return (
            "Seed noise unmeasured (no confirmation runs): how much of the search's differences "
            "two seeds of one configuration would make is unknown."
        )
    search = report.search_trials()
    within = search[WITHIN_NOISE].dropna()
    return (
        f"Seed noise: σ = {report.noise:.3g} in {report.metric}, pooled over the confirmation "
        f"runs (each variant's are one configuration, seeds apart). `{WITHIN_NOISE}`: the "
        f"trial's value is within 1.96·√2·σ = {NOISE_Z * report.noise:.3g} of its variant's "
        f"selected trial, a difference one seed could make: {int(within.sum())} of "
        f"{len(within)} search trials."
    )


def _margins_note(report: Report) -> str:
    return (
        "Margin = test value − target in the constraint's units (nats per example; MMD × 10⁴), "
        "negative = satisfied; mean over seeds with its t interval at "
        f"{report.race.level_text()}: `satisfied` below 0, `violated` above, `undecided` "
        "across; `stopped` says why an undecided one got no more seeds."
    )


def _pairs_note(report: Report) -> str:
    return (
        f"A ranked above B; diff = A − B in {report.test_metric} per common seed, mean with its "
        f"paired t interval at {report.race.level_text()} (`tie`: it holds 0); P(A better) = "
        "share of seeds on which A is better (ties ½), Wilson interval."
    )


def metric_name(constraint: str) -> str:
    """A constraint's name as a metric-key part: `recon<=135` -> `recon_le_135`."""
    return file_name(constraint.replace("<=", "_le_").replace(">=", "_ge_"))


def file_name(label: str) -> str:
    """`label` as a file name or metric-key part: runs of other characters become `_`."""
    return re.sub(r"[^\w.\-]+", "_", label).strip("_")


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g") if len(df) else "(none)"


def find_parent(source: RunReader | MlflowClient, study: str, run: str | None = None) -> RunRecord:
    """A parent run of `study`: the newest, or `run`: its run id, a unique prefix of the id, or
    its name (`geco-2`, as `vaestudy studies` lists)."""
    reader = as_reader(source)
    runs = reader.study_runs(study)
    if not runs:
        known = sorted(name for name in reader.experiments() if name != "Default")
        raise UserError(
            f"no study named {study!r} in this tracking store; studies there: "
            f"{', '.join(known) or 'none'}"
        )
    if run is None:
        return runs[0]
    found = [r for r in runs if run in (r.run_id, r.name)]
    found = found or [r for r in runs if r.run_id.startswith(run)]
    if len(found) != 1:
        names = ", ".join(f"{r.name} ({r.run_id[:8]})" for r in runs)
        what = "no run" if not found else f"{len(found)} runs"
        raise UserError(f"study {study!r} has {what} matching {run!r}; its runs: {names}")
    return found[0]


def yardstick_from_params(params: dict[str, str]) -> list[Yardstick]:
    out = []
    i = 0
    while f"study.constraints.{i}.metric" in params:
        p = f"study.constraints.{i}."
        out.append(
            Yardstick(
                metric=params[p + "metric"],
                bound=float(params[p + "bound"]),
                direction=params[p + "direction"],
            )
        )
        i += 1
    return out


def constraint_tail(history: History, name: str) -> tuple[float, float | None]:
    """(fraction of points in the last 20% of steps where the constraint held, first step from
    which it held at every later point, or None)."""
    key, target = f"constraint/{name}", f"target/{name}"
    points = [(r["step"], r[key] <= r[target]) for r in history if key in r and target in r]
    if not points:
        return math.nan, None
    last = points[-1][0]
    tail = [ok for step, ok in points if step >= (1 - TAIL) * last]
    held_from = None
    for step, ok in reversed(points):
        if not ok:
            break
        held_from = step
    return sum(tail) / len(tail), held_from


def read_history(source: RunReader | MlflowClient, run_id: str, keys: list[str]) -> History:
    """Trajectory points of `keys` (`train/...`, `val/...`), one dict per step, keys without
    `train/`."""
    rows = as_reader(source).history(run_id, keys)
    return [{k.removeprefix("train/"): v for k, v in row.items()} for row in rows]


def build_report(source: RunReader | MlflowClient, study: str, run: str | None = None) -> Report:
    """The report of `study`'s newest parent run, or of its run `run` (see `find_parent`), read
    from a `RunReader` (or an MLflow client)."""
    reader = as_reader(source)
    parent = find_parent(reader, study, run)
    params = parent.params
    metric = params.get("study.metric", params.get("study.metric.0", "val/iwae_nll"))
    mode = params.get("study.mode", params.get("study.mode.0", "min"))
    # `study.search.objective.kappa.uniform.0` -> `objective.kappa` (the searched dotted key)
    searched = sorted({_SEARCH_PARAM.sub("", k) for k in unprefixed(params, "study.search.")})
    yardstick = yardstick_from_params(params)
    runs = reader.trial_runs(parent)
    if not runs:
        raise UserError(f"study {study!r} (parent run {parent.run_id}) has no trials yet")
    rows = [_trial_row(reader, r, searched, yardstick, metric) for r in runs]
    order = ["variant", "phase", "trial"]
    trials = pd.DataFrame(rows).sort_values(order, ascending=[True, False, True])
    trials = trials.reset_index(drop=True)
    summary = _summary(trials, metric, mode)
    metrics = [params[k] for k in sorted(params) if re.fullmatch(r"study\.metric(\.\d+)?", k)]
    race = Race.from_params(params)
    yardsticks = dict.fromkeys(trials["variant"], yardstick)
    confirmation, margin_table, pair_table = confirmation_tables(
        trials, metric, mode, yardsticks, race
    )
    report = Report(
        study,
        parent.run_id,
        trials,
        summary,
        yardstick,
        metric,
        mode,
        run_name=parent.tags.get(TAG_OPTUNA, parent.name),
        metrics=tuple(metrics),
        optuna_storage=parent.tags.get(TAG_OPTUNA_STORAGE, ""),
        confirmation=confirmation,
        margins=margin_table,
        pairs=pair_table,
        race=race,
        noise=seed_noise(trials, metric),
        experiment_id=parent.experiment_id,
    )
    if report.noise is not None:
        trials[WITHIN_NOISE] = within_noise(report)
    return report


def compare_reports(reports: list[Report]) -> Report:
    """Several study runs as one report: each trial's variant and name are prefixed by its
    run's name (`geco-2: geco`; `study/run: ...` across studies), each trial keeps the verdict
    of its own run's yardstick; the summary has a row per run and variant. The runs must rank
    by one metric."""
    ranks = {(r.metric, r.mode) for r in reports}
    if len(ranks) > 1:
        raise UserError(f"the runs rank trials by different metrics ({sorted(ranks)}): compare "
                        "runs that share the study's metric")  # fmt: skip
    several = len({r.study for r in reports}) > 1
    labels = [f"{r.study}/{r.run_name}" if several else r.run_name for r in reports]
    if len(set(labels)) < len(labels):
        raise UserError(f"the same run twice: {', '.join(labels)}")
    parts = []
    for label, r in zip(labels, reports, strict=True):
        trials = r.trials.copy()
        trials.insert(0, "run", label)
        for column in ("variant", "trial"):  # trial names repeat across runs (`geco #0`)
            trials[column] = f"{label}: " + trials[column]
        parts.append(trials)
    trials = pd.concat(parts, ignore_index=True)
    metric, mode = reports[0].metric, reports[0].mode
    race = max((r.race for r in reports), key=lambda r: len(r.schedule()))  # the strictest level
    yardsticks = {  # each trial keeps its own run's yardstick
        f"{label}: {variant}": r.yardstick
        for label, r in zip(labels, reports, strict=True)
        for variant in r.trials["variant"]
    }
    confirmation, margin_table, pair_table = confirmation_tables(
        trials, metric, mode, yardsticks, race
    )
    return Report(
        study=" vs ".join(labels),
        parent_run_id=", ".join(r.parent_run_id for r in reports),
        trials=trials,
        summary=_summary(trials, metric, mode),
        confirmation=confirmation,
        margins=margin_table,
        pairs=pair_table,
        race=race,
        yardstick=list(dict.fromkeys(y for r in reports for y in r.yardstick)),
        metric=metric,
        mode=mode,
    )


def _status(run: RunRecord) -> str:
    tags = run.tags
    if TAG_INTERRUPTED in tags:
        return INTERRUPTED
    if run.status == "FINISHED" and tags.get(TAG_STOPPED, "").startswith("saturated"):
        return STOPPED_SATURATED
    return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "stopped early"}.get(
        run.status, run.status.lower()
    )


def _trial_row(
    reader: RunReader,
    run: RunRecord,
    searched: list[str],
    yardstick: list[Yardstick],
    metric: str,
) -> dict[str, Any]:
    m, tags, params = run.metrics, run.tags, run.params
    names = sorted(unprefixed(m, "test/constraint/"))
    keys = [k for k in m if k.startswith(("train/constraint/", "train/target/"))]
    history = read_history(reader, run.run_id, keys)
    status = _status(run)
    ended = status in WITH_TEST
    test = unprefixed(m, "test/") if ended else None
    val = unprefixed(m, "val/") if ended else None
    saturated = split_names(tags.get(TAG_SATURATED))
    objective = tags.get(TAG_OBJECTIVE, params.get("objective.name"))
    row: dict[str, Any] = {
        "trial": run.name or run.run_id[:8],
        "run_id": run.run_id,
        "phase": tags.get(TAG_PHASE, SEARCH),
        "confirms": tags.get(TAG_CONFIRMS, ""),
        "variant": tags.get(TAG_VARIANT, objective),
        "objective": objective,
        "model": tags.get(TAG_MODEL, params.get("model.name")),
        "status": status,
        "reason": tags.get(TAG_FAILURE, ""),
        "failed_at_step": float(tags[TAG_FAILURE_STEP]) if TAG_FAILURE_STEP in tags else math.nan,
        "train.seed": _param_value(params, "train.seed"),
    }
    for key in searched:
        row[key] = _param_value(params, key)
    for name in names:  # each own constraint's columns together
        target, value = m.get(f"test/target/{name}", math.nan), m[f"test/constraint/{name}"]
        held, held_from = constraint_tail(history, name)
        row |= {
            f"{name}: target": target,
            f"{name}: val": m.get(f"val/constraint/{name}", math.nan),
            f"{name}: test": value,
            f"{name}: satisfied": test is not None and value <= target and name not in saturated,
            f"{name}: saturated": name in saturated,
            f"{name}: held_last20": held,
            f"{name}: held_from": held_from if held_from is not None else math.nan,
            f"{name}: lambda": m.get(f"train/lambda/{name}", math.nan),
        }
    verdict = judge(test, yardstick, saturated)
    row[metric] = m.get(metric, math.nan)
    for name in (test_twin(metric), *_SHOWN_METRICS, *(f"test/{y.metric}" for y in yardstick)):
        row[name] = m.get(name, math.nan)
    row |= {
        "test/neg_elbo": -m["test/elbo"] if "test/elbo" in m else math.nan,
        "val_feasible": judge(val, yardstick, saturated).feasible,
        "satisfies_own": verdict.own,
        "satisfies_yardstick": verdict.yardstick,
        "feasible": verdict.feasible,
        "state": verdict.state if test is not None else status,
        "saturated": ",".join(saturated),
        "selects_on_test": params.get("data.validation") in ("0", "0.0"),
    }
    return row


def test_twin(metric: str) -> str:
    """The test split's name of a validation metric: `val/kl` -> `test/kl`."""
    return "test/" + metric.removeprefix("val/")


def _param_value(params: dict[str, str], key: str) -> Any:
    # A whole section searched (e.g. `objective`) shows its name.
    raw = params[key] if key in params else params.get(f"{key}.name", "")
    try:
        return float(raw)
    except ValueError:
        return raw


def _best(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    values = trials[metric].dropna()
    if not len(values):
        return None
    return trials.loc[values.idxmin() if mode == "min" else values.idxmax()]


def _summary(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per variant, over the search's trials: counts (judged on test), and the trial selected on
    validation with its validation and test values of the study's metric."""
    rows = []
    twin = test_twin(metric)
    counted = trials[(trials["status"] != INTERRUPTED) & (trials["phase"] == SEARCH)]
    for variant, group in counted.groupby("variant", sort=True):
        best = _best(group[group["val_feasible"]], metric, mode)
        done = group[group["status"].isin(WITH_TEST)]
        rows.append(
            {
                "variant": variant,
                "objective": group["objective"].iloc[0],
                "trials": len(group),
                "finished": len(done),
                "satisfy_own": int(group["satisfies_own"].sum()),
                "satisfy_yardstick": int(group["satisfies_yardstick"].sum()),
                "feasible": int(group["feasible"].sum()),
                "saturated": int((group["saturated"] != "").sum()),
                "val_feasible": int(group["val_feasible"].sum()),
                "selected": best["trial"] if best is not None else "",
                f"selected {metric}": best[metric] if best is not None else math.nan,
                f"selected {twin}": best[twin] if best is not None else math.nan,
                "median test/kl": done["test/kl"].median(),
                "median test/recon": done["test/recon"].median(),
            }
        )
    return pd.DataFrame(rows)


def confirmation_tables(
    trials: pd.DataFrame, metric: str, mode: str, yardsticks: dict[str, list[Yardstick]], race: Race
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """(per variant, per variant and constraint, per pair of variants) from the confirmation
    runs on the test split (`vaestudy.report.verdicts`), or Nones when the study ran none.
    `yardsticks`: each variant's study's yardstick.

    Per variant: seeds, the verdict on its constraints (`meets`, `fails: ...`, `undecided:
    ...`), rates with 95% Wilson intervals (`vaestudy.report.intervals`), the metric's mean with
    its 95% t interval, the selection gap, the rank from paired differences (`=k`: tie with rank
    k) and the paired difference to the variant above. Margins and pairs carry intervals at the
    race's decision level (`race.level`)."""
    confirm = confirmation_runs(trials)
    if not len(confirm):
        return None, None, None
    twin = test_twin(metric)
    level = race.level
    margin_table = _margins(confirm, yardsticks, race)
    verdicts = variant_verdicts(margin_table) if len(margin_table) else {}
    values = _metric_by_seed(confirm, twin)
    order, ranks = ranking(values, mode, level)
    pair_table = pairs(values, mode, level, twin)
    by_run = trials.set_index("run_id")
    rows = []
    for i, (variant, rank) in enumerate(zip(order, ranks, strict=True)):
        group = confirm[confirm["variant"] == variant]
        n = len(group)
        picked = group["confirms"].iloc[0]
        selected = by_run.loc[picked] if picked in by_run.index else None
        row: dict[str, Any] = {
            "rank": rank,
            "variant": variant,
            "selected": "" if selected is None else selected["trial"],
            "seeds": n,
            "verdict": verdicts.get(variant, ("meets", ""))[0],
            "constraints": verdicts.get(variant, ("", "no constraint"))[1],
        }
        for label, column in (("own", "satisfies_own"), ("yardstick", "satisfies_yardstick"),
                              ("feasible", "feasible")):  # fmt: skip
            k = int(group[column].sum())
            interval = wilson(k, n)
            row |= {label: f"{k}/{n}", f"{label} 95% CI": interval.text()}
            row |= {f"{label}_low": interval.low, f"{label}_high": interval.high}
        ci = mean_ci(list(values[variant].values()))
        row |= {f"{twin} mean": ci.mean, f"{twin} ±95%": ci.half}
        if selected is not None:
            row |= {
                f"selected {metric}": selected[metric],
                f"selected {twin}": selected[twin],
                "gap": selected[twin] - selected[metric],
            }
        row["vs above"] = "" if i == 0 else _versus(pair_table, order[i - 1], variant)
        rows.append(row)
    if len(margin_table):  # variants in rank order, each one's constraints as they came
        rank = margin_table["variant"].map({v: i for i, v in enumerate(order)})
        margin_table = margin_table.iloc[rank.argsort(kind="stable")].reset_index(drop=True)
    return pd.DataFrame(rows), margin_table, pair_table


WITHIN_NOISE = "within noise of selected"
NOISE_Z = 1.96 * math.sqrt(2)  # two single runs differ with sd √2·σ: 95% of them within this·σ


def seed_noise(trials: pd.DataFrame, metric: str) -> float | None:
    """σ of `metric` between seeds of one configuration: the pooled within-variant standard
    deviation of the finished confirmation runs (None without two runs of one variant)."""
    runs = confirmation_runs(trials)
    groups = [
        g[metric].dropna() for _, g in runs[runs["status"].isin(WITH_TEST)].groupby("variant")
    ]
    groups = [g for g in groups if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return None
    return math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof)


def within_noise(report: Report) -> pd.Series:
    """Per search trial with a value, whether it lies within `NOISE_Z`·σ of its variant's
    selected trial (`Report.selection`); None elsewhere."""
    assert report.noise is not None
    out = pd.Series(None, index=report.trials.index, dtype=object)
    for variant, group in report.search_trials().groupby("variant"):
        selected, _ = report.selection(variant)
        if selected is None:
            continue
        values = group[report.metric].dropna()
        close = (values - selected[report.metric]).abs() < NOISE_Z * report.noise
        out[values.index] = close
    return out


def confirmation_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """The confirmation runs among `trials` (not an interrupted attempt that ran again)."""
    return trials[(trials["phase"] == CONFIRM) & (trials["status"] != INTERRUPTED)]


def _margins(
    confirm: pd.DataFrame, yardsticks: dict[str, list[Yardstick]], race: Race
) -> pd.DataFrame:
    """`verdicts.margins` of each variant's runs by its own study's yardstick."""
    parts = [
        margins(runs, yardsticks[variant], race.level, race.max_seeds)
        for variant, runs in confirm.groupby("variant", sort=True)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _metric_by_seed(confirm: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    """Per confirmed variant (every one, if without a finished run), `column` by seed."""
    values = per_seed(confirm[confirm["status"].isin(WITH_TEST)], column)
    return values | {v: {} for v in confirm["variant"].unique() if v not in values}


def open_after(report: Report, look: int) -> dict[str, list[str]]:
    """The variants that the race gives more seeds after its look `look` (0-based), each with
    why (`vaestudy.report.verdicts.open_questions`), judged on the confirmation runs of the
    seeds up to that look only: a resumed race plans each look as it was planned first."""
    race = report.race
    upto = race.first_seed + race.schedule()[look]
    confirm = confirmation_runs(report.trials)
    confirm = confirm[confirm["train.seed"] < upto]
    margin_table = _margins(confirm, dict.fromkeys(confirm["variant"], report.yardstick), race)
    values = _metric_by_seed(confirm, report.test_metric)
    return open_questions(confirm, margin_table, values, report.mode, race.level, race.max_seeds)


def _versus(pair_table: pd.DataFrame, above: str, variant: str) -> str:
    """The paired difference `variant` − `above` in words: `+2.1 [0.4, 3.8]`."""
    row = pair_table[(pair_table["A"] == above) & (pair_table["B"] == variant)].iloc[0]
    if not row["seeds"]:
        return "no common seed"
    return ci_text(-row["diff mean"], -row["diff high"], -row["diff low"])


def _test_split_shout(report: Report) -> str:
    """What the one-line answer and the printed table start with when selection read the test
    split."""
    return "SELECTION USED THE TEST SPLIT (data.validation: 0); " if report.selects_on_test else ""


def answer(report: Report) -> str:
    """The study's answer in one line: with confirmation, per variant its rank from paired
    differences, the confirmed mean, its verdict on its constraints and its rate of runs feasible
    on test with its interval; without, the search's feasible counts and the trial selected on
    validation."""
    warn = _test_split_shout(report)
    c = report.confirmation
    if c is not None and len(c):
        mean = f"{report.test_metric} mean"
        parts = [
            f"{r['rank']} {r['variant']} {r[mean]:.4g}±{r[f'{report.test_metric} ±95%']:.2g}"
            f" {r['verdict']}, feasible {r['feasible']} {r['feasible 95% CI']}"
            for r in c.to_dict("records")
        ]
        ties = c["rank"].str.startswith("=").any()
        tail = f" (=k: paired tie with rank k at {report.race.level_text()})" if ties else ""
        return f"{warn}confirmed on test, ranked by {mean}{tail}: " + "; ".join(parts)
    s = report.summary
    parts = [f"{r.variant} {r.feasible}/{r.trials}" for r in s.itertuples()]
    best = report.best_feasible()
    if best is None:
        return f"{warn}feasible trials per variant: {', '.join(parts)}; none feasible on validation"
    value = f"{report.metric} {best[report.metric]:.4g}, {report.test_metric} "
    value += f"{best[report.test_metric]:.4g}"
    return (
        f"{warn}feasible trials per variant: {', '.join(parts)}; "
        f"selected: {best['trial']} ({value})"
    )


def deciding_runs(report: Report) -> list[str]:
    """The runs that decided the answer: every finished confirmation run, else each variant's
    selected search trial."""
    confirm = confirmation_runs(report.trials)
    confirm = confirm[confirm["status"].isin(WITH_TEST)]
    if len(confirm):
        return list(confirm["run_id"])
    chosen = (report.selection(v)[0] for v in report.search_trials()["variant"].unique())
    return [row["run_id"] for row in chosen if row is not None]


def view_key(report: Report) -> str:
    """The key of the saved view of `deciding_runs` (`vaestudy.report.comparison`) that the
    parent run's description links: the parent run's id (a resumed study's end replaces it)."""
    return report.parent_run_id


def answer_heading(report: Report) -> str:
    """The line above `answer_table`: what its rows are."""
    warn = _test_split_shout(report)
    c = report.confirmation
    if c is not None and len(c):
        return (
            f"{warn}Confirmed on test, ranked by {report.test_metric} mean (=k: paired tie with "
            f"rank k at {report.race.level_text()}):"
        )
    return f"{warn}The search: feasible trials per variant and the trial selected on validation:"


def answer_table(report: Report) -> pd.DataFrame:
    """What `vaestudy run` prints: a compact table per variant (the report has the rest)."""
    c = report.confirmation
    if c is not None and len(c):
        mean = f"{report.test_metric} mean"
        out = c[["rank", "variant", "seeds", "verdict"]].copy()
        out["feasible"] = c["feasible"] + " " + c["feasible 95% CI"]
        half = c[f"{report.test_metric} ±95%"]
        out[report.test_metric] = [f"{m:.4g} ± {h:.2g}" for m, h in zip(c[mean], half, strict=True)]
        out["vs above"] = c["vs above"]
        return out
    s = report.summary
    out = s[["variant", "trials", "feasible"]].copy()
    out["selected"] = [  # `geco #3` -> `#3`: the variant is in its own column
        name.removeprefix(variant).strip() for variant, name in zip(s["variant"], s["selected"],
                                                                    strict=True)
    ]  # fmt: skip
    out[report.metric] = s[f"selected {report.metric}"]
    out[report.test_metric] = s[f"selected {report.test_metric}"]
    return out


def margin_table(report: Report) -> pd.DataFrame:
    """What `vaestudy run` prints under the answer: each confirmed variant's margin on each of
    its constraints, with its interval, verdict and, for an undecided one, why it stopped."""
    m = report.margins
    if m is None or not len(m):
        return pd.DataFrame()
    out = m[["variant", "constraint", "seeds"]].copy()
    out[f"margin [{report.race.level_text().split(' ')[0]}]"] = [
        ci_text(*r) for r in zip(m["margin mean"], m["margin low"], m["margin high"], strict=True)
    ]
    out["verdict"] = m["verdict"]
    out["stopped"] = m["stopped"]
    return out


def log_answer(client: MlflowClient, report: Report) -> None:
    """Per variant `trials/`, `feasible/`, `satisfy_own/`, `satisfy_yardstick/`, `saturated/`
    counts and the study-wide `feasible` count as metrics of the parent run (with confirmation,
    `confirmed/<own|yardstick|feasible>_<rate|low|high>/<variant>`, the confirmed mean, the
    seeds, `confirmed/margin_<mean|low|high>/<constraint>/<variant>`, and the verdict and rank
    as tags `vaestudy.verdict.<variant>`, `vaestudy.rank.<variant>`); the
    trial selected on validation (run id and name) as tags (`vaestudy.best_feasible`, per variant
    `vaestudy.best_feasible.<variant>`) and its test metrics as `best_feasible/<metric>`; the
    answer in one line as the tag `vaestudy.answer` and atop the run's description (its note in
    the MLflow UI), the per-variant table below it; the report's tables as `report/report.md`."""
    metrics = {"feasible": float(report.summary["feasible"].sum())}
    tags = {TAG_ANSWER: answer(report)}
    trials = report.trials.set_index("trial")
    for row in report.summary.itertuples():
        key = file_name(row.variant)
        for count in ("trials", "feasible", "satisfy_own", "satisfy_yardstick", "saturated"):
            metrics[f"{count}/{key}"] = float(getattr(row, count))
        if row.selected:
            tags[f"{TAG_BEST}.{key}"] = trials.loc[row.selected, "run_id"]
    c = report.confirmation
    for row in [] if c is None else c.to_dict("records"):
        key = file_name(row["variant"])
        for name in ("own", "yardstick", "feasible"):
            k, n = (int(v) for v in row[name].split("/"))
            metrics |= {
                f"confirmed/{name}_rate/{key}": k / n,
                f"confirmed/{name}_low/{key}": row[f"{name}_low"],
                f"confirmed/{name}_high/{key}": row[f"{name}_high"],
            }
        mean = row[f"{report.test_metric} mean"]
        if math.isfinite(mean):
            metrics[f"confirmed/{report.test_metric}/{key}"] = mean
        metrics[f"confirmed/seeds/{key}"] = float(row["seeds"])
        tags |= {f"{TAG_VERDICT}.{key}": row["constraints"], f"{TAG_RANK}.{key}": row["rank"]}
    for row in [] if report.margins is None else report.margins.to_dict("records"):
        key = f"{metric_name(row['constraint'])}/{file_name(row['variant'])}"
        for part in ("mean", "low", "high"):
            if math.isfinite(row[f"margin {part}"]):
                metrics[f"confirmed/margin_{part}/{key}"] = row[f"margin {part}"]
    best = report.best_feasible()
    if best is not None:
        tags |= {TAG_BEST: best["run_id"], f"{TAG_BEST}_trial": best["trial"]}
        for name in dict.fromkeys([report.metric, *_SHOWN_METRICS]):
            if math.isfinite(best[name]):
                metrics[f"best_feasible/{name}"] = float(best[name])
    from vaestudy.tracking.runs import log_study_answer

    note = client.get_run(report.parent_run_id).data.tags.get(TAG_NOTE, "")
    tags[TAG_NOTE] = _described(note, report)
    log_study_answer(client, report.parent_run_id, metrics, tags, report.markdown())


def _described(note: str, report: Report) -> str:
    """The parent run's description (`vaestudy.study.description`) with the answer above it
    and the per-variant table below it, replacing those of an earlier end (a resumed study)."""
    head = note.split(SUMMARY_HEADING)[0]
    if head.startswith(ANSWER_PREFIX):
        head = head.partition("\n\n")[2]
    if head.startswith(f"[{COMPARE_LINK}]"):
        head = head.partition("\n\n")[2]
    confirmed = report.confirmation
    table = _md(report.summary if confirmed is None else answer_table(report))
    if confirmed is not None:
        table += f"\n\n{_margins_note(report)}\n\n{_md(margin_table(report))}"
    compare = view_url("", report.experiment_id, view_key(report))
    described = (
        f"{ANSWER_PREFIX}{answer(report)}\n\n[{COMPARE_LINK}]({compare})\n\n{head.rstrip()}\n\n"
        f"{SUMMARY_HEADING}\n\n{report.rules_text()}\n\n{table}\n"
    )
    return described[:MAX_TAG_CHARS]  # the table is in report/report.md in full
