"""Which sampler finds good feasible settings on the budgets people run: random search, TPE and
the GP sampler (with and without stopping hopeless trials), several sampler seeds, side by side.

    python -m benchmarks.constrained_search --data ../shared/data [--seeds 0 1 2 3 4] [--jobs 2]

Two studies, as shipped except for the sampler (`study.sampler.kind`, `study.stop_hopeless`):

- `studies/cpu/geco.yaml`: 16 trials over κ, ν and the moving average; minimise validation KL
  among trials feasible on validation (own constraint recon <= κ, the yardstick recon <= 125, no
  saturated multiplier);
- `studies/cpu/compare.yaml`: its per-variant budget (3 trials for each of 8 objective variants,
  each searching its own keys); minimise validation IWAE NLL among feasible trials (yardstick
  recon <= 135, kl <= 30, and each objective's own constraints); its confirmation is not run.

Each (study, method, seed) runs through vaestudy's own search (`make_search`: the Ray Tune
searcher on a real Optuna study, told each trial's final report as a study trial tells it) and
trains every trial in full with `Trainer`, one trial at a time; with `+stop` the study's
`HopelessStopper` sees every evaluation, as Tune shows it, and a trial it stops ends there and is
told as Tune would end it. No Ray runtime, no MLflow: the table measures the search. `--jobs`
runs that many (study, method, seed) runs at once, each on cores/jobs threads, so every row's
wall time is measured under the same load. Everything is read on the validation split.

Per method: the feasible fraction, the best feasible validation value (mean ± sd over seeds, and
per seed), the trials to the first feasible one, the trials stopped as hopeless, and the mean
wall time of one study run. The noise: each study's base configuration trained with `--noise`
seeds gives the standard deviation σ of its metric between seeds; a difference between two
single runs within 1.96·√2·σ is within the noise, and the table counts, per method, the seeds
whose best differs from random's by less than that.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import base_parser
from vaestudy.study.hopeless import HopelessStopper
from vaestudy.study.search import make_search
from vaestudy.study.spec import Study, load_study
from vaestudy.study.trial import final_report, tune_metrics
from vaestudy.training.feasibility import judge
from vaestudy.training.trainer import Diverged, Trainer

STUDIES = Path(__file__).resolve().parents[1] / "studies" / "cpu"
METHODS = {
    "random": ["study.sampler.kind=random"],
    "tpe": ["study.sampler.kind=tpe"],
    "gp": ["study.sampler.kind=gp"],
    "tpe+stop": ["study.sampler.kind=tpe", "study.stop_hopeless={}"],  # its defaults
    "gp+stop": ["study.sampler.kind=gp", "study.stop_hopeless={}"],
}


class _Stop(Exception):
    """The stopper stopped the trial at an evaluation."""


@dataclass
class Outcome:
    study: str
    method: str
    seed: int
    trials: int
    feasible: int
    best: float | None
    first_feasible: int | None  # 1-based
    stopped: int
    wall_s: float


_DATA: dict[str, Any] = {}


def _data(study: Study):
    """The study's data, loaded once per process."""
    if "data" not in _DATA:
        _DATA["data"] = Trainer(study.trial_config({})).data
    return _DATA["data"]


def run_study(name: str, overrides: list[str], method: str, seed: int) -> Outcome:
    """One study run through its search (see the module doc)."""
    study = load_study(STUDIES / f"{name}.yaml", [*overrides, f"study.sampler.seed={seed}"])
    data = _data(study)
    metric = study.spec.metrics[0].removeprefix("val/")
    stopper = HopelessStopper(study) if study.spec.stop_hopeless is not None else None
    start = time.perf_counter()
    values: list[float | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        search = make_search(study, f"sqlite:///{tmp}/optuna.db", "bench",
                             stopped=stopper.stopped if stopper else None)  # fmt: skip
        for i in range(study.spec.num_trials):
            tid = f"t{i}"
            trainer = Trainer(study.trial_config(search.suggest(tid)), data)
            last: dict[str, Any] = {}

            def on_eval(step: int, quick: dict[str, float], tid=tid, trainer=trainer) -> None:
                nonlocal last
                progress = trainer.step / trainer.total_steps
                last = tune_metrics(study, quick, trainer.history[-1], progress)
                if stopper is not None and stopper(tid, last):
                    raise _Stop

            try:
                result = trainer.fit(on_eval=on_eval)
                report = final_report(study, result)
            except Diverged:
                result, report = None, final_report(study, None)
            except _Stop:
                result, report = None, last
            if stopper is not None and tid not in stopper.stopped:
                stopper(tid, report)  # its end: what it recovered
            search.on_trial_complete(tid, report)
            feasible = (
                result is not None
                and judge(result.val, study.spec.constraints, result.saturated).feasible
            )
            values.append(result.val[metric] if feasible else None)
    found = [v for v in values if v is not None]
    first = next((i + 1 for i, v in enumerate(values) if v is not None), None)
    stopped = len(stopper.stopped) if stopper else 0
    wall = time.perf_counter() - start
    return Outcome(name, method, seed, len(values), len(found), min(found, default=None), first,
                   stopped, wall)  # fmt: skip


def seed_noise(name: str, overrides: list[str], seeds: int) -> float:
    """σ of the study metric on validation between seeds of the study's base configuration."""
    study = load_study(STUDIES / f"{name}.yaml", overrides)
    metric = study.spec.metrics[0].removeprefix("val/")
    values = []
    for seed in range(seeds):
        cfg = study.trial_config({"train.seed": 5000 + seed})
        values.append(Trainer(cfg, _data(study)).fit().val[metric])
    return statistics.stdev(values)


def _init(threads: int) -> None:
    torch.set_num_threads(threads)


def _mean_sd(values: list[float], digits: str = ".3g") -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{digits}} ± {sd:.2g}"


