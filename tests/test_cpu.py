"""normal_priority really changes thread niceness (checked from /proc, in a child process that starts niced);
DeepSpeed's CPU op is built once per environment, where training looks for it."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

CHILD = """
import os, threading, time
from scotd.cpu import normal_priority
stop = threading.Event()
worker = threading.Thread(target=stop.wait)
worker.start()
changed = normal_priority()
nice = {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')}
stop.set()
print(changed, sorted(set(nice.values())))
"""


def test_every_thread_of_a_niced_process_returns_to_normal_priority():
    if os.geteuid() != 0:
        import pytest

        pytest.skip("lowering niceness needs root or CAP_SYS_NICE")
    out = subprocess.run(["nice", "-n", "15", sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert int(out[0]) >= 2 and out[1].strip() == "[0]"


def test_extensions_dir_is_one_per_environment(monkeypatch):
    from scotd.cpu import extensions_dir, use_own_extensions_dir

    a, b = extensions_dir("/envs/a"), extensions_dir("/envs/b")
    assert a != b and a == extensions_dir("/envs/a")
    assert a.parent == Path.home() / ".cache" / "torch_extensions"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert use_own_extensions_dir() == str(extensions_dir()) == os.environ["TORCH_EXTENSIONS_DIR"]
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/somewhere/else")  # the user's choice is kept
    assert use_own_extensions_dir() == "/somewhere/else"


def test_setup_builds_deepspeed_cpu_op_where_training_looks():
    """`python -m scotd.cpu` (make setup) builds DeepSpeed's shared-memory op into this environment's own folder,
    the one training workers use; quick when set-up has already built it, ~50 s of compiling otherwise."""
    from scotd.cpu import extensions_dir

    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    out = subprocess.run([sys.executable, "-m", "scotd.cpu"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"DeepSpeed CPU ops in {extensions_dir()}" in out.stdout
    assert (extensions_dir() / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()
