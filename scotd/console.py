"""What the job's terminal shows: scotd's stage lines, progress and report; libraries only when they warn.

The engines' and training workers' own output (vLLM's start-up INFO lines, Ray Train's actor messages) stays in
the Ray session's log folder unless ``resources.worker_logs`` asks for it (``ray_init_kwargs``). In the driver
process the libraries' loggers are raised to WARNING and their progress bars turned off.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# Set before the libraries are imported: they read these once.
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # libraries' own bars (transformers' GGUF conversion, model shard writing)
}
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "vllm", "transformers", "DeepSpeed", "deepspeed",
                 "torch", "urllib3", "filelock", "datasets")


class _Formatter(logging.Formatter):
    """``12:03:04 message`` for scotd's INFO lines; other levels and loggers are named."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%H:%M:%S")
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno == logging.INFO and record.name.startswith("scotd"):
            return f"{stamp} {message}"
        return f"{stamp} {record.levelname} {record.name}: {message}"


def setup(level: int = logging.INFO) -> None:
    """Route logging to stderr with scotd's format; quiet the libraries (environment values already set win)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("scotd").setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Raise the libraries' loggers to WARNING (again after Ray Data's import, which configures its own)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_ray_data() -> None:
    """Ray Data's progress bars and per-dataset INFO lines off: scotd's stream logs done, rate and time left."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    # An engine holds its model and KV cache (GBs) by design; Ray Data's high-memory detector repeats that every 30 s.
    detectors = getattr(ctx, "issue_detectors_config", None)
    if detectors is not None and hasattr(detectors, "high_memory_detector_config"):
        detectors.high_memory_detector_config.detection_time_interval_s = -1
    quiet_libraries()
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled" each stage


def ray_init_kwargs(worker_logs: bool) -> dict:
    """``ray.init`` arguments: the driver's Ray messages at WARNING; workers' output in the terminal only when asked."""
    return {"log_to_driver": worker_logs, "logging_level": logging.WARNING}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: the job stops where it is. Everything a stage finished is on disk (teacher blocks,
    trained students, evaluation answers), so the same command resumes.

    A ``KeyboardInterrupt``: no library's ``except Exception`` swallows it, and Ray's core worker, which runs the
    signal handler itself while the driver waits in ``ray.get``, stops the wait on it (any other exception raised
    there is lost). Ray then raises a ``KeyboardInterrupt`` of its own: ``interruption`` turns that back into this,
    with the signal that arrived."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.stage: str | None = None  # the stage that was running (set by the pipeline)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


_received: list[int] = []  # the signal that stopped the job, once one has


def interruption(err: KeyboardInterrupt) -> Interrupted:
    """``err`` as scotd reports it: itself when ``stop_on_signals`` raised it; otherwise (a library re-raised the
    stop as a ``KeyboardInterrupt`` of its own, or Python's own handler saw Ctrl-C) an ``Interrupted`` for the signal
    received, SIGINT when none was recorded."""
    if isinstance(err, Interrupted):
        return err
    return Interrupted(_received[0] if _received else signal.SIGINT)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise ``Interrupted`` in the main thread, once: a second one while the job winds down
    (stopping the local Ray cluster) is ignored. Installed again after ``ray.init``, whose core worker puts its own
    handlers (a stack dump on SIGTERM) in place of Python's."""

    def stop(signum, frame):
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        _received.append(signum)
        raise Interrupted(signum)

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, stop)


@contextmanager
def other_output_to(path: Path):
    """While the job's Ray cluster is up, everything the driver process writes to its stdout and stderr but scotd's
    own log lines goes to ``path``: Ray's messages (token auth, worker pool warnings forwarded from the raylet), its
    core worker's native log lines and stack dumps, libraries' prints. scotd's handler keeps the terminal (a copy of
    the original stderr); a handler writing to a capture object (a test's) is left as it is.

    Yields the path, which may be renamed (``os.replace``) while open: the file follows."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    moved = [h for h in logging.getLogger().handlers
             if isinstance(h, logging.StreamHandler) and _fileno(h.stream) == 2]
    previous = [h.setStream(terminal) for h in moved]
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = open(path, "a", buffering=1)
    for fd in (1, 2):
        os.dup2(sink.fileno(), fd)
    try:
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for handler, stream in zip(moved, previous):
            handler.setStream(stream)
        terminal.close()
        sink.close()


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both an OSError and a ValueError
        return None
