"""The whole job on one Ray cluster: the stages of the table in ``scotd.stages``, in order.

This module only runs them; each stage's logic lives in its own
module. Stages hand off only through files in the experiment folder (``scotd.layout``), so any stage can be rerun
on existing artifacts and a rerun of the whole job skips finished work (teacher blocks, trained students, finished
evaluation runs).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from scotd import layout, provenance, tracking
from scotd.config import ConfigError, ExperimentConfig
from scotd.console import interruption
from scotd.experiment import Experiment
from scotd.schema import write_text
from scotd.stages import BY_NAME, NAMES, from_on

log = logging.getLogger(__name__)


@contextmanager
def ray_cluster(cfg: ExperimentConfig):
    """Use the running Ray session, the cluster of ``ray job submit`` (RAY_ADDRESS), the configured address, or
    start a local cluster that lives as long as the job. Unless ``resources.worker_logs`` asks for workers' output
    in the terminal, the driver's other output goes to ``scotd-driver-<pid>.log`` in the Ray session's log folder
    (``console.other_output_to``), so the terminal shows scotd's lines only."""
    import ray

    from scotd.console import other_output_to, quiet_ray_data, ray_init_kwargs, stop_on_signals

    quiet_ray_data()
    if ray.is_initialized():
        yield
        return
    res = cfg.resources
    with ExitStack() as stack:
        name = f"scotd-driver-{os.getpid()}.log"
        other = (stack.enter_context(other_output_to(Path(tempfile.gettempdir()) / "ray" / name))
                 if not res.worker_logs else None)
        if res.address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=res.address or os.environ["RAY_ADDRESS"], **ray_init_kwargs(res.worker_logs))
        else:
            ray.init(address="local", num_cpus=res.num_cpus, include_dashboard=False,
                     **ray_init_kwargs(res.worker_logs))
        stack.callback(ray.shutdown)
        stop_on_signals()  # Python's handlers again, in place of the core worker's
        logs = ray_logs_folder()
        if other is not None and Path(logs).is_dir():
            try:
                os.replace(other, Path(logs) / name)  # the open file follows
                other = Path(logs) / name
            except OSError:  # another file system: it stays where it is
                pass
        log.info("Ray workers' logs (engines, training): %s%s", logs,
                 f"; the driver's other output: {other}" if other else "")
        yield


def ray_logs_folder() -> str:
    """The Ray session's log folder on this node (where ``resources.worker_logs: false`` leaves workers' output)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # no public API names it in Ray 2.60
    return (str(Path(node.get_session_dir_path()) / "logs") if node
            else str(Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def forget_timings(path: Path, stages: list[str]) -> None:
    """Drop the wall times of ``stages`` (their outputs were removed: they are timed afresh)."""
    timings = _read_json(path)
    if timings and any(stage in timings for stage in stages):
        write_text(path, json.dumps({k: v for k, v in timings.items() if k not in stages}, indent=2))


def run(cfg: ExperimentConfig, stages: tuple[str, ...] = NAMES, *, restart: str | None = None,
        config_path: str = "CONFIG") -> Experiment:
    """Run ``stages`` in order; writes the resolved config and per-stage wall times into the experiment folder.

    A rerun reuses finished work only when it was built from this config's values (``scotd.provenance``);
    ``restart`` first removes the outputs of that stage and every later one, so they are built again."""
    unknown = [s for s in stages if s not in BY_NAME]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; stages: {', '.join(NAMES)}")
    if restart and restart not in BY_NAME:
        raise ConfigError(f"--restart {restart}: not a stage; stages: {', '.join(NAMES)}")
    exp = Experiment(cfg)
    if any(BY_NAME[stage].ray for stage in stages):
        from scotd.preflight import summary_line
        from scotd.prompts import render_answer

        answers = [render_answer(e.rationale, e.question.gold) for shots in exp.all_exemplars().values()
                   for e in shots]
        log.info("%s", summary_line(cfg, answers))
    if cfg.cpu_sized:
        log.info("CPU without native bf16: every model runs float32; the config's without_native_bf16 sizes apply "
                 "(%s; the command line's overrides win)", ", ".join(f"{k}={v}" for k, v in
                                                                     cfg.without_native_bf16.items()))
    exp.mirror.check_writable()
    try:
        exp.dir.mkdir(parents=True, exist_ok=True)
        exp.mirror.pull()  # a rerun from a fresh machine resumes from what output.dir already holds
        if restart:
            removed = provenance.restart(exp.dir, restart)
            forget_timings(layout.timings(exp.dir), [stage.name for stage in from_on(restart)])
            exp.mirror.delete(*removed)
            log.info("restart from stage %s: removed %s", restart, ", ".join(removed) or "nothing (none there)")
        provenance.check(exp.dir, cfg, stages, config_path)
        exp.write_config()
    except OSError as err:
        raise ConfigError(f"output.dir: {exp.dir}: cannot write there: {err.strerror or err}") from None
    timings_path = layout.timings(exp.dir)
    timings = _read_json(timings_path) or {}
    exp.tracker.start(stages)
    failed = True
    try:
        with ExitStack() as cluster:
            have_cluster = False
            for stage in stages:
                if BY_NAME[stage].ray and not have_cluster:
                    cluster.enter_context(ray_cluster(cfg))  # after the stages that need no cluster checked the data
                    have_cluster = True
                log.info("=== stage %s ===", stage)
                started = time.monotonic()
                try:
                    for step in BY_NAME[stage].steps:
                        step(exp)
                except KeyboardInterrupt as err:  # SIGTERM or SIGINT (scotd.console), as raised or as Ray re-raised it
                    stop = interruption(err)
                    stop.stage = stage
                    if stop is err:
                        raise
                    raise stop from None
                finally:
                    # summed over the runs of this folder, stopped ones included: a resumed stage shows all the
                    # time its work took
                    timings[stage] = round(timings.get(stage, 0.0) + time.monotonic() - started, 1)
                    write_text(timings_path, json.dumps(timings, indent=2))
                exp.tracker.log_metrics({f"stage_seconds.{stage}": timings[stage]})
                exp.mirror.push(*BY_NAME[stage].outputs, layout.CONFIG, layout.TIMINGS, layout.PROVENANCE,
                                layout.LIMITS, tracking.FOLDER)
        failed = False
    finally:
        exp.tracker.end(failed)
        exp.mirror.push(tracking.FOLDER)
    return exp
