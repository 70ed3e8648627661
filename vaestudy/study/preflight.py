"""Checks a study must pass before anything is spent: no Ray session, no MLflow run, no folder.

- **Data**: the raw files of every data configuration the search can produce (the template's,
  and every combination of the values searched under `data`) are present and readable.
- **Stores**: the tracking store answers (or, for a local SQLite file, can be written), the
  Optuna storage's database answers (or can be written), and Ray Tune's storage path can be
  written (a URI such as `s3://...`: can be opened), and each local filesystem they (and Ray's
  temporary files) live on has room (`vaestudy.study.disk_watch`). On a cluster, each node's own
  reach is checked once Ray is connected (`vaestudy.study.cluster.check_nodes_reach`).
- **Cluster and resources**: one trial's request (`study.resources`) fits on one node: this
  machine's CPUs and GPUs for a local run; with `--address`, the head node answers on its
  port, and the request is checked against the cluster's nodes once Ray is connected. A study
  asking for GPUs where there are none is refused, saying what there is; and a trial's device
  memory, estimated (`vaestudy.training.memory`), must fit the fraction of a GPU it asks for
  (`study.resources.gpu` × the smallest GPU).

Every problem is reported together in one `PreflightError` (the CLI exits with status 2).
`vaestudy validate` runs the same checks. Standard library and the configs only: no Ray or
MLflow (pyarrow, to open a storage URI such as `s3://...`, only when one is given; torch, to
count a network's parameters on its `meta` device, only for a study that asks for GPUs).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vaestudy.config.run import DataConfig, RunConfig
from vaestudy.errors import UserError
from vaestudy.study.disk_watch import low_space, study_paths
from vaestudy.study.gpus import gpu_memory
from vaestudy.study.spec import Resources, Study
from vaestudy.tracking.stores import (
    database_problem,
    optuna_storage_url,
    remote_storage_problem,
    tracking_problem,
    tune_storage_uri,
    unreachable,
    writable_path_problem,
)
from vaestudy.training.datasets import data_problem, dataset_class


class PreflightError(UserError):
    """One or more reasons the study cannot start; nothing was created."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: the study cannot start (nothing was run or created):\n{lines}")
        self.problems = list(problems)


def trial_configs(study: Study, sections: tuple[str, ...]) -> list[RunConfig]:
    """Trial configurations of `study` at every combination of the extremes of its searched
    keys in `sections` (e.g. data, model)."""
    extremes = study.extremes()
    keys = [k for k in extremes if k.split(".")[0] in sections]
    return [
        study.trial_config(dict(zip(keys, values, strict=True)))
        for values in itertools.product(*(extremes[k] for k in keys))
    ]


# What a dataset's files and image shape do not depend on.
_NOT_FILES = {"pixels", "gaussian_sigma", "train_limit", "test_limit", "validation", "seed"}


def data_configs(study: Study) -> list[DataConfig]:
    """Every distinct data configuration (as far as the files go) a trial of `study` can have."""
    found: dict[str, DataConfig] = {}
    for cfg in trial_configs(study, ("data",)):
        found.setdefault(cfg.data.model_dump_json(exclude=_NOT_FILES), cfg.data)
    return list(found.values())


def shape_problems(study: Study) -> list[str]:
    """Each network a trial can have against the image shape of its data, where the dataset
    knows it before reading (`Dataset.shape`); the data's files must be readable."""
    shapes = {
        cfg.model_dump_json(exclude=_NOT_FILES): dataset_class(cfg.dataset)(cfg).image_shape()
        for cfg in data_configs(study)
    }
    problems: dict[str, None] = {}  # in order, once each
    for cfg in trial_configs(study, ("data", "model")):
        shape = shapes.get(cfg.data.model_dump_json(exclude=_NOT_FILES))
        if shape is not None and (problem := cfg.model.shape_problem(shape)):
            size = "x".join(map(str, shape))
            problems[f"data.dataset {cfg.data.dataset}: images are {size}: {problem}"] = None
    return list(problems)


