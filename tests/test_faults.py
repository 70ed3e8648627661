"""Faults injected for real into `vaestudy run` (real processes, real signals, the real local
tracking server and Ray): each ends in bounded time with an honest exit status and loses
nothing (issue 24)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CLI, TINY, cli, sets, write_study
from vaestudy.cli import EXIT_BAD_INPUT, EXIT_INFRA, EXIT_OK
from vaestudy.tracking.processes import alive, descendants

pytestmark = pytest.mark.slow


def run_statuses(db: Path) -> list[str]:
    """Every run's status in a local MLflow store, read without MLflow (read-only SQLite)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        try:
            return [status for (status,) in con.execute("select status from runs")]
        except sqlite3.OperationalError:  # the server has not made its tables yet
            return []


def command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def listening(pid: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses that listening TCP sockets are bound to in `pid`'s network namespace."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                words = bytes.fromhex(local.split(":")[0])  # 32-bit words, each little-endian
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
                found.add(ipaddress.ip_address(raw))
    return found


def loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def start_and_wait_for_a_trial(
    args: list[str], cwd: Path, db: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start `vaestudy run` and return once one of its trials is training (a child run is
    RUNNING beside the parent)."""
    driver = subprocess.Popen(
        [*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 300
    while run_statuses(db).count("RUNNING") < 2:
        if driver.poll() is not None:  # its last words, whole (pytest would cut a long repr)
            out, err = driver.communicate()
            code = driver.returncode
            pytest.fail(f"vaestudy run exited {code} before a trial ran:\n{err[-6000:]}")
        assert time.monotonic() < deadline, "no trial started in 300 s"
        time.sleep(0.5)
    return driver


@pytest.mark.alone  # once, beside another test file's studies, its driver exited 1 before a trial
def test_sigterm_and_sighup_stop_like_ctrl_c_and_sigkill_leaves_no_process(tmp_path, shared_data):
    """A local study runs in a network namespace of its own: every process of it (Ray's
    included) is there, and all that listens there is on loopback. SIGTERM and SIGHUP mid-trial:
    exit 143 and 129 within a minute, the resume command printed, no run left RUNNING. SIGKILL
    of the driver: its tracking server is gone within seconds (`vaestudy.tracking.server_guard`),
    Ray and every other process it started within three minutes (Ray's agents exit once they find
    their raylet gone, after trying to report to the dead GCS); `--resume` then finishes the study
    with every trial."""
    path = write_study(tmp_path, shared_data, name="signals", max_concurrent=1)
    db = tmp_path / "mlflow" / "mlflow.db"  # the embedded default store (no --tracking-uri)
    start = ["run", str(path), *sets([*TINY, "train.epochs=30"]), "--trials", "3"]
    resume = ["run", str(path), "--resume"]
    for args, sig, status in ((start, signal.SIGTERM, 143), (resume, signal.SIGHUP, 129)):
        driver = start_and_wait_for_a_trial(args, tmp_path, db)
        if sig == signal.SIGTERM:  # a local study: its own network namespace, loopback only
            study = {driver.pid, *descendants(driver.pid)}
            assert (
                {os.readlink(f"/proc/{pid}/ns/net") for pid in study}
                == {os.readlink(f"/proc/{driver.pid}/ns/net")}
                != {os.readlink("/proc/self/ns/net")}
            )
            bound = listening(driver.pid)
            assert len(bound) and all(loopback(a) for a in bound), bound
        began = time.monotonic()
        driver.send_signal(sig)
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == status, out + err
        assert time.monotonic() - began < 60
        assert "continue it with: vaestudy run" in err and "--resume" in err
        assert "RUNNING" not in run_statuses(db)
        assert "SIGTERM received" not in err + out  # not Ray's abort

    driver = start_and_wait_for_a_trial(resume, tmp_path, db)
    started = descendants(driver.pid)  # the guarded tracking server, Ray, its workers
    server = {pid for pid in started if b"mlflow" in command(pid)}
    assert server, "the local tracking server runs below the driver"
    driver.kill()
    driver.communicate(timeout=30)
    for pids, seconds in ((server, 20), (started, 180)):
        deadline = time.monotonic() + seconds
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(1)
        left = {pid: command(pid)[:60] for pid in alive(pids)}
        assert not left, f"alive {seconds} s after the driver's SIGKILL: {left}"

    done = cli(resume, tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert "RUNNING" not in run_statuses(db)
    assert "3 trials finished" in done.stdout


def test_a_damaged_local_store_is_named_in_seconds_and_left_as_it_was(tmp_path, shared_data):
    """16 pages of a real MLflow SQLite store overwritten: `validate` and `run` refuse it in
    preflight (exit 2, naming the file and what to do), `studies`, `report` and `best` answer in
    one line without a traceback, and the file is not touched."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    client = MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.create_experiment("damaged"))
    client.log_param(run.info.run_id, "x", 1)
    with db.open("r+b") as f:  # pages 2..17 (of 4 KiB): the schema's and the runs' b-trees
        f.seek(4096)
        f.write(bytes(range(256)) * 16 * 16)
    before = db.read_bytes()
    path = write_study(tmp_path, shared_data, name="damaged")
    for args in (["validate", str(path)], ["run", str(path)], ["studies"],
                 ["report", "damaged"], ["best", "damaged"]):  # fmt: skip
        began = time.monotonic()
        proc = cli(args, tmp_path, timeout=120)
        assert proc.returncode == EXIT_BAD_INPUT, (args, proc.stdout, proc.stderr)
        assert f"tracking store {db} is damaged" in proc.stderr and ".damaged" in proc.stderr
        assert "Traceback" not in proc.stderr and time.monotonic() - began < 30
    assert db.read_bytes() == before


@pytest.mark.alone  # MLflow's basic auth hashes the password per request: slow beside a test
def test_credentials_in_the_tracking_uri_work_and_are_never_shown(tmp_path, shared_data):
    """A real MLflow server with basic auth: a study given `http://admin:PASSWORD@host:port`
    runs and logs its trials; a wrong password is refused in preflight (exit 2) naming the user;
    the password appears in no output, log file, tag or param."""
    from mlflow.tracking import MlflowClient

    from vaestudy.tracking.stores import check_server, free_port

    password = "pw-7f3c9e2a-secret"
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'auth-store.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            time.sleep(1)
        path = write_study(tmp_path, shared_data, name="secret", max_concurrent=1)
        wrong = cli(["validate", str(path), "--tracking-uri",
                     f"http://admin:not-{password}@127.0.0.1:{port}"], tmp_path)  # fmt: skip
        assert wrong.returncode == EXIT_BAD_INPUT
        assert "refused user 'admin' (HTTP 401)" in wrong.stderr
        uri = f"http://admin:{password}@127.0.0.1:{port}"
        run = cli(["run", str(path), "--tracking-uri", uri, *sets(TINY), "--trials", "1"],
                  tmp_path)  # fmt: skip
        assert run.returncode == EXIT_OK, run.stderr
        shown = cli(["studies", "--tracking-uri", uri], tmp_path)
        assert shown.returncode == EXIT_OK and "secret" in shown.stdout
        logs = [p.read_text(errors="replace") for p in (tmp_path / "ray_results").glob("*.log")]
        outputs = [wrong.stdout, wrong.stderr, run.stdout, run.stderr, shown.stdout, shown.stderr]
        assert logs and all(password not in text for text in [*outputs, *logs])
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            "admin", password)  # fmt: skip
        try:
            check_server(f"http://127.0.0.1:{port}")
            client = MlflowClient(f"http://127.0.0.1:{port}")
            runs = client.search_runs([client.get_experiment_by_name("secret").experiment_id])
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        assert len(runs) == 2  # the study and its trial
        for r in runs:
            assert all(password not in str(v) for v in [*r.data.tags.values(),
                                                        *r.data.params.values()])  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_local_tracking_server_killed_mid_study_is_restarted_and_nothing_is_lost(
    tmp_path, shared_data
):
    """SIGKILL to the study's own `mlflow server` and its uvicorn worker while a trial trains:
    the guard starts it again on the same store and port, the trial's client carries on, and
    the study ends 0 with every trial finished and every trajectory point logged (the trial
    that trained through the outage has as many as the one after it)."""
    path = write_study(tmp_path, shared_data, name="outage", max_concurrent=1)
    db = tmp_path / "mlflow" / "mlflow.db"
    args = ["run", str(path), *sets([*TINY, "train.epochs=30"]), "--trials", "2"]
    driver = start_and_wait_for_a_trial(args, tmp_path, db)
    server = {
        pid
        for pid in descendants(driver.pid)
        if b"mlflow" in command(pid) and b"server_guard" not in command(pid)
    }
    assert server, "the tracking server runs below the driver"
    for pid in server:
        os.kill(pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == EXIT_OK, out + err
    assert "starting it again" in (tmp_path / "mlflow" / "server.log").read_text()
    assert "RUNNING" not in run_statuses(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        points = dict(
            con.execute(
                "select m.run_uuid, count(*) from metrics m join tags t on t.run_uuid = "
                "m.run_uuid where t.key = 'mlflow.parentRunId' and m.key = 'train/loss' "
                "group by m.run_uuid"
            ).fetchall()
        )
        finals = con.execute("select count(*) from latest_metrics where key = 'test/kl'")
        assert finals.fetchone()[0] == 2
    assert len(points) == 2 and len(set(points.values())) == 1, points


def test_a_remote_tracking_server_that_stays_down_ends_the_study_and_resume_sends_the_rest(
    tmp_path, shared_data
):
    """The study's `http://` tracking server stopped while a trial trains, and left down: the
    study stops within its silence limit and seconds (exit 1, naming the server, printing the
    resume command). The trial's client gives up at once (no retries), so it trains on and keeps
    the unsent points in its checkpoints. With the server back, `--resume` finishes the trial
    from its last checkpoint: no run is left RUNNING, every trajectory step is in MLflow exactly
    once, and the run has one final test value."""
    from vaestudy.study.server_watch import SILENCE_ENV
    from vaestudy.tracking.stores import free_port, serve

    (tmp_path / "remote").mkdir()
    db = tmp_path / "remote" / "mlflow.db"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    path = write_study(tmp_path, shared_data, name="silent", max_concurrent=1)
    changes = [*TINY, "train.epochs=150", "study.checkpoint_interval_s=0"]
    args = ["run", str(path), "--tracking-uri", uri, *sets(changes), "--trials", "1"]
    env = {**os.environ, SILENCE_ENV: "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with serve(f"sqlite:///{db}", port=port):
        driver = start_and_wait_for_a_trial(args, tmp_path, db, env)
        time.sleep(3)
    began = time.monotonic()  # the server is down from here on
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == EXIT_INFRA, out + err
    assert time.monotonic() - began < 15 + 30
    assert f"stopped: the tracking server at {uri} has not answered for" in err
    assert "continue it with" in err and "Traceback" not in out + err

    with serve(f"sqlite:///{db}", port=port):
        done = cli(["run", str(path), "--resume", "--tracking-uri", uri], tmp_path)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "1 trials finished, 0 diverged, 0 errored" in done.stdout.replace("\n", " ")
    assert "RUNNING" not in run_statuses(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "select m.run_uuid, m.key, m.step, count(*) from metrics m join tags t on "
            "t.run_uuid = m.run_uuid where t.key = 'mlflow.parentRunId' and m.key in "
            "('train/loss', 'test/kl') group by m.run_uuid, m.key, m.step"
        ).fetchall()
    assert {count for *_, count in rows} == {1}
    steps = sorted(step for _, key, step, _ in rows if key == "train/loss")
    assert steps == list(range(2, 150 * 10 + 1, 2))  # 10 batches an epoch, a point every 2
    assert sum(key == "test/kl" for _, key, *_ in rows) == 1


def test_two_studies_started_together_on_one_new_store_both_finish(tmp_path, shared_data):
    """Two `vaestudy run` in one fresh folder, 2 s apart: both start a tracking server on the
    same new SQLite store (and both open the same new Optuna database); both finish, exit 0."""
    drivers = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        path = write_study(folder, shared_data, name=name, max_concurrent=1)
        args = ["run", str(path), *sets([*TINY, "study.resources.cpu=1"]), "--trials", "1"]
        drivers.append(subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))  # fmt: skip
        time.sleep(2)
    for driver in drivers:
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == EXIT_OK, out + err
    assert run_statuses(tmp_path / "mlflow" / "mlflow.db").count("FINISHED") == 4


def test_a_filling_disk_stops_the_study_in_seconds_and_resume_loses_nothing(tmp_path, shared_data):
    """The study's folder on a real 256 MiB filesystem (tmpfs). Too full at the start: refused
    in preflight (exit 2). Filled while a trial trains: the study stops within a minute, exit 1,
    naming the filesystem, no logging tracebacks, no run left RUNNING, nothing called diverged;
    with room again, `--resume` finishes every trial and keeps those that had finished."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)], check=True)
    try:
        path = write_study(disk, shared_data, name="full", max_concurrent=1)
        db = disk / "mlflow" / "mlflow.db"
        filler = disk / "filler"

        def fill(leave_mb: int) -> None:  # real blocks (tmpfs does not back a sparse file)
            size_mb = shutil.disk_usage(disk).free // 2**20 - leave_mb
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", f"count={size_mb}",
                            "status=none"], check=True)  # fmt: skip

        fill(leave_mb=40)
        refused = cli(["validate", str(path)], disk)
        assert refused.returncode == EXIT_BAD_INPUT and f"filesystem at {disk}" in refused.stderr
        filler.unlink()

        args = ["run", str(path), *sets([*TINY, "train.epochs=30"]), "--trials", "3"]
        driver = start_and_wait_for_a_trial(args, disk, db)
        fill(leave_mb=40)
        began = time.monotonic()
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == EXIT_INFRA, out + err
        assert time.monotonic() - began < 60
        assert f"stopped: disk nearly full: the filesystem at {disk}" in err
        assert "continue it with" in err and "Logging error" not in out + err
        assert "0 diverged" in out.replace("\n", " ")
        assert "RUNNING" not in run_statuses(db)
        finished = run_statuses(db).count("FINISHED")

        filler.unlink()
        done = cli(["run", str(path), "--resume"], disk)
        assert done.returncode == EXIT_OK, done.stdout + done.stderr
        assert "3 trials finished, 0 diverged, 0 errored" in done.stdout.replace("\n", " ")
        assert run_statuses(db).count("FINISHED") >= finished + 1  # none discarded
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.alone
def test_a_local_start_on_a_machine_loaded_8x_its_cores_succeeds(tmp_path, shared_data, server):
    """CPU hogs, 8 per core, hold the machine while a study starts Ray locally: progress shows
    from the first seconds (on stderr), the start succeeds (a local Ray start that misses Ray's
    own fixed 30 s node wait is stopped and tried again), and the study finishes. The hogs stop
    once Ray is up: the fault is Ray's start."""
    path = write_study(tmp_path, shared_data, name="loaded")
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(8 * (os.cpu_count() or 1))
    ]
    try:
        args = ["run", str(path), "--tracking-uri", server, "--trials", "1", *sets(TINY)]
        started = time.monotonic()
        driver = subprocess.Popen(
            [*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines = [driver.stderr.readline()]
        first_line_s = time.monotonic() - started
        while lines[-1] and "Ray is up" not in lines[-1]:
            lines.append(driver.stderr.readline())
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    out, err = driver.communicate(timeout=600)
    shown = "".join(lines) + err
    assert driver.returncode == EXIT_OK, shown
    assert lines[0].startswith("[") and "checking" in lines[0], shown
    assert first_line_s < 15, f"the first progress line took {first_line_s:.0f} s"
    assert "starting Ray (local)" in shown and "Ray is up" in shown
    assert "1 trials finished" in out
