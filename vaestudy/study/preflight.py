"""Checks a study must pass before anything is spent: no Ray session, no MLflow run, no folder.

- **Data**: the raw files of every data configuration the search can produce (the template's,
  and every combination of the values searched under `data`) are present and readable.
- **Stores**: the tracking store answers (or, for a local SQLite file, can be written), the
  Optuna storage's database answers (or can be written), and Ray Tune's storage path can be
  written (a URI such as `s3://...`: can be opened), and each local filesystem they (and Ray's
  temporary files) live on has room (`vaestudy.study.disk_watch`). On a cluster, each node's own
  reach is checked once Ray is connected (`vaestudy.study.cluster.check_nodes_reach`).
- **Cluster and resources**: one trial's request (`study.resources`) fits on one node: this
  machine's CPUs for a local run; with `--address`, the head node answers on its port, and the
  request is checked against the cluster's nodes once Ray is connected.

Every problem is reported together in one `PreflightError` (the CLI exits with status 2).
`vaestudy validate` runs the same checks. Standard library and the configs only: no torch,
Ray or MLflow (pyarrow, to open a storage URI such as `s3://...`, only when one is given).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vaestudy.config.run import DataConfig, RunConfig
from vaestudy.errors import UserError
from vaestudy.study.disk_watch import low_space, study_paths
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


def _trial_configs(study: Study, sections: tuple[str, ...]) -> list[RunConfig]:
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
    for cfg in _trial_configs(study, ("data",)):
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
    for cfg in _trial_configs(study, ("data", "model")):
        shape = shapes.get(cfg.data.model_dump_json(exclude=_NOT_FILES))
        if shape is not None and (problem := cfg.model.shape_problem(shape)):
            size = "x".join(map(str, shape))
            problems[f"data.dataset {cfg.data.dataset}: images are {size}: {problem}"] = None
    return list(problems)


def resource_problem(resources: Resources, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why one trial's request cannot be placed on any of `nodes` (each node's total resources,
    Ray's names: CPU, GPU), or None. A GPU request on GPU-less nodes is no problem: trials then
    run on CPU (the runner says so)."""
    most = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if resources.cpu > most:
        return (
            f"study.resources.cpu: each trial asks for {resources.cpu:g} CPUs, but the largest "
            f"node has {most:g}; lower it (trials would stay PENDING forever)"
        )
    return None


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
    if not problems:  # the shapes come from readable files
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
        problems.append(resource_problem(study.spec.resources, [{"CPU": os.cpu_count() or 1}]))
    return [p for p in problems if p is not None]


def check_study(study: Study, **where: str | None) -> None:
    """Raise `PreflightError` listing every problem `study_problems` finds."""
    problems = study_problems(study, **where)
    if problems:
        raise PreflightError(study.source, problems)
