"""Run configuration: the `data`, `model`, `objective`, `train` sections, validated by pydantic.

A training config is a YAML mapping with those four sections. A study file has the same four
sections (the trial template) plus a `study` section (see `vaestudy.study.spec`). Every key has a
default except where noted, unknown keys are rejected, and errors name the file and the dotted key.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vaestudy.config.dotted import set_dotted
from vaestudy.config.objectives import ElboConfig, ObjectiveConfigBase, objective_config
from vaestudy.config.plugins import PluginError, config_class
from vaestudy.errors import ConfigError
from vaestudy.training.datasets import dataset_class


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Which dataset, where it lives, and how pixels are modelled.

    `pixels`: `bernoulli` treats [0,1] intensities as Bernoulli means (the seeds' BCE loss);
    `binarized` samples x ~ Bernoulli(intensity) afresh for every training batch (dynamic
    binarisation; the test split is binarised once with `seed`); `gaussian` uses
    N(x; sigmoid(logits), gaussian_sigma²) per pixel; `mse` is the Lagrangian VAE seed's
    distortion, Σ_pixels (x − sigmoid(logits))² per example on intensities (its
    `mse_loss(..., reduction='sum') / batch`): a squared error, *not* a log-likelihood, so
    `recon`, −ELBO and targets on them are in squared-intensity units (plus nats of KL), and
    the IWAE bound (`iwae_nll`) is not computed.

    `validation`: the validation split, carved from the training split (after `train_limit`)
    with `seed`: a fraction (< 1) of it or a count of images (default 10%: 400 images of the
    bundled 4,000-image subset, 6,000 of full MNIST). Everything that steers or selects reads
    it (`val/...` metrics); the test split is scored once, at the end of each run. `0` turns it
    off explicitly: then the test split is also the validation split, and reports say so.
    """

    dataset: str = Field(
        "mnist",
        description="a built-in (vaestudy.training.datasets: mnist, fashion_mnist, cifar10, svhn, "
        "omniglot, celeba, dsprites, image_folder, tensors), an installed plugin's name or an "
        "import path 'package.module:Dataset'",
    )
    root: str = Field("data", description="the dataset's folder (tensors: its .npz or .pt file)")
    image_size: int | None = Field(
        None,
        gt=0,
        description="resize every image to image_size x image_size (area interpolation) when "
        "read, e.g. 28 for Omniglot, 64 for CelebA; default: as stored",
    )
    download: bool = Field(False, description="mnist and fashion_mnist: fetch missing files")
    pixels: Literal["bernoulli", "binarized", "gaussian", "mse"] = "binarized"
    gaussian_sigma: float = Field(0.1, gt=0)
    train_limit: int | None = Field(None, gt=0, description="use only the first N training images")
    test_limit: int | None = Field(None, gt=0, description="use only the first N test images")
    validation: float = Field(
        0.1,
        ge=0,
        description="validation split carved from train: a fraction (< 1) or a count of images",
    )
    seed: int = Field(0, description="carves the validation split; binarises val and test once")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        try:
            dataset_class(name)
        except PluginError as exc:
            raise PydanticCustomError("plugin", str(exc)) from None
        return name

    @model_validator(mode="after")
    def _whole_count(self) -> DataConfig:
        if self.validation >= 1 and not float(self.validation).is_integer():
            raise ValueError(
                f"validation: {self.validation!r}: a fraction below 1 or a whole count of images"
            )
        return self

    def validation_count(self, n_train: int) -> int:
        """How many of `n_train` training images the validation split takes."""
        v = self.validation
        return round(v * n_train) if v < 1 else int(v)

    @property
    def log_likelihood(self) -> bool:
        """Whether `recon` is −log p(x|z) in nats (every pixel model but `mse`)."""
        return self.pixels != "mse"


