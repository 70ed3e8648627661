"""What every benchmark script shares: the device/data/batch arguments, the device's name, and
the timing of a trainer's loop."""

from __future__ import annotations

import argparse
import time

import torch

from vaestudy.training.trainer import Trainer

WARMUP = 5  # steps run before a timed loop (compilation, allocator, cuBLAS start-up)


def base_parser(description: str, steps: int | None = None) -> argparse.ArgumentParser:
    """--data and --device; --batch and --steps for the benchmarks that time training loops."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if steps is not None:
        parser.add_argument("--batch", type=int, default=128)
        parser.add_argument("--steps", type=int, default=steps)
    return parser


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loop(trainer: Trainer, steps: int) -> float:
    """Seconds `trainer` takes for `steps` training steps after `WARMUP` untimed ones: its
    training loop alone (trajectory points included, no evaluation), device work finished."""
    trainer.total_steps = trainer.step + WARMUP
    trainer._train_loop(None, None)
    trainer.total_steps = trainer.step + steps
    synchronize(trainer.device)
    start = time.perf_counter()
    trainer._train_loop(None, None)
    synchronize(trainer.device)
    return time.perf_counter() - start


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
