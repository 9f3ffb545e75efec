"""CPU compute inside Ray workers: normal scheduling priority for the threads that do the work.

Ray starts worker processes at niceness 15. When the compute runs as a team of OpenMP threads, one per core, any
normal-priority process that wakes up (raylet, GCS, dashboard agent, the driver) preempts one thread of the team,
and every parallel region then waits for that straggler. Measured on the 2-core machine: the same vLLM engine call
(8 questions x 4 samples, Qwen2.5-Coder-1.5B float32) ran at 5.3 generated tokens/s at niceness 15 and 12.5 at
niceness 0. Lowering niceness needs the privilege to do so (root, or CAP_SYS_NICE, or an RLIMIT_NICE that allows
it); without it the threads keep Ray's value and a warning says so.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_warned = False


def normal_priority(nice: int = 0) -> int:
    """Set every thread of this process to ``nice`` (threads created later inherit it from their creator).
    Returns how many threads were changed."""
    global _warned
    changed = 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: one priority per process
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            if not _warned:
                _warned = True
                log.warning("cannot lower the niceness of Ray worker threads (no permission): CPU compute keeps "
                            "Ray's worker niceness and may run up to ~2x slower on a busy host")
            break
    return changed