class ModelConfigBase(Section):
    """What every model's config has. A user's network subclasses it (see
    `vaestudy.training.models`): `name` is the name the config gave (a built-in's, an entry point's
    or an import path); `conditional` gives the decoder a one-hot label (needed by icvae)."""

    name: str
    latent_dim: int = Field(16, gt=0, description="latent size (per level for vlae)")
    conditional: bool = False

    def shape_problem(self, shape: tuple[int, int, int]) -> str | None:
        """Why this network cannot take images of `shape` (C, H, W), or None. Checked before a
        study starts, for every trial's data; a user's network may override it."""
        return None


CONV_DOWNSAMPLINGS = {28: 2, 32: 2, 64: 3}  # conv's image sizes: stride-2 convolutions each
LADDER_SIZE = 28  # the vlae ladder's rungs are 28, 13, 6, 3, 1 px


class ModelConfig(ModelConfigBase):
    """The built-in nets (`vaestudy.training.models`), each sized from the data's image shape: mlp
    any shape, conv square 28, 32 or 64 px, vlae 28×28 (any number of channels)."""

    name: Literal["mlp", "conv", "vlae"] = "mlp"
    hidden: int = Field(512, gt=0, description="mlp: first hidden width; vlae: feature width")

    def shape_problem(self, shape: tuple[int, int, int]) -> str | None:
        _, h, w = shape
        if self.name == "conv" and (h != w or h not in CONV_DOWNSAMPLINGS):
            sizes = ", ".join(map(str, CONV_DOWNSAMPLINGS))
            return (
                f"model conv takes square images of {sizes} px, not {h}x{w}; use model.name: "
                "mlp (any shape), data.image_size, or a network of your own"
            )
        if self.name == "vlae" and (h, w) != (LADDER_SIZE, LADDER_SIZE):
            return (
                f"model vlae's ladder takes 28x28 images (its rungs are 28, 13, 6, 3, 1 px), not "
                f"{h}x{w}; use model.name: mlp or conv, or data.image_size: 28"
            )
        return None


BUILTIN_MODELS: dict[str, type[ModelConfigBase]] = dict.fromkeys(
    ("mlp", "conv", "vlae"), ModelConfig
)


class TrainConfig(Section):
    """Optimisation settings. A step is one minibatch; `epochs` counts passes over the data."""

    epochs: float = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamax", "rmsprop", "sgd"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    device: str = Field(
        "auto",
        description="auto: cuda when there is one (in a study: when the trial has a GPU from "
        "study.resources.gpu), else cpu; or cpu, cuda, cuda:N (not in a study: Ray picks the "
        "GPU), mps",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads torch uses (default: torch's own). Float sums depend on it: a "
        "study trial records the count it ran with, so `vaestudy best` + `vaestudy train` "
        "repeat its numbers",
    )
    log_every: int | None = Field(
        None,
        gt=0,
        description="steps between host syncs / trajectory points (default: total steps / 100, "
        "so every run draws a line whatever its budget)",
    )
    eval_every: int = Field(0, ge=0, description="steps between held-out checks (0: each epoch)")
    iwae_samples: int = Field(100, gt=0)
    eval_batch_size: int = Field(500, gt=0)
    compile: bool = Field(False, description="torch.compile the forward pass and loss")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode; reduce-overhead captures CUDA graphs on GPU"
    )
    bf16: bool = Field(
        False,
        description="bfloat16 autocast of the networks (CUDA only); divergences, likelihoods "
        "and constraint values stay float32",
    )
    tf32: bool = Field(
        False,
        description="CUDA: TF32 matrix products and convolutions (faster on Ampere/Hopper, "
        "about 3 decimal digits); default full float32",
    )
    deterministic: bool = Field(
        False, description="deterministic kernels only (torch.use_deterministic_algorithms)"
    )
    max_lambda: float = Field(
        1e5, gt=0, description="a multiplier above this counts as running away (trial stops)"
    )
    stop_saturated: bool = Field(
        False,
        description="stop early once a multiplier has sat at its clip (multiplier.max) for the "
        "last 20% of the planned steps: the target is unreachable at this budget",
    )


