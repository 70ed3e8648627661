"""Pydantic configs of the objectives, one class per objective, selected by `name`.

Units: every target is in nats per example (or, for MMD, the scaled MMD value), the same unit
as the metric it bounds. Every constraint reads "quantity <= target".

Each config class also says, without building anything (so that study validation needs no
torch), which constraints its objective has (`constraint_names`, one multiplier each) and which
of its values the objective holds as tensors (`hyper_fields`: the targets and weights that
vectorised members may differ in).

A user's objective brings its own config, a subclass of `ObjectiveConfigBase`, as the attribute
`config` of its `Objective` class; `objective_config` finds it from the name a config gives
(`vaestudy.config.plugins`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vaestudy.config.plugins import config_class


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Cfg):
    """KL coefficient schedule over optimisation steps (see
    `vaestudy.training.objectives.schedules`)."""

    kind: Literal["constant", "linear", "sigmoid", "cyclical"] = "linear"
    steps: int = Field(
        10_000,
        gt=0,
        description="warm-up length; cyclical: the length of all `cycles` cycles, or without "
        "`cycles` the length of one cycle",
    )
    start: float = Field(0.0, ge=0)
    end: float = Field(1.0, ge=0)
    ratio: float = Field(0.5, gt=0, le=1, description="cyclical: fraction of a cycle spent rising")
    cycles: int | None = Field(
        None, gt=0, description="cyclical: number of cycles in `steps`, then β stays at `end`"
    )
    steepness: float = Field(10.0, gt=0, description="sigmoid: slope over the warm-up window")


class MultiplierConfig(_Cfg):
    """Lagrange multipliers λ >= 0, one per constraint (see `vaestudy.training.multipliers`).

    `update`, with C = D − ε the constraint value:
    - `gradient`: projected gradient ascent on the Lagrangian (∂L/∂λ = C) with `optimizer` at
      `lr`;
    - `geco`: λ <- λ·exp(lr·C_ma), C_ma the moving average (coefficient `ema`) of C;
    - `nupi`: νPI (Sohrabi et al., ICML 2024): ξ <- ν·ξ + (1 − ν)·C, λ <- λ + κ_i·C +
      κ_p·(ξ − ξ_prev), with κ_i = `lr`, κ_p = `kp`, ν = `nu` (κ_p = 0: gradient ascent);
    - `augmented`: the augmented Lagrangian (Rockafellar 1973; Nocedal & Wright §17.4): the
      loss's λ·C becomes (max(0, λ + ρC)² − λ²)/(2ρ) and λ <- λ + ρ·C, ρ = `rho`;
    - `frozen`: λ stays at `init`.
    After each update λ is clipped to [min, max].
    """

    init: float | list[float] = 1.0
    update: Literal["gradient", "geco", "nupi", "augmented", "frozen"] = "gradient"
    optimizer: Literal["sgd", "rmsprop", "adam"] = "rmsprop"
    lr: float = Field(1e-4, gt=0)
    ema: float = Field(0.99, ge=0, lt=1)
    min: float = Field(1e-3, ge=0)
    max: float = Field(100.0, gt=0)
    warmup_steps: int = Field(0, ge=0, description="steps before λ starts to move")
    kp: float = Field(0.0, ge=0, description="nupi: proportional gain κ_p (κ_i is lr)")
    nu: float = Field(0.0, ge=0, lt=1, description="nupi: ν, the error's moving-average weight")
    rho: float = Field(1.0, gt=0, description="augmented: penalty coefficient and dual step ρ")

    @model_validator(mode="after")
    def _check(self) -> MultiplierConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        inits = self.init if isinstance(self.init, list) else [self.init]
        if any(v < 0 for v in inits):
            raise ValueError(f"init must be >= 0 (multipliers are non-negative), got {self.init}")
        return self


class ObjectiveConfigBase(_Cfg):
    """What every objective's config has. A user's objective subclasses it:

    - `name` is the name the config gave (a built-in's, an entry point's or an import path);
    - `constraint_names`: one Lagrange multiplier and one `constraint/<name>` metric each (the
      objective then also has a `multiplier: MultiplierConfig` field; see `ConstrainedObjective`);
    - `hyper_fields`: the float fields the objective holds as buffers (targets and weights):
      packed trials and vectorised members may differ in these.
    """

    constraint_names: ClassVar[tuple[str, ...]] = ()
    hyper_fields: ClassVar[tuple[str, ...]] = ()
    name: str
    kl: Literal["analytic", "mc"] = Field(
        "analytic", description="KL[q(z|x)||p(z)] in closed form or as a one-sample estimate"
    )


class ElboConfig(ObjectiveConfigBase):
    """Plain ELBO (Kingma & Welling 2014)."""

    name: Literal["elbo"] = "elbo"


class BetaVaeConfig(ObjectiveConfigBase):
    """β-VAE (Higgins et al. 2017): recon + β·KL."""

    name: Literal["beta_vae"] = "beta_vae"
    hyper_fields = ("beta",)
    beta: float = Field(4.0, ge=0)


class KlAnnealingConfig(ObjectiveConfigBase):
    """recon + β(t)·KL with β(t) from `schedule` (Bowman et al. 2016; Fu et al. 2019)."""

    name: Literal["kl_annealing"] = "kl_annealing"
    schedule: ScheduleConfig = ScheduleConfig()


class GecoConfig(ObjectiveConfigBase):
    """GECO (Rezende & Viola 2018): min KL s.t. recon NLL <= kappa (nats per example)."""

    name: Literal["geco"] = "geco"
    constraint_names = ("recon",)
    hyper_fields = ("kappa",)
    kappa: float = Field(
        90.0,
        description="target for -log p(x|z), nats per example (negative is possible for a "
        "density: gaussian pixels)",
    )
    multiplier: MultiplierConfig = MultiplierConfig(
        init=1.0, update="geco", lr=1e-3, min=1e-6, max=1e6
    )


class LagVaeConfig(ObjectiveConfigBase):
    """Lagrangian VAE (Zhao, Song, Ermon 2018): constraints -ELBO <= ε1, scaled MMD <= ε2."""

    name: Literal["lagvae"] = "lagvae"
    constraint_names = ("neg_elbo", "mmd")
    hyper_fields = ("epsilon", "mi")
    kl: Literal["analytic", "mc"] = "mc"
    mi: float = 1.0
    # ε1 bounds −ELBO (negative is possible with gaussian pixels), ε2 the scaled MMD (>= 0).
    epsilon: tuple[float, Annotated[float, Field(ge=0)]] = (86.0, 5.0)
    mmd_scale: float = Field(1e4, gt=0)
    multiplier: MultiplierConfig = MultiplierConfig(
        init=[1.0, 1.0], update="gradient", optimizer="rmsprop", lr=1e-4, min=1e-3, max=100.0
    )


class InfoVaeConfig(LagVaeConfig):
    """InfoVAE (Zhao, Song, Ermon 2017/2018): the Lagrangian VAE loss with λ frozen."""

    name: Literal["infovae"] = "infovae"  # type: ignore[assignment]
    multiplier: MultiplierConfig = MultiplierConfig(init=[1.0, 1.0], update="frozen")

    @model_validator(mode="after")
    def _frozen(self) -> InfoVaeConfig:
        if self.multiplier.update != "frozen":
            raise ValueError("infovae keeps λ fixed: multiplier.update must be 'frozen'")
        return self


class IcVaeConfig(ObjectiveConfigBase):
    """Invariant conditional VAE (Moyer et al. 2018).

    λ (`multiplier.init`) weighs the invariance term; with `epsilon` set and a non-frozen update
    it becomes a multiplier of the constraint KL[q(z|x)||q(z)] <= epsilon (nats per example).
    """

    name: Literal["icvae"] = "icvae"
    constraint_names = ("invariance",)
    hyper_fields = ("beta", "epsilon")
    beta: float = Field(1.0, ge=0)
    epsilon: float | None = Field(None, ge=0)
    multiplier: MultiplierConfig = MultiplierConfig(init=1.0, update="frozen")

    @model_validator(mode="after")
    def _needs_target(self) -> IcVaeConfig:
        if self.multiplier.update != "frozen" and self.epsilon is None:
            raise ValueError("a learned λ needs a constraint target: set epsilon")
        return self


BUILTIN: dict[str, type[ObjectiveConfigBase]] = {
    get_args(cls.model_fields["name"].annotation)[0]: cls
    for cls in (
        ElboConfig,
        BetaVaeConfig,
        KlAnnealingConfig,
        GecoConfig,
        LagVaeConfig,
        InfoVaeConfig,
        IcVaeConfig,
    )
}


def objective_config(name: str) -> type[ObjectiveConfigBase]:
    """The config class of the objective `name`: a built-in's, or the `config` attribute of the
    `Objective` class an entry point or import path names (`vaestudy.config.plugins`)."""
    return config_class("objectives", name, BUILTIN, ObjectiveConfigBase)
