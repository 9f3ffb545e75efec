"""vLLM inside Ray Data: the one generation path of teacher sampling, evaluation and the judge.

Why not ``ray.data.llm``: its vLLM stage keeps only ``outputs[0]`` of each request, so ``n=30`` parallel samples
would silently come back as one. So scotd drives ``vllm.LLM`` itself from a callable class that Ray Data runs as an
actor pool (``map_batches(..., concurrency=replicas)``).

A prompt is computed once per question, and the few-shot prefix once per engine: the N samples of a question are
one request with ``SamplingParams(n=N)``, whose N sequences vLLM's v1 engine schedules as requests of one prompt,
and prefix caching (on by default) lets every request reuse the prompt blocks another request already holds. Blocks
enter the cache when the scheduler allocates them, not when they are computed, so this holds within an engine's very
first step too (``tests/test_engine_loop.py`` checks it); the stage therefore sends each batch as one call, with no
separate prompt warm-up.

Batches overlap inside an engine: an engine call returns when its last sequence ends, and its last steps run with
few sequences, so one call per Ray Data batch would leave the engine idling in every call's tail. Each actor takes
up to ``concurrent_batches`` batches at once (an async callable with Ray's ``max_concurrency``, as ``ray.data.llm``
does) and one thread of its own steps the engine for all of them (``EngineLoop``): the next batch's requests join
the running batch while the previous one drains. By default that is enough batches to give the engine as many
sequences as it decodes at once (``batches_to_fill``), as one big ``generate`` call would.

Modules: ``spec`` (settings, CPU environment, building an engine), ``loop`` (the stepping thread), ``actor`` (the
Ray Data callable), ``pool`` (actor pools, placement, ``generate_rows``), ``metrics`` (dashboard counters, the
engines' account, progress). Nothing here imports vLLM or Ray at import time.
"""

from scotd.inference.metrics import METRICS, EngineStats, stream_batches, throughput_counters
from scotd.inference.pool import generate, generate_rows, replica_range
from scotd.cpu import cpu_has_bf16
from scotd.inference.spec import EngineSpec, Sampling, engine_spec, question_seed

__all__ = ["METRICS", "EngineSpec", "EngineStats", "Sampling", "cpu_has_bf16", "engine_spec", "generate",
           "generate_rows", "question_seed", "replica_range", "stream_batches", "throughput_counters"]
