"""Trainer throughput: the seed notebooks' loop against vaestudy's trainer, side by side.

    python -m benchmarks.trainer_speed --data ../shared/data [--device cuda] [--steps 300]
        [--compile default reduce-overhead]

Both train the same MLP VAE (784-512-128-16) with the same objective, batch size and number of
steps on the same device, in one process. The seed-style loop is what the notebooks do: a
torchvision DataLoader over the dataset (ToTensor per image), `x.to(device)` per batch, a host
sync per step (`float(loss)`), and λ (GECO, Lagrangian VAE) as a parameter with its own optimizer
step after a backward through the Lagrangian. Prints samples/s for each and the ratio: medians
of `--repeats` runs, the two loops' runs interleaved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.common import WARMUP, base_parser, device_name, synchronize, timed_loop
from vaestudy.config.run import RunConfig
from vaestudy.training.divergences import gaussian_kl, mmd
from vaestudy.training.models import build_model
from vaestudy.training.trainer import Trainer

OBJECTIVES = {
    "elbo": {"name": "elbo"},
    "geco": {"name": "geco", "kappa": 100.0, "multiplier": {"update": "gradient", "lr": 1e-3}},
    "lagvae": {"name": "lagvae", "kl": "analytic", "epsilon": [100.0, 5.0]},
}


def seed_style(name: str, root: str, device: torch.device, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    ds = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
    model = build_model(RunConfig().model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_lambda = {"elbo": 0, "geco": 1, "lagvae": 2}[name]
    lam = torch.nn.Parameter(torch.ones(n_lambda, device=device)) if n_lambda else None
    lam_opt = torch.optim.RMSprop([lam], lr=1e-4) if lam is not None else None
    done, start = 0, None
    while done < steps:
        for x, _ in loader:
            if done == WARMUP:  # warm-up excluded
                synchronize(device)
                start = time.perf_counter()
            x = x.to(device)
            mu, logvar = model.encode(x)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            logits = model.decode(z)
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
            kl = gaussian_kl(mu, logvar).sum(1).mean()
            if name == "elbo":
                loss = nll + kl
            elif name == "geco":
                loss = kl + lam[0] * (nll - 100.0)
            else:
                d2 = 1e4 * mmd(z, torch.randn_like(z))
                loss = (lam[0] + 1) * nll + lam[0] * kl + lam[1] * d2 - lam[0] * 100 - lam[1] * 5
            opt.zero_grad()
            if lam_opt:
                lam_opt.zero_grad()
            loss.backward()
            opt.step()
            if lam is not None:
                lam.grad *= -1
                lam_opt.step()
                with torch.no_grad():
                    lam.clamp_(1e-3, 100)
            loss.item()  # the notebooks' per-step host sync (float(loss))
            done += 1
            if done >= steps:
                break
    synchronize(device)
    return (steps - WARMUP) * batch / (time.perf_counter() - start)


def vaestudy_style(
    name: str, root: str, device: torch.device, batch: int, steps: int, compile: str | None = None
) -> float:
    """vaestudy's trainer, its training loop alone (`timed_loop`); `compile`: a
    `train.compile_mode` (default, reduce-overhead: CUDA graphs on a GPU) or None."""
    train = {"batch_size": batch, "device": str(device), "log_every": 100}
    if compile:
        train |= {"compile": True, "compile_mode": compile}
    cfg = RunConfig.model_validate(
        {
            "data": {"root": root, "pixels": "bernoulli"},
            "objective": OBJECTIVES[name],
            "train": train,
        }
    )
    return (steps - WARMUP) * batch / timed_loop(Trainer(cfg), steps - WARMUP)


def interleaved_medians(repeats: int, measures: list[Callable[[], float]]) -> list[float]:
    """Median of `repeats` runs of each measure, the runs interleaved (a, b, c, a, b, c, ...)
    so that a slow spell of the machine hits every column alike."""
    runs: list[list[float]] = [[] for _ in measures]
    for _ in range(repeats):
        for out, measure in zip(runs, measures, strict=True):
            out.append(measure())
    return [statistics.median(r) for r in runs]


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], steps=300)
    parser.add_argument(
        "--compile",
        nargs="*",
        default=[],
        choices=["default", "reduce-overhead", "max-autotune"],
        help="add a train.compile column per mode (reduce-overhead: CUDA graphs on a GPU)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    name_dev = device_name(device)
    print(
        f"MLP VAE, batch {args.batch}, {args.steps} steps, device {name_dev}, "
        f"median of {args.repeats} runs\n"
    )
    extra = "".join(f" vaestudy + compile {mode} samples/s | ratio |" for mode in args.compile)
    print(f"| objective | seed-style samples/s | vaestudy samples/s | ratio |{extra}")
    print("|---|---:|---:|---:|" + "---:|---:|" * len(args.compile))
    for name in OBJECTIVES:
        run = (name, args.data, device, args.batch, args.steps)
        measures = [partial(seed_style, *run), partial(vaestudy_style, *run)]
        measures += [partial(vaestudy_style, *run, mode) for mode in args.compile]
        a, *ours = interleaved_medians(args.repeats, measures)
        cells = " | ".join(f"{b:,.0f} | {b / a:.2f}x" for b in ours)
        print(f"| {name} | {a:,.0f} | {cells} |")


if __name__ == "__main__":
    main()
