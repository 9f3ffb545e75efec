"""CPU compute inside Ray workers: normal scheduling priority for the threads that do the work, and DeepSpeed's
CPU ops built once per Python environment.

Ray starts worker processes at niceness 15. When the compute runs as a team of OpenMP threads, one per core, any
normal-priority process that wakes up (raylet, GCS, dashboard agent, the driver) preempts one thread of the team,
and every parallel region then waits for that straggler, so a niced engine generates at a fraction of its speed.
Lowering niceness needs the privilege to do so (root, or CAP_SYS_NICE, or an RLIMIT_NICE that allows
it); without it the threads keep Ray's value and a warning says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_warned = False


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX). Without them vLLM's CPU build
    falls back to a slow bf16 path: float32 ran matrix products ~5x faster on an AVX2-only 2-core machine."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def extensions_dir(prefix: str | None = None) -> Path:
    """Where the JIT-built torch extensions of the Python environment at ``prefix`` (default: this one) live.

    torch's default folder is one per user, shared by every environment, and DeepSpeed's CPU training rebuilds its
    shared-memory communication op there whenever the environment differs from the one that built it last (other
    include paths): close to a minute of compiling inside the first training step of a run, and again in the next
    run of the other environment.
    """
    tag = hashlib.sha1((prefix or sys.prefix).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "torch_extensions" / f"env-{tag}"


def use_own_extensions_dir() -> str:
    """Point ``TORCH_EXTENSIONS_DIR`` at this environment's own folder unless the user set one; returns the value."""
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))


def build_cpu_ops() -> Path | None:
    """Build DeepSpeed's CPU shared-memory op for this environment now (the set-up step), so that training does not
    compile it; returns the folder it is in, or None where DeepSpeed has no such op for this CPU (it then
    communicates over gloo alone)."""
    use_own_extensions_dir()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.comm.torch import build_shm_op

    return None if build_shm_op() is None else Path(os.environ["TORCH_EXTENSIONS_DIR"])


if __name__ == "__main__":  # make setup: python -m scotd.cpu
    logging.basicConfig(level=logging.INFO)
    built = build_cpu_ops()
    print(f"DeepSpeed CPU ops in {built}" if built else "DeepSpeed has no CPU shared-memory op for this machine")