def resource_problem(
    resources: Resources, nodes: Sequence[Mapping[str, float]], where: str
) -> str | None:
    """Why one trial's request cannot be placed on any of `nodes` (each node's total resources,
    Ray's names: CPU, GPU) of `where` (this machine, the Ray cluster), or None."""
    most = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if resources.cpu > most:
        return (
            f"study.resources.cpu: each trial asks for {resources.cpu:g} CPUs, but the largest "
            f"node has {most:g}; lower it (trials would stay PENDING forever)"
        )
    if resources.gpu and not any(
        node.get("CPU", 0) >= resources.cpu and node.get("GPU", 0) for node in nodes
    ):
        cpus, gpus = (sum(node.get(k, 0.0) for node in nodes) for k in ("CPU", "GPU"))
        count = f"{len(nodes)} nodes: " if len(nodes) > 1 else ""
        lacks = (
            f"no node with a GPU has {resources.cpu:g} CPUs"
            if gpus
            else f"{where} has no GPU to give it"
        )
        return (
            f"study.resources.gpu: each trial asks for {resources.gpu:g} of a GPU, but {lacks} "
            f"({count}{cpus:g} CPUs, {gpus:g} GPUs); set study.resources.gpu: 0 to train on "
            "CPU (train.device: auto then means cpu), or run where there are GPUs (trials "
            "would stay PENDING forever)"
        )
    return None


def memory_problem(study: Study, gpu_bytes: int, where: str) -> str | None:
    """Why a trial of `study` (a pack, with `study.pack`) cannot fit `study.resources.gpu` of a
    GPU of `gpu_bytes` on `where`, or None: the largest estimate over every data, model and
    training configuration the search can produce."""
    from vaestudy.training.memory import GIB, describe, trial_memory

    share = study.spec.resources.gpu * gpu_bytes
    estimates = [trial_memory(cfg, study.spec.pack)
                 for cfg in trial_configs(study, ("data", "model", "train"))]  # fmt: skip
    known = [parts for parts in estimates if parts is not None]
    worst = max(known, key=lambda parts: sum(parts.values()), default=None)
    if worst is None or sum(worst.values()) <= share:
        return None
    unit = "pack" if study.spec.pack > 1 else "trial"
    return (
        f"study.resources.gpu: {study.spec.resources.gpu:g} of {where}'s {gpu_bytes / GIB:.1f} "
        f"GiB GPU is {share / GIB:.2f} GiB, but each {unit} needs {describe(worst)}; raise "
        "study.resources.gpu (fewer trials share a GPU), or lower data.train_limit, "
        "train.batch_size or study.pack"
    )


def ray_address(address: str | None) -> str | None:
    """The Ray cluster a study joins: `--address`, else $RAY_ADDRESS; None: a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def cluster_problem(address: str | None, timeout: float = 5.0) -> str | None:
    """Why the Ray cluster at `address` (`host:port` or `ray://host:port`; default
    $RAY_ADDRESS) cannot be reached, or None (also for no address and for `auto`). Ray itself
    would retry an unreachable address for minutes."""
    address = ray_address(address)
    if not address or address == "auto":
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT, or auto)"
    if (exc := unreachable(host, int(port), timeout)) is not None:
        return (
            f"Ray cluster {address} is unreachable ({exc}): is the head node up (`ray start "
            "--head`), and is its GCS port open to this machine?"
        )
    return None


def study_problems(
    study: Study,
    *,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    optuna_storage: str | None = None,
) -> list[str]:
    """Every reason `study` cannot start here (see the module doc); empty when it can."""
    problems = [p for cfg in data_configs(study) if (p := data_problem(cfg)) is not None]
    readable = not problems
    if readable:  # the shapes come from readable files
        problems += shape_problems(study)
    problems.append(tracking_problem(tracking_uri))
    problems.append(database_problem(optuna_storage_url(optuna_storage), "Optuna storage"))
    storage = tune_storage_uri(storage_path)
    if "://" in storage:
        problems.append(remote_storage_problem(storage))
    else:
        problems.append(writable_path_problem(Path(storage), "Ray Tune storage (--storage-path)"))
    problems.append(low_space(study_paths(tracking_uri, storage_path, optuna_storage)))
    if ray_address(address):
        problems.append(cluster_problem(address))
    else:
        gpus = gpu_memory() if study.spec.resources.gpu else []
        local = {"CPU": os.cpu_count() or 1, "GPU": len(gpus)}
        problems.append(resource_problem(study.spec.resources, [local], "this machine"))
        if gpus and readable:  # the estimate counts the data's images in their files
            problems.append(memory_problem(study, min(gpus), "this machine"))
    return [p for p in problems if p is not None]


def check_study(study: Study, **where: str | None) -> None:
    """Raise `PreflightError` listing every problem `study_problems` finds."""
    problems = study_problems(study, **where)
    if problems:
        raise PreflightError(study.source, problems)
