"""Many trials per device: K GECO trials one at a time against one vectorised computation.

    python -m benchmarks.vectorized --data ../shared/data [--device cuda] [--members 4 16 64]
        [--batches shared own]

Each trial is the MLP VAE (784-512-128-16) with GECO, batch 128, `--steps` steps; trials differ
in κ and seed. "One at a time" trains them with `Trainer` back to back; "vectorised" trains all K
with `VectorTrainer` (torch.func vmap over stacked parameters), the members sharing one batch
sequence (`shared`: a study's packed trials) or each drawing its own (`own`: confirmation seeds,
K gathers and binarisations a step). Training loops only (the final evaluation is the same work
either way). Prints trials per hour for each and the ratio.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import base_parser, device_name, timed_loop
from vaestudy.config.run import RunConfig
from vaestudy.training.data import load_data
from vaestudy.training.trainer import Trainer
from vaestudy.training.vectorized import VectorTrainer


def configs(args: argparse.Namespace, k: int) -> list[RunConfig]:
    return [
        RunConfig.model_validate(
            {
                "data": {"root": args.data, "pixels": "binarized"},
                "objective": {
                    "name": "geco",
                    "kappa": 90.0 + 5.0 * i,
                    "multiplier": {"update": "geco", "lr": 1e-4, "max": 1e4},
                },
                "train": {"batch_size": args.batch, "device": args.device, "seed": i},
            }
        )
        for i in range(k)
    ]


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], steps=100)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 16])
    parser.add_argument(
        "--batches", nargs="+", choices=["shared", "own"], default=["shared", "own"]
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    name = device_name(device)
    print(f"GECO MLP VAE, batch {args.batch}, {args.steps} steps per trial, device {name}\n")
    print(
        "| K | batches | one at a time, s | vectorised, s | trials/h, one at a time "
        "| trials/h, vectorised | ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    data = load_data(configs(args, 1)[0].data, device)
    for k in args.members:
        cfgs = configs(args, k)
        single = sum(timed_loop(Trainer(cfg, data), args.steps) for cfg in cfgs)
        for batches in args.batches:
            vector = timed_loop(VectorTrainer(cfgs, data, batches=batches), args.steps)
            per_hour = [3600 * k / t for t in (single, vector)]
            print(
                f"| {k} | {batches} | {single:.2f} | {vector:.2f} | {per_hour[0]:,.0f} "
                f"| {per_hour[1]:,.0f} | {single / vector:.2f}x |"
            )


if __name__ == "__main__":
    main()
