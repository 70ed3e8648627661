"""Study throughput: trials per hour through the whole stack, and what Ray + MLflow add per trial.

    python -m benchmarks.study_throughput --data ../shared/data [--trials 8] [--epochs 1] [--pack 4]

Runs, in one process and side by side, the same small GECO study (studies/geco.yaml with the
overrides printed at the top; the search is over κ and λ's initial value, which packed trials
may differ in, in every row):

- `in-process`: each trial's config trained by `Trainer` directly, one after another (training
  plus the full held-out evaluation; no Ray, no MLflow): the floor.
- `study, 1 at a time` / `study, N at a time`: `run_study` with real Ray Tune, Optuna and a
  loopback MLflow server, every trial logging its trajectory, metrics and artifacts.
- `study, packs of K`: `study.pack = K`, one pack at a time: K trials per Ray Tune trial as one
  vectorised computation (`VectorTrainer`), each still with its own MLflow run and Optuna result.
- `Ray Tune, empty trials`: the same number of trials of a function that only reports once:
  Tune's own per-trial cost (scheduling, worker, result handling).

Steady-state time per trial (1 at a time) comes from the MLflow runs: the median time from one
trial's end to the next one's end. Ray + MLflow per-trial overhead = that − the in-process time
per trial; the rest of the study's wall time is a fixed cost per study. The MLflow server start
(once per session) is timed separately and is not in the rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.tracking.stores import serve
from vaestudy.tracking.tags import PARENT
from vaestudy.training.trainer import Trainer

STUDY = Path(__file__).resolve().parents[1] / "studies" / "geco.yaml"


SEARCH = (
    '{"objective.kappa": {"uniform": [80.0, 120.0]}, '
    '"objective.multiplier.init": {"loguniform": [0.1, 10.0]}}'
)


def overrides(args: argparse.Namespace, concurrent: int, name: str, pack: int = 1) -> list[str]:
    return [
        f"data.root={Path(args.data).resolve()}",
        f"data.train_limit={args.train_limit}",
        "data.test_limit=500",
        f"train.epochs={args.epochs}",
        "train.iwae_samples=20",
        f"train.device={args.device}",
        f"study.resources.gpu={0 if args.device == 'cpu' else round(1 / concurrent, 3)}",
        f"study.num_trials={args.trials}",
        f"study.max_concurrent={concurrent}",
        f"study.resources.cpu={os.cpu_count() / concurrent:g}",
        f"study.name={name}",
        f"study.pack={pack}",
        f"study.search={SEARCH}",
    ]


def in_process(args: argparse.Namespace) -> float:
    study = load_study(STUDY, overrides(args, 1, "inprocess"))
    start = time.perf_counter()
    for seed in range(args.trials):
        cfg = study.trial_config({"train.seed": seed})
        trainer = Trainer(cfg)
        trainer.fit()
    return time.perf_counter() - start


def through_study(
    args: argparse.Namespace, concurrent: int, uri: str, pack: int = 1
) -> tuple[float, float]:
    """Wall time of the study, and the steady-state time per trial: the median, over trials
    after the first, of one MLflow run's end to the next one's (meaningful 1 at a time)."""
    name = f"bench-c{concurrent}-p{pack}-{time.time_ns()}"
    study = load_study(STUDY, overrides(args, concurrent, name, pack))
    start = time.perf_counter()
    outcome = run_study(study, tracking_uri=uri)
    wall = time.perf_counter() - start
    if outcome.finished + outcome.failed < args.trials:
        raise SystemExit(f"study with {concurrent} at a time ended early: {outcome}")
    client = MlflowClient(uri)
    runs = client.search_runs(
        [client.get_run(outcome.parent_run_id).info.experiment_id],
        filter_string=f"tags.`{PARENT}` = '{outcome.parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    ends = [r.info.end_time for r in runs]
    steady = [(b.info.end_time - a) / 1000 for a, b in zip(ends, runs[1:], strict=False)]
    return wall, statistics.median(steady)


def empty_trials(args: argparse.Namespace, storage: str) -> float:
    from ray import tune

    def trainable(config: dict) -> None:
        tune.report({"score": config["x"]})

    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            num_samples=args.trials, max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=storage, name="empty", verbose=0),
    ).fit()
    return time.perf_counter() - start


def main() -> None:
    import ray  # after vaestudy, which sets Ray's environment (no `uv run` workers)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: concurrent trials share it")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--pack", type=int, default=4, help="trials per pack (vectorised)")
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())  # before the chdir into a fresh folder below
    cores = os.cpu_count() or 1
    print(f"GECO MLP VAE, {args.trials} trials of {args.epochs:g} epoch(s) on ")
    print(f"{args.train_limit} images, CPU ({cores} cores); overrides: {overrides(args, 1, '-')}\n")

    rows: list[tuple[str, float, float | None]] = []
    inproc = in_process(args)
    rows.append(("in-process, 1 at a time (Trainer only)", inproc, inproc / args.trials))
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR")
        started = time.perf_counter()
        with serve(f"sqlite:///{Path(tmp) / 'mlflow' / 'mlflow.db'}") as uri:
            server_start = time.perf_counter() - started
            rows.append(("vaestudy study, 1 at a time", *through_study(args, 1, uri)))
            wall, _ = through_study(args, cores, uri)
            rows.append((f"vaestudy study, {cores} at a time", wall, None))
            wall, _ = through_study(args, 1, uri, args.pack)
            rows.append((f"vaestudy study, packs of {args.pack}, 1 pack at a time", wall, None))
        empty = empty_trials(args, tmp)
        rows.append(("Ray Tune, empty trials, 1 at a time", empty, None))
        ray.shutdown()

    print("| mode | wall s | s per trial (wall) | trials/h (wall) | s per trial, steady state |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, steady in rows:
        per = wall / args.trials
        shown = f"{steady:.2f}" if steady is not None else "-"
        print(f"| {name} | {wall:.1f} | {per:.2f} | {3600 / per:,.0f} | {shown} |")
    study_steady = rows[1][2] or 0.0
    print(
        f"\nRay + MLflow per trial, steady state: {study_steady - inproc / args.trials:.2f} s "
        f"(of which Ray Tune alone: {empty / args.trials:.2f} s); fixed cost per study "
        f"(Ray workers' start, Tune set-up and tear-down): "
        f"{rows[1][1] - args.trials * study_steady:.1f} s"
    )
    print(f"MLflow server start (once per session, not in the rows): {server_start:.1f} s")


if __name__ == "__main__":
    main()
