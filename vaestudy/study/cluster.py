"""Ray for a study: start or join the cluster, check that a trial fits on its nodes and that
every node reaches the study's stores.

Imports Ray alone (about a second), so `vaestudy run` starts Ray while the tracking server
starts and before it imports the rest (`vaestudy.study.tuner`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import ray

from vaestudy.errors import ClusterError
from vaestudy.study.gpus import gpu_memory
from vaestudy.study.preflight import (
    PreflightError,
    memory_problem,
    ray_address,
    resource_problem,
)
from vaestudy.study.spec import Study
from vaestudy.tracking.processes import descendants, kill
from vaestudy.tracking.stores import (
    PASSWORD_ENV,
    USERNAME_ENV,
    remote_storage_problem,
    tracking_problem,
)

LOCAL_ATTEMPTS = 3  # a local Ray start that times out is tried this many times in all


def start_ray(address: str | None) -> None:
    """Connect to the Ray cluster at `address` (or $RAY_ADDRESS), or start a local one; a
    failure is a `ClusterError` naming the address and the likely causes.

    Ray waits a fixed 30 s for a new local node to register (`ray/_private/node.py`); on a
    loaded machine it may not. A local start that times out is stopped (every process it
    started) and tried again, up to `LOCAL_ATTEMPTS` times in all, saying so on stderr."""
    if ray.is_initialized():
        return
    # The tracking server's credentials (`vaestudy.tracking.stores.take_credentials`) reach the
    # trial processes of every node through the job's environment, never through Tune's storage.
    secrets = {k: os.environ[k] for k in (USERNAME_ENV, PASSWORD_ENV) if k in os.environ}
    where = ray_address(address)
    for attempt in range(1, (1 if where else LOCAL_ATTEMPTS) + 1):
        before = descendants()
        try:
            ray.init(
                address=address,
                logging_level="ERROR",
                include_dashboard=False,
                log_to_driver=False,  # trial processes' output stays in Ray's session logs
                runtime_env={"env_vars": secrets} if secrets else None,
            )
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "no cluster"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if where:
                raise ClusterError(
                    f"cannot reach Ray at {where}: {first}. Likely causes: the cluster uses "
                    "token authentication (set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN as on "
                    "the cluster), the driver's Ray or Python version differs from the "
                    "cluster's, or the address or port is unreachable from here. Nothing was run."
                ) from None
            ray.shutdown()
            kill(descendants() - before)  # what the failed start left running
            if attempt < LOCAL_ATTEMPTS and "timed out" in first:
                print(
                    f"Ray's local node did not start within Ray's fixed 30 s ({machine_load()});"
                    f" starting it again (attempt {attempt + 1} of {LOCAL_ATTEMPTS})",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            raise ClusterError(
                f"cannot start a local Ray instance (attempt {attempt} of {LOCAL_ATTEMPTS}): "
                f"{first}. Likely causes on this machine: it is too loaded to start Ray in "
                f"time ({machine_load()}), its temporary folder ({_ray_temp()}) is full or "
                "not writable, or Ray processes of an earlier run are stuck (`ray stop` ends "
                "them). Nothing was run."
            ) from None


def machine_load() -> str:
    """`load average 9.3 on 2 cores`, or what is known."""
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return f"{os.cpu_count()} cores"


def _ray_temp() -> str:
    return os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), "ray")


def check_cluster(study: Study, address: str | None, timeout: float = 60.0) -> None:
    """On a cluster (Ray was given an address), check that one trial fits on some node: its
    CPUs, a GPU if it asks for one, and its estimated device memory in its share of the
    smallest GPU of the cluster's GPU nodes (asked of each node by a task pinned to it)."""
    if not ray_address(address):
        return  # local: checked before anything started (vaestudy.study.preflight)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    problem = resource_problem(
        study.spec.resources, [n["Resources"] for n in alive], "the Ray cluster"
    )
    if problem is None and study.spec.resources.gpu:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0)(gpu_memory)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in alive
            if n["Resources"].get("GPU", 0) > 0
        ]
        try:
            sizes = [size for sizes in ray.get(refs, timeout=timeout) for size in sizes]
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot ask there"
            print(
                f"note: the GPU nodes did not say their GPUs' memory ({type(exc).__name__}); "
                "the trials' device memory is not checked",
                file=sys.stderr,
            )
            sizes = []
        if sizes:
            problem = memory_problem(study, min(sizes), "the cluster")
    if problem is not None:
        raise PreflightError(study.source, [problem])


def check_nodes_reach(tracking_uri: str, storage: str, timeout: float = 60.0) -> None:
    """On a cluster of several nodes, every node that can run trials must reach the tracking
    server and Ray Tune's storage. Checked for real, by a task pinned to each such node: a
    loopback server (the local store's) or a folder on the driver's disk passes on one machine
    and fails on a cluster, where trials would otherwise die at their first log or checkpoint.
    Raises `ClusterError` naming each node and the fix."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) < 2:
        return
    marker = None
    if "://" not in storage:  # can the nodes see what the driver writes there?
        Path(storage).mkdir(parents=True, exist_ok=True)
        marker = Path(storage) / f".vaestudy-visible-{uuid.uuid4().hex}"
        marker.write_text("")
    probe = ray.remote(num_cpus=0)(reach_problems)
    try:
        refs = {
            f"{node['NodeManagerAddress']} ({node['NodeID'][:12]})": probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(tracking_uri, storage, str(marker) if marker else None)
            for node in alive
            if node["Resources"].get("CPU", 0) > 0
        }
        problems = []
        for where, ref in refs.items():
            try:
                problems += [f"node {where}: {p}" for p in ray.get(ref, timeout=timeout)]
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot check there"
                problems.append(f"node {where}: the check did not run ({type(exc).__name__})")
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    if problems:
        raise ClusterError(
            "trials on this cluster's nodes could not use the study's stores (nothing was "
            "run):\n" + "\n".join(f"  - {p}" for p in problems)
        )


def reach_problems(tracking_uri: str, storage: str, marker: str | None) -> list[str]:
    """On a node: why it cannot reach the tracking server or see Tune's storage (`marker`: a
    file the driver wrote in a local storage folder)."""
    problems = []
    if (why := tracking_problem(tracking_uri)) is not None:
        problems.append(
            f"{why}. Run one tracking server every node reaches and pass --tracking-uri "
            "http://HOST:PORT (mlflow/README.md, 'A shared server for a Ray cluster')"
        )
    if marker is not None and not Path(marker).exists():
        problems.append(
            f"Ray Tune storage {storage} is a folder on the driver's machine that this node "
            "does not see: pass --storage-path s3://BUCKET/PATH (or gs://...), or a folder "
            "every node mounts"
        )
    elif marker is None and (why := remote_storage_problem(storage)) is not None:
        problems.append(why)
    return problems
