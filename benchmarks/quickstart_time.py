"""Where the quick start's wall time goes: one `vaestudy run` of a study, split into phases.

Runs the CLI as a user would (a fresh process, in a fresh folder, so the local MLflow store and
Ray start from nothing) and reads the phase times `vaestudy run` logs to the study's log file
(`vaestudy.study.console.mark`). The tracking server starts first and runs in the background
while the CLI starts Ray and imports MLflow, Optuna and Tune; "tracking server (wait)" is what
is left of its start-up after that. Trial processes import torch when their first trial starts.
Then, from the study's store (read with SQL): when the first trial's MLflow run opened (its
worker had imported torch; training starts right after), and the trials' in-process compute:
each trial logs `time/compute_s` (building its Trainer, training, evaluating; MLflow and Tune's
calls left out), summed and divided by the study's `max_concurrent`: the wall time the trials
would take with neither Ray nor MLflow. Issue 26's targets: first step <= 10 s, wall <= 1.25x
that compute. With confirmation, the confirmation phase's wall time per confirmed seed (from its
first run's start to the end of the trials).

    python -m benchmarks.quickstart_time                      # the README's quick start
    python -m benchmarks.quickstart_time --study studies/cpu/geco.yaml --set study.num_trials=4
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vaestudy.study.spec import load_study
from vaestudy.tracking.run_reader import SqliteReader
from vaestudy.tracking.tags import CONFIRM, TAG_PHASE

REPO = Path(__file__).resolve().parents[1]
PHASES = [  # (mark that ends the phase, what the phase is)
    ("preflight", "python start, CLI, study file and preflight checks"),
    ("ray start", "Ray start (tracking server starting meanwhile)"),
    ("imports", "driver imports: MLflow, Optuna, Tune, pandas (server starting meanwhile)"),
    ("tracking server", "tracking server (wait for what is left of its start)"),
    ("first trial started", "parent run, Optuna study, Tune set-up, trial processes start"),
    ("trials", "trials"),
    ("report", "outcome: runs counted, report read back, answer logged, parent run closed"),
    ("stopped", "session stopped: tracking server and Ray, at once"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/cpu/compare.yaml")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    study = (REPO / args.study).resolve()
    sets = [f"data.root={Path(args.data).resolve()}", *args.set]
    cmd = [sys.executable, "-m", "vaestudy.cli", "run", str(study)]
    cmd += [item for s in sets for item in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with tempfile.TemporaryDirectory() as folder:
        start = time.time()
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        end = time.time()
        if proc.returncode != 0:
            sys.exit(f"vaestudy run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        logs = list(Path(folder, "ray_results").glob("*.log"))
        marks = dict(re.findall(r"phase (.+) (\d+\.\d+)$", logs[0].read_text(), re.MULTILINE))
        spec = load_study(str(study), args.set).spec
        store = SqliteReader(Path(folder) / "mlflow" / "mlflow.db")
        trials = store.trial_runs(store.study_runs(spec.name)[0])
        first_run = min(t.start_time for t in trials) / 1000 - start
        compute = sum(t.metrics.get("time/compute_s", 0.0) for t in trials) / spec.max_concurrent
        confirmed = [t for t in trials if t.tags.get(TAG_PHASE) == CONFIRM]
    print(f"`vaestudy run {args.study}` ({' '.join(f'--set {s}' for s in args.set) or 'as is'})")
    print(f"machine: {os.cpu_count()} CPUs\n")
    print("| phase | seconds | share |\n|:--|--:|--:|")
    total, last = end - start, start
    for key, label in PHASES:
        at = float(marks[key])
        print(f"| {label} | {at - last:.1f} | {(at - last) / total:.0%} |")
        last = at
    print(f"| exit (answer printed) | {end - last:.1f} | {(end - last) / total:.0%} |")
    print(f"| **total wall time** | **{total:.1f}** | |")
    print(f"\nfirst trial's run opened (its training starts): {first_run:.1f} s after the command")
    print(
        f"trials' in-process compute: {compute:.1f} s ({len(trials)} trials' time/compute_s, "
        f"{spec.max_concurrent} at a time); wall / compute: {total / compute:.2f}x"
    )
    if confirmed:  # from the first confirmation run's start to the end of the trials
        began = min(t.start_time for t in confirmed) / 1000
        wall = float(marks["trials"]) - began
        print(
            f"confirmation: {len(confirmed)} seeds in {wall:.1f} s wall, "
            f"{wall / len(confirmed):.2f} s per confirmed seed (search before it: "
            f"{began - first_run - start:.1f} s from the first trial's run)"
        )


if __name__ == "__main__":
    main()