def table(name: str, outcomes: list[Outcome], sigma: float, seeds: list[int]) -> None:
    """One study's side-by-side table, then the per-seed figures."""
    within = 1.96 * math.sqrt(2) * sigma
    random_best = {o.seed: o.best for o in outcomes if o.method == "random"}
    print(f"\n### {name}: σ between seeds of one configuration = {sigma:.3g}; within the noise: "
          f"|difference| < 1.96·√2·σ = {within:.3g}\n")  # fmt: skip
    print("| method | feasible fraction | best feasible (mean ± sd) | better than random "
          "(seeds) | within the noise of random | trials to first feasible | stopped hopeless "
          "| wall s per study run |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    methods = list(dict.fromkeys(o.method for o in outcomes))
    for method in methods:
        rows = sorted((o for o in outcomes if o.method == method), key=lambda o: o.seed)
        bests = [o.best for o in rows if o.best is not None]
        none = [o.seed for o in rows if o.best is None]
        paired = [(o.best, random_best.get(o.seed)) for o in rows]
        paired = [(b, r) for b, r in paired if b is not None and r is not None]
        better = "-" if method == "random" else f"{sum(b < r for b, r in paired)}/{len(paired)}"
        noise = "-" if method == "random" else f"{sum(abs(b - r) < within for b, r in paired)}"
        firsts = [o.first_feasible for o in rows if o.first_feasible is not None]
        print("| " + " | ".join([
            method,
            _mean_sd([o.feasible / o.trials for o in rows], ".2f"),
            _mean_sd(bests) + (f" (none feasible: seeds {none})" if none else ""),
            better,
            noise,
            _mean_sd([float(f) for f in firsts], ".1f"),
            f"{sum(o.stopped for o in rows)}/{sum(o.trials for o in rows)}",
            f"{statistics.mean(o.wall_s for o in rows):.0f}",
        ]) + " |")  # fmt: skip
    print("\nPer seed (feasible of trials / best feasible):")
    for method in methods:
        rows = sorted((o for o in outcomes if o.method == method), key=lambda o: o.seed)
        cells = [f"{o.feasible}/{o.trials} / {'-' if o.best is None else f'{o.best:.1f}'}"
                 for o in rows]  # fmt: skip
        print(f"- {method}: " + "; ".join(cells))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--studies", nargs="+", default=["geco", "compare"])
    parser.add_argument("--geco-methods", nargs="+", default=list(METHODS))
    parser.add_argument("--compare-methods", nargs="+", default=["random", "tpe", "gp"])
    parser.add_argument("--geco-trials", type=int, help="override studies/cpu/geco's 16 trials")
    parser.add_argument("--compare-budget", type=int, help="override compare's 3 per variant")
    parser.add_argument("--epochs", type=float, help="override each study's train.epochs")
    parser.add_argument(
        "--noise", type=int, default=5, help="seeds of the base configuration (>= 2)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="study runs at once")
    args = parser.parse_args()
    common = [f"data.root={Path(args.data).resolve()}", f"train.device={args.device}"]
    common += [f"train.epochs={args.epochs}"] if args.epochs else []
    extra = {
        "geco": [f"study.num_trials={args.geco_trials}"] if args.geco_trials else [],
        "compare": [f"study.budget_per_variant={args.compare_budget}"]
        if args.compare_budget
        else [],
    }
    methods = {"geco": args.geco_methods, "compare": args.compare_methods}
    jobs = [
        (name, [*common, *extra[name], *METHODS[method]], method, seed)
        for name in args.studies for method in methods[name] for seed in args.seeds
    ]  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init,
                             initargs=(threads,)) as pool:  # fmt: skip
        noise = {
            n: pool.submit(seed_noise, n, [*common, *extra[n]], args.noise) for n in args.studies
        }
        futures = [pool.submit(run_study, *job) for job in jobs]
        outcomes = []
        for future in futures:
            outcome = future.result()
            outcomes.append(outcome)
            print(f"{outcome.study} {outcome.method} seed {outcome.seed}: {outcome.feasible}/"
                  f"{outcome.trials} feasible, best {outcome.best}, {outcome.wall_s:.0f} s",
                  flush=True)  # fmt: skip
        sigma = {n: f.result() for n, f in noise.items()}
    print(f"\ndevice {args.device}, {args.jobs} run(s) at once, {threads} thread(s) each; seeds "
          f"{args.seeds}; all figures on the validation split; total "
          f"{(time.perf_counter() - start) / 60:.1f} min")  # fmt: skip
    for name in args.studies:
        table(name, [o for o in outcomes if o.study == name], sigma[name], args.seeds)


if __name__ == "__main__":
    main()
