"""Vectorised training: K runs of one architecture and objective as one batched computation.

The K members are run configs that may differ only in `train.seed` (initialisation and noise),
λ's initial value (`objective.multiplier.init`) and the objective's targets and weights listed in
its config's `hyper_fields` (GECO's κ, the Lagrangian VAE's ε and mi, β, ...; held as buffers). Each
member is built exactly as `Trainer` builds a run; then their parameters and buffers are stacked
(`torch.func.stack_module_state`) and one `vmap(grad(...))` gives every member's loss, metrics and
gradients in one pass. One optimizer steps the stacked parameters (element-wise, hence K
independent optimizers with the shared settings) and the multipliers move as one [K, C] tensor.

Members see the same batch sequence (that of the first member's seed; `batches="shared"`, the
default): common random numbers, so differences between members come from their settings. With
`batches="own"` each member draws its batches as `Trainer` does for its own config (its epoch
order from its seed, its binarisation generator): the members are independent replicates, as
confirmation seeds must be (`vaestudy.study.confirm`). The reparameterisation noise differs
per member (`noise="different"`, the default) or is shared too (`noise="same"`: then member k
computes exactly what `Trainer` computes for its config under the same random state).
Trajectories are per member, from the same once-per-`log_every` host sync as `Trainer`;
evaluations run member by member. `train.compile` and `train.bf16` do not apply here.

A member that diverges fails alone: its last trajectory point is kept, its `TrainResult` carries
the `Diverged` reason and no test metrics, and the others train on. Its slice of the stacked
tensors goes on computing (non-finite values stay in that slice: every operation, the fused
optimizer step and the multiplier update included, is element-wise per member) but is never
read again. Checkpoints (`save_bytes`/`load_bytes`, as `Trainer`'s: loaded onto the CPU, restorable
on any device) hold the stacked state, the random streams and every member's trajectory.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from vaestudy.config.dotted import flatten, unprefixed
from vaestudy.config.run import RunConfig, load_run_config, member_keys, parse_overrides
from vaestudy.errors import ConfigError
from vaestudy.training.data import DeviceData, Split
from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import Objective, Output
from vaestudy.training.trainer import (
    Diverged,
    EvalCallback,
    LogCallback,
    Trainer,
    TrainResult,
    make_optimizer,
    rng_state,
)


class _Member(nn.Module):
    """Model + objective as one module, so one `functional_call` swaps both states."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, y: Tensor | None, step: Tensor):
        return self.objective(self.model, x, y, step)


def member_view(row: dict[str, float], k: int) -> dict[str, float]:
    """Member `k`'s entries of a `<member>/<metric>` row, keys without the prefix."""
    return unprefixed(row, f"{k}/")


def _blank(cfg: RunConfig, keys: list[str]) -> dict[str, Any]:
    raw = cfg.model_dump(mode="json")
    for key in keys:
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = None
    return raw


def check_members(cfgs: list[RunConfig]) -> None:
    """Raise ConfigError unless all configs differ only in `member_keys`."""
    if not cfgs:
        raise ConfigError("vectorised training needs at least one member config")
    if cfgs[0].train.stop_saturated:
        raise ConfigError(
            "train.stop_saturated: vectorised members train as one computation, so stopping "
            "one saves nothing; train them one at a time to stop saturated runs early"
        )
    keys = member_keys(cfgs[0])
    base = _blank(cfgs[0], keys)
    flat = flatten(base)
    for i, cfg in enumerate(cfgs[1:], start=1):
        other = flatten(_blank(cfg, keys))
        differ = sorted(k for k in flat.keys() | other.keys() if flat.get(k) != other.get(k))
        if differ:
            raise ConfigError(
                f"vectorised member {i} differs from member 0 in {', '.join(differ)}; members "
                f"may differ only in {', '.join(keys)}"
            )


def member_configs(
    path: str, overrides: list[str] | None, members: list[str]
) -> tuple[list[RunConfig], dict[str, list[Any]]]:
    """`--members objective.kappa=[80,100,120] --members train.seed=[0,1,2]`: the K configs
    (the i-th value of every key goes to member i) and the varied values by key."""
    varied = parse_overrides(members)
    lengths = {key: len(v) if isinstance(v, list) else 0 for key, v in varied.items()}
    if not varied or 0 in lengths.values() or len(set(lengths.values())) != 1:
        raise ConfigError(
            f"--members: expected KEY=[v1, v2, ...] lists of one common length, got {lengths}"
        )
    k = next(iter(lengths.values()))
    cfgs = [
        load_run_config(
            path, [*(overrides or []), *(f"{key}={json.dumps(v[i])}" for key, v in varied.items())]
        )
        for i in range(k)
    ]
    return cfgs, varied


