"""GPU-resident training of one objective on one device.

The data sit on the device (`vaestudy.training.data`); each step slices an on-device permutation,
runs the objective, steps the optimiser and the objective's multipliers, and adds the step's metrics
to a running sum on the device. The host reads that sum only every `log_every` steps (one sync per
interval), which gives one trajectory point: the interval's mean of every metric. Divergence (a
non-finite metric, or a multiplier above `train.max_lambda`) is detected at those points.
Evaluations (every `eval_every` steps, default once per epoch) also close a trajectory point.
Without `train.log_every` a run logs about `TRAJECTORY_POINTS` points, whatever its budget.
Evaluations during training score the validation split (quickly: no IWAE, active units or probe);
the end scores the validation split and then, once, the test split, fully (`final_result`).

A learned multiplier that sits at its clip for the last 20% of training is *saturated*
(`vaestudy.training.feasibility.saturated`); with `train.stop_saturated` training stops as soon as
that holds over the planned steps, and the run is evaluated where it stopped.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vaestudy.config.run import RunConfig, TrainConfig
from vaestudy.training.data import DeviceData, Split, load_data
from vaestudy.training.evaluation import evaluate
from vaestudy.training.feasibility import saturated
from vaestudy.training.likelihoods import make_nll
from vaestudy.training.models import VAE, build_model
from vaestudy.training.objectives.registry import Objective, build_objective

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}

TRAJECTORY_POINTS = 100  # trajectory points per run when train.log_every is not set
LogCallback = Callable[[dict[str, float]], None]
EvalCallback = Callable[[int, dict[str, float]], None]


class Diverged(RuntimeError):
    """Training produced a non-finite value or a runaway multiplier."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


