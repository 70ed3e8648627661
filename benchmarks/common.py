"""What every benchmark script shares: the device/data/batch arguments and the device's name."""

from __future__ import annotations

import argparse

import torch


def base_parser(description: str, steps: int | None = None) -> argparse.ArgumentParser:
    """--data and --device; --batch and --steps for the benchmarks that time training loops."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if steps is not None:
        parser.add_argument("--batch", type=int, default=128)
        parser.add_argument("--steps", type=int, default=steps)
    return parser


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
