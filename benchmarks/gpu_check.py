"""One-shot GPU check: what a CUDA device must show of vaestudy, in one run (about 8 minutes on
one H100; `--quick` runs the smallest sizes in about a minute, as CI does with `--device cpu`).

    python -m benchmarks.gpu_check --data ../shared/data [--device cuda] [--out FILE] [--quick]

1. **Objectives**: every built-in objective (and the conv and ladder networks) trains one epoch
   and is evaluated fully (both held-out splits) on the device: steps/s, test −ELBO, IWAE NLL,
   every figure finite, peak device memory.
2. **Restores**: a GECO run stopped after half its steps and restored from its checkpoint into a
   fresh trainer on the device continues exactly as the uninterrupted run (largest parameter
   difference); the same checkpoint restores on the CPU and trains on.
3. **A study**: `studies/geco.yaml`, 4 trials sharing the device (`study.resources.gpu: 0.25`,
   4 at a time; on the CPU `gpu: 0`), end to end through Ray Tune, Optuna and MLflow, with one
   trial's worker SIGKILLed after its first checkpoint: Tune restores it from the checkpoint in a
   new worker (tag `vaestudy.restored_from_step`) and every trial finishes.
4. **Speed**: the trainer against the seed notebooks' loop (`benchmarks.trainer_speed`), eager
   and with `train.compile_mode: reduce-overhead` (CUDA graphs); K GECO trials as one pack
   against one at a time (`benchmarks.vectorized`), trials per hour. Targets on a GPU: trainer
   ≥ 20× the seed loop, packs ≥ 15× the trials per hour of one at a time.

Prints one Markdown section (device, date, command, the four tables, the targets met or missed)
and appends it to `--out` (default `benchmarks/RESULTS.md`). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.common import base_parser, device_name, synchronize, timed_loop
from benchmarks.trainer_speed import OBJECTIVES as SPEED_OBJECTIVES
from benchmarks.trainer_speed import interleaved_medians, seed_style, vaestudy_style
from benchmarks.vectorized import configs as geco_pack
from vaestudy.config.run import RunConfig
from vaestudy.study.trial import TAG_PROCESS, TAG_RESTORED
from vaestudy.tracking.tags import PARENT
from vaestudy.training.data import load_data
from vaestudy.training.trainer import Trainer
from vaestudy.training.vectorized import VectorTrainer

REPO = Path(__file__).resolve().parents[1]
CASES = {  # (objective, model) of every built-in objective, and the conv and ladder networks
    "elbo": ({"name": "elbo"}, {}),
    "beta_vae": ({"name": "beta_vae", "beta": 4.0}, {}),
    "kl_annealing": ({"name": "kl_annealing"}, {}),
    "geco": ({"name": "geco"}, {}),
    "lagvae": ({"name": "lagvae"}, {}),
    "infovae": ({"name": "infovae"}, {}),
    "icvae": ({"name": "icvae"}, {"conditional": True}),
    "geco, conv": ({"name": "geco"}, {"name": "conv"}),
    "elbo, vlae": ({"name": "elbo"}, {"name": "vlae"}),
}


def cfg_for(args, objective: dict, model: dict, **train) -> RunConfig:
    limit = {"train_limit": 1000, "test_limit": 200} if args.quick else {}
    return RunConfig.model_validate(
        {
            "data": {"root": args.data, **limit},
            "model": model,
            "objective": objective,
            "train": {"device": args.device, "epochs": 1, **train},
        }
    )


def check_objectives(args) -> tuple[list[str], bool]:
    device = torch.device(args.device)
    rows, ok = [], True
    for case, (objective, model) in CASES.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer = Trainer(cfg_for(args, objective, model))
        start = time.perf_counter()
        result = trainer.fit()
        synchronize(device)
        seconds = time.perf_counter() - start
        finite = all(math.isfinite(v) for v in (*result.val.values(), *result.test.values()))
        ok &= finite
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0
        rows.append(
            f"| {case} | {result.steps} | {result.steps / seconds:,.0f} | "
            f"{-result.test['elbo']:.1f} | {result.test.get('iwae_nll', math.nan):.1f} | "
            f"{'yes' if finite else '**no**'} | {peak:,.0f} |"
        )
        print(rows[-1], flush=True)
    head = (
        "| objective | steps | steps/s (with evaluations) | test −ELBO | test IWAE NLL | finite "
        "| peak MiB |\n|---|---:|---:|---:|---:|---|---:|"
    )
    return [head, *rows], ok


def check_restores(args) -> tuple[list[str], bool]:
    cfg = cfg_for(args, {"name": "geco", "kappa": 110.0}, {})
    straight = Trainer(cfg)
    half = straight.total_steps // 2
    straight.fit()
    first = Trainer(cfg)
    first.total_steps = half
    first.fit()
    blob = first.save_bytes()
    resumed = Trainer(cfg)
    torch.manual_seed(12345)  # whatever ran in between: the checkpoint restores the streams
    resumed.load_bytes(blob)
    resumed.fit()
    gap = max(
        (a - b).abs().max().item()
        for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True)
    )
    on_cpu = Trainer(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cpu"})})
    )
    on_cpu.load_bytes(blob)
    cpu_result = on_cpu.fit()
    ok = gap < 1e-3 and cpu_result.steps == straight.total_steps
    return [
        "| check | result |\n|---|---|",
        f"| restored at step {half} on {args.device}, trained to {straight.total_steps}: largest "
        f"parameter difference from the uninterrupted run | {gap:.2e} |",
        f"| the same checkpoint restored on the CPU, trained to the end | {cpu_result.steps} "
        f"steps, test −ELBO {-cpu_result.test['elbo']:.1f} |",
    ], ok


def check_study(args) -> tuple[list[str], bool]:
    """studies/geco.yaml, 4 trials sharing the device, one worker killed after a checkpoint."""
    from vaestudy.study.preflight import check_study as preflight
    from vaestudy.study.runner import run_study
    from vaestudy.study.spec import load_study

    gpu = 0.25 if args.device.startswith("cuda") else 0
    epochs = 8 if args.quick else 10
    with tempfile.TemporaryDirectory() as folder:
        where = {"tracking_uri": f"sqlite:///{folder}/mlflow.db",
                 "storage_path": f"{folder}/ray_results",
                 "optuna_storage": f"sqlite:///{folder}/optuna.db"}  # fmt: skip
        study = load_study(
            REPO / "studies" / "geco.yaml",
            [f"data.root={Path(args.data).resolve()}", f"train.epochs={epochs}",
             "study.num_trials=4", "study.max_concurrent=4", f"study.resources.gpu={gpu}",
             f"study.resources.cpu={min(1, (os.cpu_count() or 1) / 4):g}",
             "study.checkpoint_interval_s=0", "study.max_failures=2", "train.iwae_samples=20",
             *(["data.train_limit=1000", "data.test_limit=200"] if args.quick else [])],
        )  # fmt: skip
        preflight(study, **where)
        killed: dict[str, str] = {}
        store = Path(folder) / "mlflow.db"

        def kill_a_worker() -> None:  # a trial past its second evaluation: it has a checkpoint
            deadline = time.monotonic() + 600
            while not killed and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                        row = db.execute(
                            "SELECT t.run_uuid, t.value FROM tags t JOIN runs r ON "
                            "r.run_uuid = t.run_uuid WHERE t.key = ? AND r.status = 'RUNNING' "
                            "AND (SELECT COUNT(DISTINCT m.step) FROM metrics m WHERE m.run_uuid "
                            "= t.run_uuid AND m.key = 'val/elbo') >= 2",
                            (TAG_PROCESS,),
                        ).fetchone()
                except sqlite3.Error:
                    continue
                if row:
                    killed.update(run=row[0], process=row[1])
                    os.kill(int(row[1].rsplit(":", 1)[1]), signal.SIGKILL)

        killer = threading.Thread(target=kill_a_worker, daemon=True)
        killer.start()
        start = time.perf_counter()
        outcome = run_study(study, **where)
        wall = time.perf_counter() - start
        killer.join(timeout=1)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{store}")
        runs = client.search_runs(
            [client.get_run(outcome.parent_run_id).info.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{outcome.parent_run_id}'",
        )
    finished = sum(r.info.status == "FINISHED" for r in runs)
    restored = [r for r in runs if r.info.run_id == killed.get("run")]
    from_step = restored[0].data.tags.get(TAG_RESTORED) if restored else None
    ok = finished == 4 and bool(killed) and from_step is not None
    return [
        "| check | result |\n|---|---|",
        f"| trials finished (4 sharing the device, gpu {gpu:g} each) | {finished} of {len(runs)},"
        f" {wall:.0f} s wall |",
        f"| a trial's worker SIGKILLed after its second evaluation | "
        f"{'killed ' + killed['process'] if killed else '**not killed** (finished first)'} |",
        f"| that trial restored from its checkpoint in a new worker | "
        f"{'from step ' + from_step if from_step else '**no**'} |",
    ], ok


def check_speed(args) -> tuple[list[str], list[str], bool]:
    device = torch.device(args.device)
    steps, repeats = (12, 1) if args.quick else (300, 3)
    trainer_rows = []
    ratios = []
    for name in SPEED_OBJECTIVES:
        run = (name, args.data, device, 128, steps)
        seed, eager = interleaved_medians(
            repeats, [partial(seed_style, *run), partial(vaestudy_style, *run)]
        )
        graphs = vaestudy_style(*run, "reduce-overhead")
        ratios.append(eager / seed)
        trainer_rows.append(
            f"| {name} | {seed:,.0f} | {eager:,.0f} | {eager / seed:.1f}x | {graphs:,.0f} | "
            f"{graphs / seed:.1f}x |"
        )
        print(trainer_rows[-1], flush=True)
    pack_rows = []
    pack_steps = 10 if args.quick else 100
    members = [2] if args.quick else [4, 16, 64]
    pargs = argparse.Namespace(data=args.data, batch=128, device=args.device)
    data = load_data(geco_pack(pargs, 1)[0].data, device)
    pack_ratios = []
    for k in members:
        cfgs = geco_pack(pargs, k)
        single = sum(timed_loop(Trainer(cfg, data), pack_steps) for cfg in cfgs[: min(k, 4)])
        single *= k / min(k, 4)  # one at a time: K trials take K times one trial's loop
        packed = timed_loop(VectorTrainer(cfgs, data), pack_steps)
        pack_ratios.append(single / packed)
        pack_rows.append(
            f"| {k} | {3600 * k / single:,.0f} | {3600 * k / packed:,.0f} | "
            f"{single / packed:.1f}x |"
        )
        print(pack_rows[-1], flush=True)
    gpu = device.type == "cuda"
    met = (not gpu) or (min(ratios) >= 20 and max(pack_ratios) >= 15)
    return (
        [
            f"Trainer against the seed-style loop: MLP VAE, batch 128, {steps} steps, median of "
            f"{repeats} (CUDA graphs: one run). Target on a GPU: ≥ 20x.\n",
            "| objective | seed-style samples/s | vaestudy samples/s | ratio | vaestudy + "
            "reduce-overhead samples/s | ratio |\n|---|---:|---:|---:|---:|---:|",
            *trainer_rows,
        ],
        [
            f"\nK GECO trials, {pack_steps} steps each, training loops only. Target on a GPU: "
            "≥ 15x the trials per hour of one at a time.\n",
            "| K | trials/h, one at a time | trials/h, one pack | ratio |\n|---:|---:|---:|---:|",
            *pack_rows,
        ],
        met,
    )


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run)")
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    start = time.perf_counter()
    objectives, ok1 = check_objectives(args)
    restores, ok2 = check_restores(args)
    study, ok3 = check_study(args)
    trainer_speed, packs, met = check_speed(args)
    minutes = (time.perf_counter() - start) / 60
    checks = {"objectives": ok1, "restores": ok2, "study": ok3, "speed targets": met}
    command = " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]])
    section = "\n".join(
        [
            f"\n## GPU check (`benchmarks/gpu_check.py`), {device_name(torch.device(args.device))}"
            f", {datetime.date.today()}\n",
            f"Command: `{command}` ({minutes:.1f} min; torch {torch.__version__}).\n",
            "### 1. Every objective trains and evaluates on the device\n",
            *objectives,
            "\n### 2. Restores\n",
            *restores,
            "\n### 3. A study sharing the device, one worker killed\n",
            *study,
            "\n### 4. Speed\n",
            *trainer_speed,
            *packs,
            "\n" + ", ".join(f"{k}: {'pass' if v else '**FAIL**'}" for k, v in checks.items()),
        ]
    )
    print(section)
    with open(args.out, "a") as f:
        f.write(section + "\n")
    print(f"\nappended to {args.out}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
