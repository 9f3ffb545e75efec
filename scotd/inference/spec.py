"""What an engine is: its settings (``EngineSpec``, ``Sampling``), the CPU environment vLLM's CPU build needs, and
building one ``vllm.LLM``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from scotd.config import EngineConfig, OutputConfig
from scotd import cpu
from scotd.cpu import normal_priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build one ``vllm.LLM``; plain data so it crosses to Ray actors."""

    model: str
    dtype: str = "auto"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    cpu_kvcache_gb: int = 2
    block_size: int | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    trust_remote_code: bool = False
    chat_template: bool = False
    use_gpu: bool = False
    # Where an engine copies a model given as a URI (a student of an experiment stored at s3://...), on its own node.
    cache_dir: str = OutputConfig.cache_dir
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # any other vllm.LLM setting, applied last


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    logprobs: bool = True
    repetition_penalty: float = 1.0
    # Rounds (teacher.samples_per_round; 0: all of a request's n at once) and when a request stops between them
    # (``inference.rounds``): a repeated sample, or enough distinct rationales that reach the row's gold answer.
    per_round: int = 0
    stop_when_repeated: bool = False
    stop_at_distinct: int = 0


def engine_spec(engine: EngineConfig, model_path: str, cache_dir: str = OutputConfig.cache_dir,
                seed: int = 0) -> EngineSpec:
    """The settings of ``engine`` for ``model_path`` (a folder, hub id or URI: a URI is copied under ``cache_dir``
    on the engine's node)."""
    return EngineSpec(model=model_path, cache_dir=cache_dir, dtype=engine.dtype, max_model_len=engine.max_model_len,
                      tensor_parallel_size=engine.tensor_parallel_size,
                      pipeline_parallel_size=engine.pipeline_parallel_size,
                      gpu_memory_utilization=engine.gpu_memory_utilization, max_num_seqs=engine.max_num_seqs,
                      cpu_kvcache_gb=engine.cpu_kvcache_gb, block_size=engine.block_size,
                      enable_prefix_caching=engine.enable_prefix_caching, seed=seed,
                      trust_remote_code=engine.trust_remote_code, chat_template=engine.chat_template,
                      use_gpu=engine.use_gpu, engine_kwargs=dict(engine.engine_kwargs))


def question_seed(seed: int, question_id: str) -> int:
    """A per-question seed: the same config samples the same completions, whatever the sharding or resume point."""
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def cpu_engine_env(spec: EngineSpec) -> dict[str, str]:
    """Environment for vLLM's CPU build, as defaults only: a value the user set always wins.

    Without a KV-cache size vLLM CPU reserves most of the RAM and fails; by default it also reserves one core for
    itself and binds the model to the others, which on a 2-core machine leaves the engine one core.
    """
    cores = os.cpu_count() or 1
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(spec.cpu_kvcache_gb),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # Run the engine core in the actor's own process: one fewer process to spawn (and vLLM to import) per
        # engine on a machine where each import costs tens of seconds.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def resolve_dtype(spec: EngineSpec) -> str:
    """``auto``: bfloat16 on GPUs and on CPUs with native bf16, float32 on other CPUs; anything else as given."""
    if spec.dtype != "auto":
        return spec.dtype
    return "bfloat16" if spec.use_gpu or cpu.cpu_has_bf16() else "float32"


def bound_cores(bind: str) -> list[int]:
    """CPU ids of a ``VLLM_CPU_OMP_THREADS_BIND`` value such as ``0-3``, ``0,2,4-5`` (``auto``/``nobind``: all)."""
    if bind in ("auto", "nobind", "all", ""):
        return sorted(os.sched_getaffinity(0))
    cores: list[int] = []
    for part in bind.split("|")[0].split(","):
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def _use_bound_cores(bind: str) -> None:
    """Give the engine one compute thread per bound core.

    Ray sets ``OMP_NUM_THREADS`` to a worker's ``num_cpus`` (1 for an engine actor), and with the engine core in
    the actor's process vLLM would keep that one thread. The engine's cores are its ``VLLM_CPU_OMP_THREADS_BIND``,
    so its thread count follows them.
    """
    import torch

    threads = len(bound_cores(bind))
    if torch.get_num_threads() != threads:
        log.info("engine threads: %d -> %d (cores %s)", torch.get_num_threads(), threads, bind)
        set_torch_threads(threads)


