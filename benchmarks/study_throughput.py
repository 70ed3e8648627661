"""Study throughput: trials per hour through the whole stack, and what Ray + MLflow add per trial.

    python -m benchmarks.study_throughput --data ../shared/data [--trials 8] [--epochs 1]

Runs, in one process and side by side, the same small GECO study (studies/geco.yaml with the
overrides printed at the top):

- `in-process`: each trial's config trained by `Trainer` directly, one after another (training
  plus the full held-out evaluation; no Ray, no MLflow): the floor.
- `study, 1 at a time` / `study, N at a time`: `run_study` with real Ray Tune, Optuna and a
  loopback MLflow server, every trial logging its trajectory, metrics and artifacts.
- `Ray Tune, empty trials`: the same number of trials of a function that only reports once:
  Tune's own per-trial cost (scheduling, worker, result handling).

Per-trial overhead = study wall time per trial (1 at a time) − in-process time per trial. The
MLflow server start (paid once per study) is timed separately and excluded from the study rows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking import serve
from vaestudy.trainer import Trainer

STUDY = Path(__file__).resolve().parents[1] / "studies" / "geco.yaml"


def overrides(args: argparse.Namespace, concurrent: int, name: str) -> list[str]:
    return [
        f"data.root={Path(args.data).resolve()}",
        f"data.train_limit={args.train_limit}",
        "data.test_limit=500",
        f"train.epochs={args.epochs}",
        "train.iwae_samples=20",
        "train.device=cpu",
        f"study.num_trials={args.trials}",
        f"study.max_concurrent={concurrent}",
        f"study.resources.cpu={os.cpu_count() / concurrent:g}",
        f"study.name={name}",
    ]


def in_process(args: argparse.Namespace) -> float:
    study = load_study(STUDY, overrides(args, 1, "inprocess"))
    start = time.perf_counter()
    for seed in range(args.trials):
        cfg = study.trial_config({"train.seed": seed})
        trainer = Trainer(cfg)
        trainer.fit()
    return time.perf_counter() - start


def through_study(args: argparse.Namespace, concurrent: int, uri: str) -> float:
    study = load_study(STUDY, overrides(args, concurrent, f"bench-c{concurrent}-{time.time_ns()}"))
    start = time.perf_counter()
    outcome = run_study(study, tracking_uri=uri)
    wall = time.perf_counter() - start
    if outcome.finished + outcome.failed < args.trials:
        raise SystemExit(f"study with {concurrent} at a time ended early: {outcome}")
    return wall


def empty_trials(args: argparse.Namespace, storage: str) -> float:
    def trainable(config: dict) -> None:
        tune.report({"score": config["x"]})

    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=args.trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=storage, name="empty", verbose=0),
    ).fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train-limit", type=int, default=4000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"GECO MLP VAE, {args.trials} trials of {args.epochs:g} epoch(s) on ")
    print(f"{args.train_limit} images, CPU ({cores} cores); overrides: {overrides(args, 1, '-')}\n")

    rows: list[tuple[str, float]] = [("in-process, 1 at a time (Trainer only)", in_process(args))]
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR")
        started = time.perf_counter()
        with serve(f"sqlite:///{Path(tmp) / 'mlflow' / 'mlflow.db'}") as uri:
            server_start = time.perf_counter() - started
            rows.append(("vaestudy study, 1 at a time", through_study(args, 1, uri)))
            rows.append((f"vaestudy study, {cores} at a time", through_study(args, cores, uri)))
        rows.append(("Ray Tune, empty trials, 1 at a time", empty_trials(args, tmp)))
        ray.shutdown()

    print("| mode | wall s | s per trial | trials per hour |")
    print("|---|---:|---:|---:|")
    for name, wall in rows:
        per = wall / args.trials
        print(f"| {name} | {wall:.1f} | {per:.2f} | {3600 / per:,.0f} |")
    floor = rows[0][1] / args.trials
    print(
        f"\nRay + MLflow overhead per trial (1 at a time): {rows[1][1] / args.trials - floor:.2f} s"
    )
    print(f"Ray Tune alone per trial: {rows[3][1] / args.trials:.2f} s")
    print(f"MLflow server start (once per study, not in the rows): {server_start:.1f} s")


if __name__ == "__main__":
    main()
