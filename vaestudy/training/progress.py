"""Terminal progress for single runs: one line per logging interval, a table of test metrics."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from vaestudy.config.run import RunConfig
from vaestudy.training.trainer import Trainer, TrainResult

console = Console(highlight=False, soft_wrap=True)
_SHOWN = ("loss", "recon", "kl", "elbo")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def train_with_progress(cfg: RunConfig) -> TrainResult:
    trainer = Trainer(cfg)
    console.print(
        f"[bold]{cfg.objective.name}[/] on {cfg.data.dataset} ({trainer.data.n_train} images), "
        f"model {cfg.model.name}, device {trainer.device}, {trainer.total_steps} steps"
    )
    start = time.perf_counter()

    def on_log(row: dict[str, float]) -> None:
        shown = [k for k in row if k in _SHOWN or k.startswith(("lambda/", "constraint/", "coef/"))]
        rate = row["step"] / (time.perf_counter() - start)
        parts = "  ".join(f"{k} {_fmt(row[k])}" for k in shown)
        console.print(
            f"step {int(row['step']):>6}/{trainer.total_steps}  {parts}  ({rate:.0f} steps/s)"
        )

    return trainer.fit(on_log=on_log)


def print_metrics(title: str, metrics: dict[str, float], unit: str = "nats per example") -> None:
    table = Table(title=f"{title} metrics ({unit})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, _fmt(metrics[key]))
    console.print(table)


def print_members(varied: dict[str, list], results: list[TrainResult]) -> None:
    """One row per vectorised member: its varied values and its test metrics (or, for a member
    that diverged, why and when)."""
    test = next((r.test for r in results if r.diverged is None), {})
    shown = [k for k in ("elbo", "iwae_nll", "recon", "kl") if k in test]
    shown += sorted(k for k in test if k.startswith("constraint/"))
    table = Table(title="test metrics per member (nats per example)")
    status = any(r.diverged is not None for r in results)  # a column only when needed
    for key in ["member", *varied, *(["status"] if status else []), *shown]:
        table.add_column(key, justify="right")
    for i, result in enumerate(results):
        cells = [str(i), *(str(v[i]) for v in varied.values())]
        if result.diverged is not None:
            cells += [str(result.diverged), *[""] * len(shown)]
        else:
            cells += [*(["finished"] if status else []), *(_fmt(result.test[k]) for k in shown)]
        table.add_row(*cells)
    console.print(table)