class VectorTrainer(Trainer):
    """Trains `cfgs` (see `check_members`) together; `fit()` returns one TrainResult each.

    Like `Trainer`, it takes built parts instead of configured ones: `models` and `objectives`,
    one per member (one architecture; the objectives of one class, differing only in their
    `hyper_fields` and λ's initial value)."""

    def __init__(
        self,
        cfgs: list[RunConfig],
        data: DeviceData | None = None,
        noise: Literal["different", "same"] = "different",
        models: list[VAE] | None = None,
        objectives: list[Objective] | None = None,
        batches: Literal["shared", "own"] = "shared",
    ) -> None:
        models = models or [None] * len(cfgs)  # type: ignore[list-item]
        objectives = objectives or [None] * len(cfgs)  # type: ignore[list-item]
        if not len(models) == len(objectives) == len(cfgs):
            raise ConfigError(
                f"{len(cfgs)} member configs but {len(models)} models and {len(objectives)} "
                "objectives"
            )
        cfgs = [c if o is None else c.model_copy(update={"objective": o.cfg})
                for c, o in zip(cfgs, objectives, strict=True)]  # fmt: skip
        check_members(cfgs)
        # The first member's model and objective, copied, are the call template.
        model, objective = (
            None if m is None else copy.deepcopy(m) for m in (models[0], objectives[0])
        )
        super().__init__(cfgs[0], data, model=model, objective=objective)
        self.members = [
            Trainer(cfg, self.data, model=m, objective=o)
            for cfg, m, o in zip(cfgs, models, objectives, strict=True)
        ]
        self.template = _Member(self.model, self.objective)
        params, buffers = stack_module_state([_Member(m.model, m.objective) for m in self.members])
        self.trainable = {k: v for k, v in params.items() if v.requires_grad}
        self.state = {k: v for k, v in params.items() if not v.requires_grad} | buffers
        # The multipliers of the template hold every member's λ, moving average and ξ as [K, C]
        # tensors; their step counters are shared (in_dims None).
        mult = self.objective.multipliers
        if mult is not None:
            mult.value = nn.Parameter(self.state["objective.multipliers.value"], False)
            mult.ema = self.state["objective.multipliers.ema"]
            mult.xi = self.state["objective.multipliers.xi"]
            mult._optimizer = None
            self.state["objective.multipliers.value"] = mult.value
            for name in ("seen", "steps"):
                self.state[f"objective.multipliers.{name}"] = getattr(mult, name)
        dims = {k: None if k.endswith((".seen", ".steps")) else 0 for k in self.state}
        self.optimizer = make_optimizer(self.cfg.train, list(self.trainable.values()))
        self.diverged: dict[int, Diverged] = {}
        self._keys: list[str] = []
        self.batches = batches
        own = 0 if batches == "own" else None
        self._grad = vmap(
            grad(self._member_loss, has_aux=True),
            in_dims=(0, dims, own, own if self.model.n_classes else None, None),
            randomness=noise,
        )

    def _member_loss(
        self,
        trainable: dict[str, Tensor],
        state: dict[str, Tensor],
        x: Tensor,
        y: Tensor | None,
        step: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One member's loss (differentiated by `grad`), its metric vector and constraints."""
        out = functional_call(self.template, {**trainable, **state}, (x, y, step))
        if not self._keys:
            self._keys = ["loss", *out.metrics]
        values = torch.stack([out.loss, *out.metrics.values()]).detach().float()
        c = out.constraints if out.constraints is not None else out.loss.new_zeros(0)
        return out.loss, (values, c)

    def _permutation(self) -> Tensor:
        """The epoch's order: the first member's, or each member's own ([K, N])."""
        if self.batches == "shared":
            return super()._permutation()
        for member in self.members:
            member.step = self.step
        return torch.stack([member._permutation() for member in self.members])

    def _train_step(self, idx: Tensor) -> tuple[Tensor, list[str]]:
        if self.batches == "shared":
            x, y = self.data.batch(idx, self.generator)
        else:  # idx [K, B]: member k's batch from its own indices and generator
            parts = [m.data.batch(i, m.generator) for i, m in zip(idx, self.members, strict=True)]
            x, y = (torch.stack(column) for column in zip(*parts, strict=True))
        y = y if self.model.n_classes else None
        grads, (values, constraints) = self._grad(self.trainable, self.state, x, y, self.step_t)
        for name, p in self.trainable.items():
            p.grad = grads[name]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if constraints.numel():
            self.objective.update(Output(values, {}, constraints))
        self.step_t += 1
        return values, self._keys

    def _live(self) -> list[tuple[int, Trainer]]:
        return [(k, m) for k, m in enumerate(self.members) if k not in self.diverged]

    def _log_row(self, keys: list[str], means: Tensor) -> dict[str, float]:
        """One trajectory point per live member, keys `<member>/<metric>`; a member that
        diverges here is recorded (its point kept); raises Diverged once all have."""
        row: dict[str, float] = {}
        for k, member in self._live():
            member.step = self.step
            try:
                member._log_row(keys, means[k])
            except Diverged as exc:
                self.diverged[k] = exc
            row.update({f"{k}/{key}": v for key, v in member.history[-1].items()})
        if len(self.diverged) == len(self.members):
            raise Diverged(self.step, "every member diverged")
        return row

    def _sync_members(self) -> None:
        """Copy each live member's slice of the stacked tensors back into its model and
        objective (not the optimizers' moments: members are for evaluation and saving weights)."""
        with torch.no_grad():
            for k, member in self._live():
                module = _Member(member.model, member.objective)
                for name, tensor in module.state_dict(keep_vars=True).items():
                    source = self.trainable.get(name, self.state.get(name))
                    if source is None or tensor is source:
                        continue
                    tensor.copy_(source if source.dim() == tensor.dim() else source[k])
                member.step = self.step
                member.step_t.fill_(self.step)

    def evaluate_on_device(self, full: bool = True, split: Split = "val") -> dict[str, Tensor]:
        """Every live member's metrics of a held-out split, keys `<member>/<metric>` (`evaluate`
        copies them to the host at once)."""
        self._sync_members()
        return {
            f"{k}/{key}": v
            for k, m in self._live()
            for key, v in m.evaluate_on_device(full, split).items()
        }

    def fit(  # type: ignore[override]
        self, on_log: LogCallback | None = None, on_eval: EvalCallback | None = None
    ) -> list[TrainResult]:
        """Train every member to `total_steps`, then evaluate each live one fully. `on_log` and
        `on_eval` get rows keyed `<member>/<metric>`."""
        with contextlib.suppress(Diverged):  # every member diverged: each result says why
            self._train_loop(on_log, on_eval)
        self._sync_members()
        return [
            m.final_result()
            if k not in self.diverged
            else TrainResult(
                list(m.history), steps=m.step, saturated=m.saturated(), diverged=self.diverged[k]
            )
            for k, m in enumerate(self.members)
        ]

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        mult = self.objective.multipliers
        return {
            "stacked": {**self.trainable, **self.state},
            "optimizer": self.optimizer.state_dict(),
            "multipliers": None if mult is None else mult.get_extra_state(),
            "generator": {self.device.type: self.generator.get_state()},
            "member_generators": {
                self.device.type: [m.generator.get_state() for m in self.members]
            },  # fmt: skip
            "rng": rng_state(self.device),
            "step": self.step,
            "members": [(list(m.history), m.step) for m in self.members],
            "diverged": {k: (e.step, e.reason) for k, e in self.diverged.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, tensor in {**self.trainable, **self.state}.items():
                tensor.copy_(state["stacked"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["multipliers"] is not None:
            self.objective.multipliers.set_extra_state(state["multipliers"])
        self.step = int(state["step"])
        self.step_t.fill_(self.step)
        for member, (history, step) in zip(self.members, state["members"], strict=True):
            member.history, member.step = list(history), step
            member._probe_cache = (-1, {})
        self.diverged = {k: Diverged(*failure) for k, failure in state["diverged"].items()}
        self.restore_random(state)
        saved = state.get("member_generators", {}).get(self.device.type)
        for k, member in enumerate(self.members):  # their own batches' binarisation draws
            if saved is not None:
                member.generator.set_state(saved[k])
            else:  # taken on another device kind: re-seeded as `restore_random` does
                member.generator.manual_seed(member._stream_seed(self.step))