class RunConfig(Section):
    """One training run: what `vaestudy train` reads and what a study trial resolves to."""

    data: SerializeAsAny[DataConfig] = DataConfig()
    model: SerializeAsAny[ModelConfigBase] = ModelConfig()
    objective: SerializeAsAny[ObjectiveConfigBase] = Field(default_factory=ElboConfig)
    train: TrainConfig = TrainConfig()

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        """The data section's config class, chosen by `dataset`: `DataConfig`, or a subclass a
        user's dataset declares with its own fields."""
        return _by_name(value, "datasets", "mnist", _data_config, key="dataset")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        """The model's own config class, chosen by `name`: the built-in nets', or a user
        network's, found by entry point or import path."""
        return _by_name(
            value,
            "models",
            "mlp",
            lambda name: config_class("models", name, BUILTIN_MODELS, ModelConfigBase),
        )

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: Any) -> Any:
        """The objective's own config class, chosen by `name` (`objective_config`): a built-in's,
        or a user objective's, found by entry point or import path."""
        return _by_name(value, "objectives", None, objective_config)

    @model_validator(mode="after")
    def _check_combination(self) -> RunConfig:
        if self.objective.name == "icvae" and not self.model.conditional:
            raise ValueError(
                "objective icvae needs a conditional decoder: set model.conditional: true"
            )
        if self.model.name == "vlae" and self.model.conditional:
            raise ValueError("model.conditional is not supported by the vlae ladder")
        return self


def _data_config(name: str) -> type[DataConfig]:
    """`DataConfig`, or the `config` a user's dataset class declares (a subclass of it)."""
    config = getattr(dataset_class(name), "config", None) or DataConfig
    if not (isinstance(config, type) and issubclass(config, DataConfig)):
        raise PluginError(
            f"{name!r}: its attribute `config` must subclass vaestudy.config.run.DataConfig"
        )
    return config


def _by_name(
    value: Any,
    kind: str,
    default: str | None,
    find: Callable[[str], type[BaseModel]],
    key: str = "name",
) -> Any:
    """A section's mapping validated by the config class `find(name)` picks for its `key`
    (`default` where it has none): a plugin that cannot be found or loaded is reported at
    `<section>.<key>`, like any other field's error."""
    if not isinstance(value, dict):
        return value
    name = value.get(key, default)
    try:
        if not isinstance(name, str):
            raise PluginError(
                f"expected the {kind[:-1]}'s name: a built-in's, an installed plugin's or an "
                "import path 'package.module:Class'"
            )
        config = find(name)
    except PluginError as exc:
        error = PydanticCustomError("plugin", str(exc))
        raise ValidationError.from_exception_data(
            kind, [{"type": error, "loc": (key,), "input": name}]
        ) from None
    return config.model_validate(value)


def member_keys(cfg: RunConfig) -> list[str]:
    """The dotted config keys in which vectorised members (`vaestudy.training.vectorized`) and
    packed study trials may differ: the seed, the objective's `hyper_fields` and λ's initial
    value."""
    keys = ["train.seed", *(f"objective.{f}" for f in cfg.objective.hyper_fields)]
    if hasattr(cfg.objective, "multiplier"):
        keys.append("objective.multiplier.init")
    return keys


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning I/O and syntax problems into `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); expected a YAML study "
            "or training config"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["train.epochs=1", "objective.epsilon=[80, 5]"]` -> {dotted key: YAML-parsed value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    tree = copy.deepcopy(raw)
    for key, value in overrides.items():
        try:
            set_dotted(tree, key, value)
        except KeyError as exc:
            raise ConfigError(f"{source}: --set {key}: {exc.args[0]}") from None
    return tree


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `file: dotted.key: what was expected (got ...)`."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] != "missing" and repr(err["input"]) not in msg:
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def validate_run(raw: dict[str, Any], source: str, prefix: str = "") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, prefix)) from None


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a training config or a study file (its template) and apply `--set` overrides."""
    raw = read_yaml(path)
    raw.pop("study", None)
    raw = apply_overrides(raw, parse_overrides(overrides), str(path))
    return validate_run(raw, str(path))
