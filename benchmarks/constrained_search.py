"""Constraint-aware search against plain TPE and random search, same budget.

    python -m benchmarks.constrained_search --data ../shared/data [--trials 24] [--seeds 0 1 2]

The study is `studies/cpu/geco.yaml` (minimise validation KL; yardstick recon <= 125 nats and each
trial's own constraint recon <= κ, both on the validation split, as the search sees them). Each
method runs `--trials` trials per sampler seed through vaestudy's own search (`make_search`: the Ray
Tune searcher Tune drives, on a real Optuna study) and trains every trial in this process with
`Trainer`, telling the search each trial's final report as a study trial does
(`study.trial.final_report`); no Ray runtime, no MLflow, so the table measures the search alone:

- `constraint-aware TPE`: the study as shipped, `search_constraints: both`;
- `plain TPE`: the same sampler and seed, `search_constraints: none` (the search sees only KL);
- `random`: Optuna's RandomSampler with the same seed.

Every trial is judged by the report's rule (`vaestudy.training.feasibility.judge`: own constraints,
no saturated multiplier, and the yardstick). The table gives, per method, the feasible fraction and
the best feasible validation KL (mean and standard deviation over the seeds; a seed with no feasible
trial counts as missing and is named), and the wall time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import base_parser, device_name
from vaestudy.study.search import make_search
from vaestudy.study.spec import Study, load_study
from vaestudy.study.trial import final_report
from vaestudy.training.feasibility import judge
from vaestudy.training.trainer import Diverged, Trainer

STUDY = Path(__file__).resolve().parents[1] / "studies" / "cpu" / "geco.yaml"
METHODS = {
    "constraint-aware TPE": ["study.search_constraints=both"],
    "plain TPE": ["study.search_constraints=none"],
    "random": ["study.sampler.kind=random"],
}


def run_method(study: Study, folder: Path, data) -> tuple[int, float | None]:
    """Run the study's trials through its search; (feasible trials, best feasible metric)."""
    search = make_search(study, f"sqlite:///{folder / 'optuna.db'}", "bench")
    metric = study.spec.metrics[0].removeprefix("val/")
    feasible: list[float] = []
    for i in range(study.spec.num_trials):
        config = search.suggest(f"t{i}")
        trainer = Trainer(study.trial_config(config), data)
        try:
            result = trainer.fit()
        except Diverged:
            result = None
        search.on_trial_complete(f"t{i}", final_report(study, result))
        if (
            result is not None
            and judge(result.val, study.spec.constraints, result.saturated).feasible
        ):
            feasible.append(result.val[metric])
    return len(feasible), min(feasible, default=None)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {sd:.2g}"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, help="override the study's train.epochs")
    args = parser.parse_args()
    common = [
        f"data.root={Path(args.data).resolve()}",
        f"train.device={args.device}",
        f"study.num_trials={args.trials}",
        *([f"train.epochs={args.epochs}"] if args.epochs else []),
    ]
    rows = []
    data = None
    for name, extra in METHODS.items():
        counts, bests, missing = [], [], []
        start = time.perf_counter()
        for seed in args.seeds:
            study = load_study(STUDY, [*common, *extra, f"study.sampler.seed={seed}"])
            if data is None:
                data = Trainer(study.trial_config({})).data
            with tempfile.TemporaryDirectory() as tmp:
                n, best = run_method(study, Path(tmp), data)
            counts.append(n / args.trials)
            if best is None:
                missing.append(seed)
            else:
                bests.append(best)
            print(f"{name}, seed {seed}: {n}/{args.trials} feasible, best {best}", flush=True)
        minutes = (time.perf_counter() - start) / 60
        none = f" (none feasible: seed {', '.join(map(str, missing))})" if missing else ""
        rows.append((name, _mean_sd(counts), _mean_sd(bests) + none, f"{minutes:.1f}"))

    print(
        f"\n{STUDY.relative_to(STUDY.parents[2])}: {args.trials} trials per seed, seeds "
        f"{args.seeds}, device {device_name(data.train_x.device)}; metric val/kl (min), "
        "feasible = own constraints + yardstick recon <= 125 (validation split)\n"
    )
    print("| method | feasible fraction | best feasible validation KL (nats) | wall min |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
