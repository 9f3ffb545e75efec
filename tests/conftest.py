"""Shared test fixtures: one real Ray head per test session (started like a user starts one, with the dashboard,
job API and Prometheus metrics on 127.0.0.1 and token auth on), paths to ../shared/data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RAY = str(Path(sys.executable).with_name("ray"))

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Token auth on for the session's head and every client (ray.init, the job CLI and SDK read ~/.ray/auth_token).
# Set before anything imports ray: Ray reads it once.
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present (the project's shared benchmark files)")
    return SHARED_DATA


@dataclass(frozen=True)
class RayHead:
    gcs_address: str
    dashboard_url: str
    metrics_url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(items):
    """Mark every test that uses the session's Ray head ``ray``: ``make test-fast`` leaves them out."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Start a Ray head (`ray start --head --block`, so that stopping it stops exactly this session's processes),
    connect this process to it, and stop it at the end. num_cpus=4 on 2 cores: with as many logical CPUs as cores
    Ray Data's actors and Ray Train's workers can wait on each other's reservations for ever."""
    import ray

    if not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True)
    gcs, dashboard, metrics = free_port(), free_port(), free_port()
    log = open(tmp_path_factory.mktemp("ray_head") / "head.log", "w")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--metrics-export-port={metrics}",
         "--num-cpus=4", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    info = RayHead(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", f"http://127.0.0.1:{metrics}/metrics")
    try:
        wait_for_http(f"{info.dashboard_url}/api/version", head, timeout_s=120)
        ray.init(address=info.gcs_address, log_to_driver=False)
        yield info
    finally:
        ray.shutdown()
        head.terminate()  # `ray start --block` drains and stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray head exited with {process.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as err:
            if getattr(err, "code", None) is not None:  # an HTTP error code (e.g. 401) means the server is up
                return
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def signal_once_written(command: list[str], env: dict, folder: Path, sig: int, log_path: Path) -> tuple[int, str]:
    """Run ``command`` in a process group of its own until a Parquet file appears in ``folder``, then send ``sig`` to
    the whole group (as ``timeout``, a scheduler or a lost node do); returns its exit code and its output."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 600
        try:
            while not list(folder.glob("*.parquet")):
                assert proc.poll() is None, f"{command[3:5]} exited early: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no file in {folder} in 10 minutes"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=300)  # a job that was told to stop winds its Ray cluster down first
    return proc.returncode, log_path.read_text()
