"""A local study's network namespace (`vaestudy.study.isolation`): a process moved into one sees
only loopback, reaches what it serves there, and cannot be reached from the machine's other
addresses; a threaded process is left where it is; only a study that needs nothing beyond the
machine is moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from vaestudy.study.isolation import local_study

PROBE = """
import json, os, socket, threading
from vaestudy.study.isolation import isolate
if {threaded}:
    threading.Thread(target=threading.Event().wait, args=(5,), daemon=True).start()
why = isolate()
server = socket.socket()
server.bind(("0.0.0.0", 0))
server.listen()
socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=5).close()
interfaces = [line.split(":")[0].strip() for line in open("/proc/self/net/dev").readlines()[2:]]
print(json.dumps([why, os.readlink("/proc/self/ns/net"), interfaces,
                  os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")]))
"""


def probe(threaded: bool) -> list:
    code = PROBE.format(threaded=threaded)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_fresh_process_moves_into_a_namespace_with_loopback_only():
    why, namespace, interfaces, ray_mode = probe(threaded=False)
    assert why is None
    assert namespace != os.readlink("/proc/self/ns/net")
    assert interfaces == ["lo"]  # what it listens on, even on 0.0.0.0, is loopback alone
    assert ray_mode == "0"  # Ray takes 127.0.0.1 as the node without probing for a route


def test_a_process_running_threads_is_left_where_it_is():
    why, namespace, interfaces, ray_mode = probe(threaded=True)
    assert why == "the process already runs threads"
    assert namespace == os.readlink("/proc/self/ns/net") and ray_mode is None


def test_only_a_study_that_needs_nothing_beyond_the_machine_is_local():
    sqlite = "sqlite:////tmp/s/mlflow.db"
    assert local_study(sqlite, sqlite, "/tmp/ray_results", None)
    assert not local_study("http://mlflow:5000", sqlite, "/tmp/ray_results", None)
    assert not local_study("postgresql://db/mlflow", sqlite, "/tmp/ray_results", None)
    assert not local_study(sqlite, "postgresql://db/optuna", "/tmp/ray_results", None)
    assert not local_study(sqlite, sqlite, "s3://bucket/ray_results", None)
    assert not local_study(sqlite, sqlite, "/tmp/ray_results", "10.0.0.1:6379")