def set_torch_threads(threads: int) -> None:
    """``torch.set_num_threads`` for the calling thread, also once vLLM's CPU worker has replaced it by a no-op
    (it does so after binding its own threads; threads started later still need their count)."""
    import torch

    torch._C.set_num_threads(threads)


def build_llm(spec: EngineSpec):
    """Create the engine. Imports vLLM here so that ``import scotd`` stays light."""
    if not spec.use_gpu:
        for key, value in cpu_engine_env(spec).items():
            os.environ.setdefault(key, value)
        _use_bound_cores(os.environ["VLLM_CPU_OMP_THREADS_BIND"])
        normal_priority()
    from vllm import LLM

    kwargs: dict[str, Any] = dict(
        model=spec.model,
        dtype=resolve_dtype(spec),
        max_model_len=spec.max_model_len,
        seed=spec.seed,
        enable_prefix_caching=spec.enable_prefix_caching,
        trust_remote_code=spec.trust_remote_code,
    )
    if spec.max_num_seqs:
        kwargs["max_num_seqs"] = spec.max_num_seqs
    if spec.use_gpu:
        kwargs.update(tensor_parallel_size=spec.tensor_parallel_size,
                      pipeline_parallel_size=spec.pipeline_parallel_size,
                      gpu_memory_utilization=spec.gpu_memory_utilization)
        if spec.block_size:
            kwargs["block_size"] = spec.block_size
        if gpus_per_replica(spec) > 1:
            # Inside a Ray actor vLLM places its workers in the placement group the actor was scheduled in.
            kwargs["distributed_executor_backend"] = "ray"
    else:
        # CUDA graphs do not exist on CPU; block 32 lets prefix caching cover the question too, not just exemplars.
        # No chunked prefill: vLLM 0.32's CPU runner fails on a seeded request whose prompt is prefilled in chunks
        # ("CPU Generator does not use offset"), which a call over many long prompts does. Without chunking a step
        # takes whole prompts up to its token budget (vLLM's CPU default 4096, at least max_model_len).
        kwargs.update(enforce_eager=True, block_size=spec.block_size or 32, enable_chunked_prefill=False,
                      max_num_batched_tokens=max(4096, spec.max_model_len))
    kwargs.update(spec.engine_kwargs)  # the user's other vLLM settings, over scotd's CPU defaults too
    return LLM(**kwargs)


def sampling_params(s: Sampling, n: int, seed: int, stop: str):
    """The ``SamplingParams`` of one request row (``stop``: a JSON list). Seeds only where sampling."""
    from vllm import SamplingParams

    sampled = s.temperature > 0
    return SamplingParams(n=int(n), temperature=s.temperature, top_p=s.top_p if sampled else 1.0,
                          max_tokens=s.max_new_tokens, seed=int(seed) if sampled else None,
                          stop=json.loads(str(stop)), include_stop_str_in_output=True,
                          logprobs=0 if s.logprobs else None, repetition_penalty=s.repetition_penalty)


def engine_process_env(spec: EngineSpec) -> dict[str, str]:
    """Environment an engine's Ray worker process must start with (Ray's ``runtime_env``; the job's own
    ``env_vars`` still apply).

    CPU engines: ``OMP_NUM_THREADS`` = the engine's bound cores. Ray starts workers with ``OMP_NUM_THREADS`` set to
    their ``num_cpus`` (1), and although ``build_llm`` raises the engine thread's count afterwards, the OpenMP runtime
    has read the variable at start-up: its worker threads then sleep between parallel regions instead of waiting for the
    next one, and the engine leaves its cores partly idle. The cores are counted on the driver's machine
    (``VLLM_CPU_OMP_THREADS_BIND`` if set there, else all of them), which is the engine's machine for the local clusters
    CPU engines are meant for.
    """
    if spec.use_gpu:
        return {}
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or cpu_engine_env(spec)["VLLM_CPU_OMP_THREADS_BIND"]
    return {"OMP_NUM_THREADS": str(len(bound_cores(bind)))}


def gpus_per_replica(spec: EngineSpec) -> int:
    return spec.tensor_parallel_size * spec.pipeline_parallel_size if spec.use_gpu else 0
