"""normal_priority really changes thread niceness (checked from /proc, in a child process that starts niced)."""

import os
import subprocess
import sys

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
