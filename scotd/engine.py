"""vLLM inside Ray Data: the one generation path shared by teacher sampling and evaluation.

Why not ``ray.data.llm``: its vLLM stage keeps only ``outputs[0]`` of each request, so ``n=30`` parallel samples
would silently come back as one. Parallel sampling (``SamplingParams(n=N)``) is what makes the prompt cost paid once
per question (one prefill, N decodes forked from it), so scotd drives ``vllm.LLM`` itself from a callable class that
Ray Data runs as an actor pool (``map_batches(..., concurrency=replicas)``). Prefix caching additionally shares the
few-shot exemplar prefix across questions.

Rows in: ``prompt`` (str), ``seed`` (int), ``n`` (int), ``stop`` (JSON list of strings) and any pass-through
columns (scalars only: lists travel as JSON text, so ragged lists never become Ray tensor columns).
Rows out: one per completion: the pass-through columns + ``sample_index``, ``text``, ``num_tokens``,
``logprob_sum``, ``finish_reason``, ``num_prompt_tokens``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build one ``vllm.LLM``; plain data so it crosses to Ray actors."""

    model: str
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    cpu_kvcache_gb: int = 2
    block_size: int | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    trust_remote_code: bool = False
    chat_template: bool = False
    use_gpu: bool = False


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    logprobs: bool = True


def cpu_engine_env(spec: EngineSpec) -> dict[str, str]:
    """Environment for vLLM's CPU build, as defaults only: a value the user set always wins.

    Without a KV-cache size vLLM CPU reserves 92 % of RAM and fails; by default it binds the model to one core and
    reserves the other, which halved throughput on 2 cores (STACK-NOTES).
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


def build_llm(spec: EngineSpec):
    """Create the engine. Imports vLLM here so that ``import scotd`` stays light."""
    if not spec.use_gpu:
        for key, value in cpu_engine_env(spec).items():
            os.environ.setdefault(key, value)
    from vllm import LLM

    kwargs: dict[str, Any] = dict(
        model=spec.model,
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        seed=spec.seed,
        enable_prefix_caching=spec.enable_prefix_caching,
        trust_remote_code=spec.trust_remote_code,
    )
    if spec.use_gpu:
        kwargs.update(tensor_parallel_size=spec.tensor_parallel_size,
                      gpu_memory_utilization=spec.gpu_memory_utilization)
        if spec.tensor_parallel_size > 1:
            # Inside a Ray actor vLLM places its TP workers in the placement group the actor was scheduled in.
            kwargs["distributed_executor_backend"] = "ray"
    else:
        # CUDA graphs do not exist on CPU; block 32 lets prefix caching cover the question too, not just exemplars.
        kwargs.update(enforce_eager=True, block_size=spec.block_size or 32)
    if spec.block_size and spec.use_gpu:
        kwargs["block_size"] = spec.block_size
    return LLM(**kwargs)


class VLLMGenerator:
    """Ray Data callable class: one vLLM engine per actor, one ``generate`` call per batch of prompts."""

    def __init__(self, spec: dict, sampling: dict):
        self.spec = EngineSpec(**spec)
        self.sampling = Sampling(**sampling)
        started = time.monotonic()
        self.llm = build_llm(self.spec)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM engine for %s ready in %.1f s", self.spec.model, time.monotonic() - started)

    def _prompt(self, prompt: str) -> str:
        if not self.spec.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from vllm import SamplingParams

        s = self.sampling
        params = [
            SamplingParams(n=int(n), temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                           max_tokens=s.max_new_tokens, seed=int(seed), stop=json.loads(str(stop)),
                           include_stop_str_in_output=True, logprobs=0 if s.logprobs else None)
            for n, seed, stop in zip(batch["n"], batch["seed"], batch["stop"])
        ]
        prompts = [self._prompt(str(p)) for p in batch["prompt"]]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        keep = [k for k in batch if k not in ("prompt", "seed", "n", "stop")]
        rows: dict[str, list] = {k: [] for k in keep}
        rows.update(sample_index=[], text=[], num_tokens=[], logprob_sum=[], finish_reason=[], num_prompt_tokens=[])
        for i, out in enumerate(outputs):
            for j, comp in enumerate(out.outputs):
                for k in keep:
                    rows[k].append(batch[k][i])
                rows["sample_index"].append(j)
                rows["text"].append(comp.text)
                rows["num_tokens"].append(len(comp.token_ids))
                rows["logprob_sum"].append(comp.cumulative_logprob)
                rows["finish_reason"].append(comp.finish_reason)
                rows["num_prompt_tokens"].append(len(out.prompt_token_ids or ()))
        return rows


def generate(ds, spec: EngineSpec, sampling: Sampling, *, replicas: int, batch_size: int, num_cpus: float):
    """Map ``ds`` through a pool of ``replicas`` engines; returns the lazy output dataset (streamed by the caller)."""
    kwargs: dict[str, Any] = dict(
        fn_constructor_kwargs={"spec": asdict(spec), "sampling": asdict(sampling)},
        batch_size=batch_size,
        concurrency=replicas,
        num_cpus=num_cpus,
    )
    if spec.use_gpu and spec.tensor_parallel_size == 1:
        kwargs["num_gpus"] = 1
    elif spec.use_gpu:
        kwargs["ray_remote_args_fn"] = _tensor_parallel_placement(spec.tensor_parallel_size)
    return ds.map_batches(VLLMGenerator, **kwargs)


def _tensor_parallel_placement(tp: int):
    """Each replica gets a placement group of ``tp`` one-GPU bundles on one node (vLLM's Ray executor uses it)."""

    def remote_args() -> dict:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = [{"CPU": 1, "GPU": 1}] + [{"GPU": 1}] * (tp - 1)
        pg = ray.util.placement_group(bundles, strategy="STRICT_PACK")
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}

    return remote_args


def stream_batches(ds, *, total: int, label: str, unit: str = "questions", key: str = "question_id",
                   batch_size: int = 64, every_s: float = 10.0):
    """Iterate the output dataset batch by batch, logging progress (distinct ``key`` values done, rate, time left)."""
    started = last = time.monotonic()
    seen: set = set()
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        seen.update(batch[key].tolist())
        yield batch
        now = time.monotonic()
        if now - last >= every_s or len(seen) >= total:
            last = now
            rate = len(seen) / max(now - started, 1e-9)
            left = (total - len(seen)) / rate if rate > 0 else float("inf")
            log.info("[%s] %d/%d %s, %.2f/s, ~%.0f s left", label, len(seen), total, unit, rate, left)