def make_optimizer(tc: TrainConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    """The configured optimiser; Adam and Adamax use the fused one-kernel update."""
    kwargs: dict[str, Any] = {"lr": tc.lr}
    if tc.optimizer in ("adam", "adamax"):
        kwargs["betas"] = tc.betas
    if tc.optimizer == "adam":
        kwargs["fused"] = True
    return _OPTIMIZERS[tc.optimizer](params, **kwargs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)  # the verdict: never steers
    val: dict[str, float] = field(default_factory=dict)  # what the search and selection read
    steps: int = 0
    diverged: Diverged | None = None  # set (and `test` empty) for a vectorised member that diverged
    saturated: list[str] = field(default_factory=list)  # multipliers at their clip at the end
    stopped_saturated: bool = False  # stopped early by train.stop_saturated


class Trainer:
    """Owns the device-resident data, model, objective and optimiser of one run.

    `cfg` configures everything; a notebook can pass its own built parts instead: `data`
    (`DeviceData`), `model` (a `VAE`) or `objective` (an `Objective`, e.g. a user's own class
    built on its own config). A passed objective's config replaces `cfg.objective`; a passed
    model stands for `cfg.model`, whose settings are then not used.
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: DeviceData | None = None,
        model: VAE | None = None,
        objective: Objective | None = None,
    ) -> None:
        if objective is not None:
            cfg = cfg.model_copy(update={"objective": objective.cfg})
        self.cfg = cfg
        tc = cfg.train
        self.device = resolve_device(tc.device)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.data = data if data is not None else load_data(cfg.data, self.device)
        if model is None:
            model = build_model(cfg.model, self.data.shape, self.data.n_classes)
        if objective is None:
            objective = build_objective(cfg.objective, make_nll(cfg.data))
        self.model = model.to(self.device)
        self.objective = objective.to(self.device)
        self.optimizer = make_optimizer(tc, list(self.model.parameters()))
        self.generator = torch.Generator(device=self.device).manual_seed(tc.seed)
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.steps_per_epoch = max(1, self.data.n_train // tc.batch_size)
        self.total_steps = max(1, round(tc.epochs * self.steps_per_epoch))
        self.log_every = tc.log_every or max(1, self.total_steps // TRAJECTORY_POINTS)
        self._forward = self._loss_and_metrics
        if tc.compile:
            self._forward = torch.compile(self._loss_and_metrics, mode=tc.compile_mode)
        self._autocast = tc.bf16 and self.device.type == "cuda"

    # -- the hot loop --------------------------------------------------------------------------

    def _loss_and_metrics(self, x: Tensor, y: Tensor | None):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            return self.objective(self.model, x, y, self.step_t)

    def _train_step(self, idx: Tensor) -> tuple[Tensor, list[str]]:
        x, y = self.data.batch(idx, self.generator)
        out = self._forward(x, y if self.model.n_classes else None)
        # Copied before the updates: λ in the metrics is the value this step's loss used.
        values = torch.stack([out.loss, *out.metrics.values()]).detach().float()
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.objective.update(out)
        self.step_t += 1
        return values, ["loss", *out.metrics]

    def fit(
        self, on_log: LogCallback | None = None, on_eval: EvalCallback | None = None
    ) -> TrainResult:
        """Train to `total_steps` (continuing from a restored state), then evaluate fully."""
        stopped = self._train_loop(on_log, on_eval)
        return self.final_result(stopped_saturated=stopped)

    def final_result(self, **extra: Any) -> TrainResult:
        """The run's result: full evaluations of the validation split and of the test split."""
        val, test = self.evaluate(full=True, split="val"), self.evaluate(full=True, split="test")
        return TrainResult(
            list(self.history), test, val=val, steps=self.step, saturated=self.saturated(), **extra
        )

    def saturated(self) -> list[str]:
        """Learned multipliers that sat at their clip over the last 20% of the planned steps."""
        mult = self.objective.multipliers
        if mult is None or mult.cfg.update == "frozen":
            return []
        return saturated(self.history, mult.names, mult.cfg.max, self.total_steps)

    def _train_loop(self, on_log: LogCallback | None, on_eval: EvalCallback | None) -> bool:
        """Train to `total_steps`; True if `train.stop_saturated` stopped it before."""
        tc = self.cfg.train
        eval_every = tc.eval_every or self.steps_per_epoch
        self.model.train()
        self.objective.train()
        acc: Tensor | None = None
        keys: list[str] = []
        window = 0
        perm = self._permutation()
        while self.step < self.total_steps:
            pos = self.step % self.steps_per_epoch
            if pos == 0 and self.step > 0:
                perm = self._permutation()
            idx = perm[pos * tc.batch_size : (pos + 1) * tc.batch_size]
            values, keys = self._train_step(idx)
            acc = values if acc is None else acc + values
            window += 1
            self.step += 1
            eval_due = on_eval is not None and self.step % eval_every == 0
            eval_due = eval_due and self.step < self.total_steps
            # Every evaluation is also a trajectory point, so reports pair train and test values.
            if self.step % self.log_every == 0 or self.step == self.total_steps or eval_due:
                row = self._log_row(keys, acc / window)
                acc, window = None, 0
                if on_log:
                    on_log(row)
                if tc.stop_saturated and self.step < self.total_steps and self.saturated():
                    return True
            if eval_due:
                on_eval(self.step, self.evaluate(full=False))
        return False

    def _permutation(self) -> Tensor:
        # One permutation per epoch, drawn from the run's generator so restarts reproduce it.
        epoch_gen = torch.Generator(device=self.device)
        epoch_gen.manual_seed(self.cfg.train.seed * 1_000_003 + self.step // self.steps_per_epoch)
        return torch.randperm(self.data.n_train, generator=epoch_gen, device=self.device)

    def _log_row(self, keys: list[str], means: Tensor) -> dict[str, float]:
        host = means.tolist()  # the one host sync per interval
        row = {"step": float(self.step), "epoch": self.step / self.steps_per_epoch}
        row.update(zip(keys, host, strict=True))
        self.history.append(row)
        bad = [k for k, v in zip(keys, host, strict=True) if not math.isfinite(v)]
        if bad:
            raise Diverged(self.step, f"non-finite {', '.join(bad)}")
        runaway = [
            k for k in keys if k.startswith("lambda/") and row[k] > self.cfg.train.max_lambda
        ]
        if runaway:
            raise Diverged(
                self.step, f"multiplier {runaway[0]} = {row[runaway[0]]:.3g} > train.max_lambda"
            )
        return row

    def evaluate(self, full: bool = True, split: Split = "val") -> dict[str, float]:
        """Metrics of a held-out split. Its sampling noise (z ~ q(z|x), the IWAE samples) comes
        from a generator seeded with `data.seed` and leaves training's random stream untouched:
        a run evaluated every epoch (a study trial) trains exactly as one that is not
        (`vaestudy train`), and an evaluation gives the same numbers whenever it runs."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.data.seed)
            return evaluate(
                self.model,
                self.objective,
                self.data,
                self.cfg.train,
                self.step_t,
                split=split,
                full=full,
                log_likelihood=self.cfg.data.log_likelihood,
            )

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.step_t.fill_(self.step)
        self.history = list(state["history"])

    def save_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        self.load_state_dict(
            torch.load(io.BytesIO(blob), map_location=self.device, weights_only=False)
        )
