"""What `vaestudy run` shows: one progress display for the study, and nothing else.

The display (`StudyProgress`, a Ray Tune callback on the driver) has a row per trial: its
variant, status, last step, training loss, each constraint's status on the latest held-out
check (`✓` value <= target, `✗` not yet) and λ; under it, how many trials run, wait and ended,
and why the waiting ones wait. On a terminal it redraws in place; otherwise (a log, CI) it
prints a line per trial that ends and the final table.

Library chatter (Ray's, Tune's, Optuna's, MLflow's and Python warnings) goes to the study's
log file instead (`quiet_libraries`), with the times at which the run's phases ended (`mark`);
trial processes' own output stays in Ray's session logs.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vaestudy.config.dotted import unprefixed
from vaestudy.study.report_keys import DIVERGED, member_key, member_prefix
from vaestudy.study.spec import Study, trial_label

_COLUMNS = ("trial", "variant", "status", "step", "loss", "constraints", "λ")
_LIBRARIES = ("vaestudy", "ray", "optuna", "mlflow", "alembic", "urllib3", "py.warnings")
_PHASES = logging.getLogger("vaestudy.phases")


def mark(phase: str) -> None:
    """Log the wall-clock time at which `phase` of a study ended (to the study's log file:
    `benchmarks/quickstart_time.py` splits a run's wall time with these)."""
    _PHASES.info("phase %s %.3f", phase, time.time())


def quiet_libraries(log_file: Path) -> None:
    """Send the libraries' log records and Python warnings to `log_file`, not the console. Call
    it again after importing Ray, Optuna and MLflow: some install their handlers on import."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in _LIBRARIES:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
            if isinstance(old, logging.FileHandler):
                old.close()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.captureWarnings(True)
    logging.raiseExceptions = False  # a log write that fails (a full disk) is not a traceback
    warnings.simplefilter("default")
    # Tune warns about checkpoint syncing every few seconds with many short trials, and its
    # newer output engine prints an experiment header (and a TensorBoard hint) even when silent.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def constraint_marks(result: dict[str, Any]) -> str:
    """`recon 101.2/110 ✓` per constraint, from a trial's latest validation check."""
    marks = []
    for key in sorted(result):
        if key.startswith("val/constraint/"):
            name = key.removeprefix("val/constraint/")
            target = result.get(f"val/target/{name}")
            if target is None:
                continue
            ok = "✓" if result[key] <= target else "✗"
            marks.append(f"{name} {_fmt(result[key])}/{_fmt(target)} {ok}")
    return ", ".join(marks)


def _lambdas(result: dict[str, Any]) -> str:
    keys = sorted(k for k in result if k.startswith("train/lambda/"))
    return ", ".join(f"{k.removeprefix('train/lambda/')} {_fmt(result[k])}" for k in keys)


class StudyProgress:
    """Rows per trial plus a status line; fed by `TuneProgress` (a Tune callback)."""

    def __init__(self, study: Study, log_file: Path, console: Console | None = None) -> None:
        self.study = study
        self.log_file = log_file
        self.console = console or Console(highlight=False)
        self.rows: dict[str, dict[str, str]] = {}
        self.run_name = ""
        self.live = Live(self.render(), console=self.console, auto_refresh=False)

    def started(self, run_name: str, parent_run_id: str, optuna_storage: str) -> None:
        """The study run is known: name it in the table's title and say where to find it."""
        self.run_name = run_name
        self.live.console.print(
            f"run {run_name!r} of study {self.study.name!r}: MLflow parent run {parent_run_id}; "
            f"Optuna study {run_name!r} in {optuna_storage}",
            markup=False,
            soft_wrap=True,  # ids and paths stay whole, to copy
        )

    def __enter__(self) -> StudyProgress:
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self.live.update(self.render(), refresh=True)
            self.live.stop()
        else:
            self.console.print(self.render())

    def update(self, trial_id: str, config: dict[str, Any], **fields: str) -> None:
        fields.setdefault("status", "starting")
        if not self.rows:
            mark("first trial started")
        label = trial_label(config) or str(len(self.rows) + 1)  # as in the MLflow run name
        row = self.rows.setdefault(trial_id, {"trial": label})
        if "variant" not in row:
            try:
                row["variant"] = self.study.variant(config)
            except Exception:  # noqa: BLE001 - a label only; never stop the study for it
                row["variant"] = "?"
        row.update(fields)
        if self.console.is_terminal:
            self.live.update(self.render(), refresh=True)

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        self.update(
            trial_id,
            config,
            status="running",
            step=_fmt(int(result.get("train/step", 0))),
            loss=_fmt(result.get("train/loss", "")),
            constraints=constraint_marks(result),
            λ=_lambdas(result),
        )

    def ended(self, trial_id: str, config: dict[str, Any], status: str, note: str = "") -> None:
        self.update(trial_id, config, status=status)
        row = self.rows[trial_id]
        if not self.console.is_terminal or note:
            line = f"trial {row['trial']} ({row['variant']}) {status}"
            extra = f"; {row['constraints']}" if row.get("constraints") else ""
            self.live.console.print(f"{line}{extra}{f': {note}' if note else ''}", markup=False)

    def render(self) -> Group:
        title = f"study {self.study.name}" + (f", run {self.run_name}" if self.run_name else "")
        table = Table(title=title, title_justify="left")
        for column in _COLUMNS:
            justify = "right" if column in ("step", "loss") else "left"
            table.add_column(column, justify=justify, overflow="fold")  # whole labels
        for row in self.rows.values():
            table.add_row(*(Text(row.get(c, "")) for c in _COLUMNS))  # "[...]" is no markup
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
        running = counts.get("running", 0) + counts.get("starting", 0)
        waiting = self.study.spec.num_trials - len(self.rows)
        waits = (
            f"; {waiting} waiting for a free slot (at most {self.study.spec.max_concurrent} at "
            f"a time, {self.study.spec.resources.label} each)"
            if waiting > 0 and running
            else ""
        )
        done = ", ".join(f"{n} {s}" for s, n in counts.items() if s not in ("running", "starting"))
        status = Text(
            f"{running} running{waits}{'; ' + done if done else ''}. Log: {self.log_file}",
            style="dim",
        )
        return Group(table, status)


def error_cause(trial: Any) -> str:
    """The exception that ended a Tune trial (`Type: message`, its traceback's last line, cut
    to 200 characters), or what is known when its error file cannot be read."""
    try:
        lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
    except (OSError, TypeError):
        return "no error file"
    found = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
    return textwrap.shorten((found or lines or ["an empty error file"])[-1], 200)


def _members(trial: Any, result: dict[str, Any] | None = None):
    """(key, config, result) per trial the Tune trial trains: itself, or each member of a pack
    (`{"members": [...]}`, results under `member<i>/`), as its MLflow runs are keyed."""
    members = trial.config.get("members")
    if members is None:
        yield trial.trial_id, trial.config, result or {}
        return
    for i, config in enumerate(members):
        yield member_key(trial.trial_id, i), config, unprefixed(result or {}, member_prefix(i))


def tune_callback(progress: StudyProgress):
    """A Ray Tune callback feeding `progress` (Ray is imported here, not at module import)."""
    from ray import tune

    class TuneProgress(tune.Callback):
        def __init__(self, shown: StudyProgress) -> None:
            self.progress: StudyProgress | None = shown

        def __getstate__(self) -> dict[str, Any]:
            return {"progress": None}  # Tune saves its run config; the display stays here

        def _show(self, method: str, trial, *args: Any) -> None:
            if self.progress is not None:
                for key, config, _ in _members(trial):
                    getattr(self.progress, method)(key, config, *args)

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self._show("update", trial)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if self.progress is not None:
                for key, config, own in _members(trial, result):
                    self.progress.result(key, config, own)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            if self.progress is None:
                return
            for key, config, last in _members(trial, trial.last_result or {}):
                diverged = last.get(DIVERGED)
                status = (
                    "stopped early" if diverged is None else "diverged" if diverged else "ended"
                )
                self.progress.ended(key, config, status)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            where = getattr(trial, "path", None) or "the study log"
            self._show("ended", trial, "errored", f"{error_cause(trial)}; error.txt in {where}")

    return TuneProgress(progress)
