"""Engine pools in Ray Data: how many batches an engine takes at once, the actor pool, GPU placement, and
``generate_rows``, the one request -> generate -> stream path of teacher sampling, evaluation and the judge."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Any, Iterator

import numpy as np

from scotd.config import EngineConfig
from scotd.inference.actor import VLLMGenerator
from scotd.inference.metrics import stream_batches
from scotd.inference.progress import Reporter, start_board
from scotd.inference.spec import EngineSpec, Sampling, engine_process_env, gpus_per_replica

log = logging.getLogger(__name__)


MAX_BATCHES_IN_FLIGHT = 64


def engine_capacity(spec: EngineSpec) -> int:
    """Sequences one engine decodes at once: ``max_num_seqs``, or vLLM's default for its offline ``LLM`` class when
    unset (vLLM 0.32: 256 on CPU, where scotd's engines are one rank; on GPUs 1024 with 70 GB or more other than
    A100s, 256 on A100s and smaller GPUs; the larger value is taken, since a driver does not know its engines' GPUs
    and sequences beyond the engine's own cap just wait in its queue)."""
    if spec.max_num_seqs:
        return spec.max_num_seqs
    return 1024 if spec.use_gpu else 256


def batches_to_fill(spec: EngineSpec, batch_size: int, samples_per_request: int) -> int:
    """Batches an engine takes at once to stay full: enough for ``engine_capacity`` sequences, and one more that
    waits in the engine's queue, so that while the oldest batch's last sequences finish the next batch's join.

    A step over more sequences costs little more time than one over few, so an engine that always has its full load
    generates fastest (``benchmarks/sampling.py --concurrent-batches`` compares counts). At most 64 calls: smaller
    batches than that needs should be made larger (``batch_size``) rather than queued as hundreds of Ray tasks.
    """
    return min(math.ceil(engine_capacity(spec) / max(batch_size * samples_per_request, 1)) + 1, MAX_BATCHES_IN_FLIGHT)


def generate(ds, spec: EngineSpec, sampling: Sampling, *, replicas: int | tuple[int, int], batch_size: int,
             num_cpus: float, run: str = "teacher", resource: str | None = None,
             concurrent_batches: int | None = None, samples_per_request: int = 1, progress: str | None = None):
    """Map ``ds`` through a pool of ``replicas`` engines (a count, or a (min, max) autoscaling range); returns the
    lazy output dataset (streamed by the caller). ``run`` tags the dashboard metrics; ``resource`` is a custom Ray
    resource each replica asks for, one unit per GPU (keeps replicas on the nodes that offer it);
    ``concurrent_batches`` batches share each engine at once (see the module docstring; None: ``batches_to_fill``
    for rows of ``samples_per_request`` samples each)."""
    if concurrent_batches is None:
        concurrent_batches = batches_to_fill(spec, batch_size, samples_per_request)
        log.info("%s: %d batches of %d x %d sequences at once per engine (%d sequences a step at most)", run,
                 concurrent_batches, batch_size, samples_per_request, engine_capacity(spec))
    kwargs: dict[str, Any] = dict(
        fn_constructor_kwargs={"spec": asdict(spec), "sampling": asdict(sampling), "run": run,
                               "concurrent_batches": concurrent_batches, "progress": progress},
        batch_size=batch_size,
        compute=pool_strategy(replicas, concurrent_batches),
        num_cpus=num_cpus,
    )
    bundles = replica_bundles(spec, resource, num_cpus)
    if len(bundles) > 1:
        kwargs["ray_remote_args_fn"] = _placement(bundles)
    elif spec.use_gpu:
        kwargs["num_gpus"] = 1
        if resource:
            kwargs["resources"] = {resource: 1.0}
    if env := engine_process_env(spec):
        kwargs["runtime_env"] = {"env_vars": env}
    return ds.map_batches(VLLMGenerator, **kwargs)


def generate_rows(requests: list[dict], spec: EngineSpec, sampling: Sampling, engine: EngineConfig, *,
                  num_cpus: float, run: str, label: str, key: str = "question_id",
                  expected_tokens: float | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Answer ``requests`` (rows as the engine callable takes them) on ``engine``'s pool of replicas and yield the
    output batches as engine calls finish, logging progress under ``label``: generated tokens, their rate and the
    time left (``scotd.inference.progress``; ``expected_tokens`` per sequence until enough have finished, by
    default half the token budget), and the distinct ``key`` values done.

    The engine pool's size and the batches each engine takes at once come from ``engine`` (``concurrent_batches``;
    unset: as many as fill it); the sequences one request asks at a time from the rows (their ``n``) or, when
    sampling in rounds, from ``sampling.per_round``."""
    import ray

    if not requests:
        return
    board, name = start_board()
    replicas = replica_range(engine)
    try:
        out = generate(ray.data.from_items(requests), spec, sampling, replicas=replicas,
                       batch_size=engine.batch_size, num_cpus=num_cpus, run=run, resource=engine.resource,
                       concurrent_batches=engine.concurrent_batches,
                       samples_per_request=sampling.per_round or max(int(r.get("n", 1)) for r in requests),
                       progress=name)
        seen: set = set()
        sequences = sum(int(r.get("n", 1)) for r in requests)
        min_replicas = replicas if isinstance(replicas, int) else replicas[0]
        with Reporter(board, label=label, sequences=sequences, total=len({r[key] for r in requests}),
                      expected_tokens=expected_tokens or sampling.max_new_tokens / 2, unit="questions",
                      done=lambda: len(seen), in_flight=engine_capacity(spec) * max(min_replicas, 1),
                      max_tokens=sampling.max_new_tokens):
            yield from stream_batches(out, total=len({r[key] for r in requests}), label=label, key=key, seen=seen)
    finally:
        ray.kill(board)


def replica_range(engine: EngineConfig) -> int | tuple[int, int]:
    """Ray Data ``concurrency``: a fixed pool, or (min, max) for an autoscaling pool (``max_replicas`` below
    ``num_replicas`` is refused when the config loads)."""
    if engine.max_replicas is None or engine.max_replicas == engine.num_replicas:
        return engine.num_replicas
    return (engine.num_replicas, engine.max_replicas)


def pool_strategy(replicas: int | tuple[int, int], concurrent_batches: int):
    """Ray Data's actor pool for ``replicas`` engines taking ``concurrent_batches`` calls each.

    A fixed pool queues one task per actor beyond those running, so that the next batch is there when one finishes.
    An autoscaling pool adds an engine only once its tasks in flight reach ``actor_pool_util_upscaling_threshold``
    (Ray 2.60: 1.75) times its running slots, so it queues that many: with one more than running, a (min, max) range
    would never grow past its minimum (Ray Data warns so at start).
    """
    import ray

    in_flight = concurrent_batches + 1
    if isinstance(replicas, tuple):
        threshold = ray.data.DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold
        in_flight = max(in_flight, math.ceil(threshold * concurrent_batches))
        size = {"min_size": replicas[0], "max_size": replicas[1]}
    else:
        size = {"size": replicas}
    return ray.data.ActorPoolStrategy(**size, max_concurrent_calls_per_actor=concurrent_batches,
                                      max_tasks_in_flight_per_actor=in_flight)


def replica_bundles(spec: EngineSpec, resource: str | None, num_cpus: float) -> list[dict[str, float]]:
    """Resources of one engine replica, one bundle per GPU (the actor's CPUs go with the first one); a CPU engine
    is one bundle of CPUs. ``resource`` (a custom resource such as ``teacher``) is asked once per GPU."""
    gpus = gpus_per_replica(spec)
    if gpus == 0:
        return [{"CPU": num_cpus}]
    gpu = {"GPU": 1.0, **({resource: 1.0} if resource else {})}
    return [{"CPU": num_cpus, **gpu}] + [dict(gpu) for _ in range(gpus - 1)]


def _placement(bundles: list[dict[str, float]]):
    """A multi-GPU replica runs in its own placement group of one-GPU bundles on one node: vLLM's Ray executor
    starts its tensor/pipeline-parallel workers in the group the actor was scheduled in."""

    def remote_args() -> dict:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = ray.util.placement_group(bundles, strategy="STRICT_PACK")
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}

    return remote_args
