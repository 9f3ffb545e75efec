"""Experiment tracking, MLflow or W&B: one run per job, with the resolved config as parameters and each stage's
figures as metrics, and one run per student (nested under the job's in MLflow, in the job's group in W&B), logged by
its rank-0 training worker through Ray Train's own integrations (``setup_mlflow`` / ``setup_wandb``): loss, learning
rate and tokens per second per step, dev accuracy per epoch.

The embedded default needs nothing started: an MLflow file store inside the experiment folder (``mlruns/``, read
with ``MlflowClient`` or, with the full ``mlflow`` package, ``mlflow ui --backend-store-uri <output.dir>/mlruns``).
``tracking.uri`` names a tracking server instead (needed when students train on other nodes than the driver's).
With ``backend: wandb`` and no ``uri`` the runs are W&B offline runs in ``wandb/`` (``wandb sync`` uploads them);
a ``uri`` is a W&B server's address (its API key from the environment, as W&B reads it). ``backend: none`` logs
nothing. The tracking library is imported only when tracking is on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scotd.config import ExperimentConfig, to_dict
from scotd.storage import redact

log = logging.getLogger(__name__)

FOLDER = "mlruns"
# MLflow keeps its file store working only when asked to (it recommends a database for servers); scotd's embedded
# default is a file store, read back with MlflowClient or `mlflow ui`.
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"


WANDB_FOLDER = "wandb"


@dataclass(frozen=True)
class StudentTracking:
    """Where a student's training worker logs: the backend, its URI (W&B: the server, "" offline), the experiment
    (W&B: the project) and the job's run (its parent; W&B: the group of the job's runs), and W&B's local folder."""

    uri: str
    experiment_id: str
    parent_run_id: str
    backend: str = "mlflow"
    folder: str = ""


def tracking_uri(cfg: ExperimentConfig, exp_dir: Path) -> str | None:
    """The configured tracking URI, the file store inside the experiment folder, or None when tracking is off
    (W&B: its server, or "" for offline runs)."""
    if cfg.tracking.backend == "none":
        return None
    if cfg.tracking.backend == "wandb":
        return cfg.tracking.uri
    return cfg.tracking.uri or (exp_dir / FOLDER).resolve().as_uri()


def wandb_settings(uri: str) -> dict:
    """``wandb.init`` keywords: offline without a server, quiet in the job's terminal either way."""
    import wandb

    return {"mode": "online" if uri else "offline",
            "settings": wandb.Settings(silent=True, **({"base_url": uri} if uri else {}))}


def allow_file_store(uri: str) -> None:
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault(ALLOW_FILE_STORE, "true")


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """The config as MLflow parameters: dotted keys (list items by index, as overrides write them), values as text
    (MLflow keeps at most 6,000 characters of each)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = redact(str(value))[:6000]  # the config passed reject_credentials: never a secret here

    walk("", to_dict(cfg))
    return out


def numbers(values: dict, prefix: str) -> dict[str, float]:
    """The numeric entries of a summary dict as metrics named ``<prefix>.<key>`` (nested dicts: dotted keys)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(numbers(value, name))
    return out


class Tracker:
    """The job's MLflow run (a no-op when tracking is off). Stages call ``log_metrics``; the students stage hands
    each training job a ``StudentTracking`` to log under."""

    def __init__(self, cfg: ExperimentConfig, exp_dir: Path):
        self.uri = tracking_uri(cfg, exp_dir)
        self.cfg = cfg
        self.folder = exp_dir
        self.client = None
        self.wandb_run = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def start(self, stages: tuple[str, ...]) -> None:
        if self.uri is None:
            return
        if self.cfg.tracking.backend == "wandb":
            return self._start_wandb(stages)
        allow_file_store(self.uri)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        name = self.cfg.tracking.project or self.cfg.name
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(self.experiment_id, run_name=f"{self.cfg.name}: {', '.join(stages)}",
                                     tags={"scotd.stages": ",".join(stages)})
        self.run_id = run.info.run_id
        params = sorted(flat_params(self.cfg).items())
        from mlflow.entities import Param

        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i:i + 100]])
        # The config as one file too. Every folder of a run then holds a file, which MLflow's file store needs to
        # find the run again after the experiment folder was copied (copies keep files, not empty folders).
        self.client.log_dict(self.run_id, to_dict(self.cfg), "config.json")
        log.info("tracking: MLflow run %s in experiment %r at %s", self.run_id, name, self.uri)

    def _start_wandb(self, stages: tuple[str, ...]) -> None:
        import wandb

        project = self.cfg.tracking.project or self.cfg.name
        (self.folder / WANDB_FOLDER).mkdir(parents=True, exist_ok=True)
        self.wandb_run = wandb.init(project=project, name=f"{self.cfg.name}: {', '.join(stages)}",
                                    dir=str(self.folder), config=flat_params(self.cfg), job_type="scotd",
                                    **wandb_settings(self.uri))
        self.run_id, self.experiment_id = self.wandb_run.id, project
        log.info("tracking: W&B run %s in project %r (%s)", self.run_id, project, self.uri or "offline")

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        if self.wandb_run is not None and values:
            self.wandb_run.log(dict(values))  # W&B numbers its own steps; the stage figures are logged once each
            return
        if self.client is None or not values:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def for_student(self) -> StudentTracking | None:
        if self.wandb_run is not None:
            return StudentTracking(self.uri, self.experiment_id, self.run_id, "wandb", str(self.folder))
        if self.client is None:
            return None
        return StudentTracking(self.uri, self.experiment_id, self.run_id)

    def end(self, failed: bool) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
        if self.client is not None:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class _WandbLogger:
    """A W&B run behind the same two calls as MLflow's module: ``log_metrics`` and ``end_run``."""

    def __init__(self, run):
        self.run = run

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self.run.log(dict(values), step=step)

    def end_run(self) -> None:
        self.run.finish()


def student_logger(tracking: StudentTracking | None, name: str, rank: int, settings: dict | None = None):
    """What a student's rank-0 worker logs through: MLflow's module with a run nested under the job's (Ray Train's
    ``setup_mlflow``), a W&B run in the job's group (``setup_wandb``), or None: no tracking, or another rank. The
    run starts with the student's ``settings`` (its config) as parameters and, in MLflow, as ``student.json``."""
    if tracking is None or rank != 0:
        return None
    settings = settings or {}
    params = {k: redact(str(v))[:6000] for k, v in settings.items()}
    if tracking.backend == "wandb":
        from ray.air.integrations.wandb import setup_wandb

        wandb = wandb_settings(tracking.uri)
        if wandb["mode"] == "offline":
            os.environ.setdefault("WANDB_MODE", "offline")  # Ray's helper asks for no API key then
        return _WandbLogger(setup_wandb(config=params, project=tracking.experiment_id, group=tracking.parent_run_id,
                                        name=f"student {name}", dir=tracking.folder, rank_zero_only=True,
                                        **wandb))
    allow_file_store(tracking.uri)
    from ray.air.integrations.mlflow import setup_mlflow

    mlflow = setup_mlflow(tracking_uri=tracking.uri, experiment_id=tracking.experiment_id, run_name=f"student {name}",
                          tags={"mlflow.parentRunId": tracking.parent_run_id, "scotd.student": name},
                          rank_zero_only=True)
    mlflow.log_params(params)
    mlflow.log_dict(settings, "student.json")  # also keeps the run's artifact folder from being empty
    return mlflow
