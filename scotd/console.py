"""What the job's terminal shows: scotd's stage lines, progress and report; libraries only when they warn.

The engines' and training workers' own output (vLLM's start-up INFO lines, Ray Train's actor messages) stays in
the Ray session's log folder unless ``resources.worker_logs`` asks for it (``ray_init_kwargs``). In the driver
process the libraries' loggers are raised to WARNING and their progress bars turned off.
"""

from __future__ import annotations

import logging
import os
import sys

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
