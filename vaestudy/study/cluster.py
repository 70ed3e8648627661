"""Ray for a study: start or join the cluster, and check that a trial fits on its nodes.

Imports Ray alone (about a second), so `vaestudy run` starts Ray while the tracking server
starts and before it imports the rest (`vaestudy.study.runner`).
"""

from __future__ import annotations

import os

import ray

from vaestudy.errors import ClusterError
from vaestudy.preflight import PreflightError, resource_problem
from vaestudy.study.spec import Study


def start_ray(address: str | None) -> None:
    """Connect to the Ray cluster at `address` (or $RAY_ADDRESS), or start a local one; a
    failure is a `ClusterError` naming the address and the likely causes."""
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address,
            logging_level="ERROR",
            include_dashboard=False,
            log_to_driver=False,  # trial processes' output stays in Ray's session logs
        )
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "no cluster"
        where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"cannot start or reach Ray at {where}: {first}. Likely causes: the cluster uses "
            "token authentication (set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN as on the "
            "cluster), the driver's Ray or Python version differs from the cluster's, the "
            "address or port is unreachable from here, or the machine is too loaded to start "
            "Ray in time. Nothing was run."
        ) from None


def check_cluster(study: Study, address: str | None) -> None:
    """On a cluster (Ray was given an address), check that one trial fits on some node."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        return  # local: checked before anything started (vaestudy.preflight)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problem = resource_problem(study.spec.resources, nodes)
    if problem is not None:
        raise PreflightError(study.source, [problem])
