"""vLLM inside Ray Data: the one generation path shared by teacher sampling and evaluation.

Why not ``ray.data.llm``: its vLLM stage keeps only ``outputs[0]`` of each request, so ``n=30`` parallel samples
would silently come back as one. So scotd drives ``vllm.LLM`` itself from a callable class that Ray Data runs as an
actor pool (``map_batches(..., concurrency=replicas)``).

A prompt is computed once per question, and the few-shot prefix once per engine: the N samples of a question are
one request with ``SamplingParams(n=N)``, whose N sequences vLLM's v1 engine schedules as requests of one prompt,
and prefix caching (on by default) lets every request reuse the prompt blocks another request already holds. Blocks
enter the cache when the scheduler allocates them, not when they are computed, so this holds within the very first
engine step too: measured with vLLM 0.32 on CPU (Qwen2.5-Coder-1.5B, 6 CommonsenseQA prompts of ~300 tokens, one
token each from an empty cache), n = 30 cost 126 s against 23-26 s for n = 1 (not 30 times as much), and computing
the prompts first in a call of their own saved 4 % at n = 30 and cost 2 % at n = 4 over a whole sampling call, so the
stage sends each batch as one call (``tests/test_engine_loop.py`` checks the reuse in a fresh engine's first call).

Batches overlap inside an engine: an engine call (``LLM.generate``) returns when its last sequence ends, and its
last steps run with few sequences; one call per Ray Data batch would leave the engine idling in every call's tail
(on a GPU a decode step costs about the same for 2 sequences as for 200). So each actor takes up to
``teacher.concurrent_batches`` batches at once (an async callable with Ray's ``max_concurrency``, as ``ray.data.llm``
does) and one thread of its own steps the engine for all of them (``EngineLoop``): the next batch's requests join
the running batch while the previous one drains. By default that is enough batches to give the engine as many
sequences as it decodes at once (``batches_to_fill``), as one big ``generate`` call would.

Rows in: ``prompt`` (str), ``seed`` (int), ``n`` (int), ``stop`` (JSON list of strings) and any pass-through
columns (scalars only: lists travel as JSON text, so ragged lists never become Ray tensor columns).
Rows out: one per completion: the pass-through columns + ``sample_index``, ``text``, ``num_tokens``,
``logprob_sum``, ``finish_reason``, ``num_prompt_tokens``, ``call_started_at`` and ``call_finished_at`` (wall
clock, for rates), and the engine's own account at the call's end: ``engine_id``, ``engine_busy_s`` (seconds it
has spent in engine steps so far), ``engine_steps`` and ``engine_seq_steps`` (see ``StepAccount``); with the call
times they tell an engine that waits for work (``EngineStats``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scotd.config import OutputConfig
from scotd.cpu import normal_priority
from scotd.storage import fetch_folder, is_uri

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


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    logprobs: bool = True
    repetition_penalty: float = 1.0


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


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX). Without them vLLM's CPU build
    falls back to a slow bf16 path: float32 ran matrix products ~5x faster on an AVX2-only 2-core machine."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(spec: EngineSpec) -> str:
    """``auto``: bfloat16 on GPUs and on CPUs with native bf16, float32 on other CPUs; anything else as given."""
    if spec.dtype != "auto":
        return spec.dtype
    return "bfloat16" if spec.use_gpu or cpu_has_bf16() else "float32"


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
    the actor's process vLLM keeps that: measured on 2 cores, the same generate call ran at 7.8 tokens/s in a Ray
    actor against 13.7 in a plain process. The engine's cores are its ``VLLM_CPU_OMP_THREADS_BIND``, so its
    thread count follows them.
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
    return LLM(**kwargs)


def throughput_counters() -> dict:
    """Counters exported to the Ray dashboard / Prometheus as ``ray_scotd_<name>_total``, tagged by ``run``."""
    from ray.util.metrics import Counter

    described = {
        "rationales": "Completions generated (teacher rationales or evaluation answers).",
        "generated_tokens": "Tokens generated by the vLLM engines.",
        "prompt_tokens": "Prompt tokens processed (once per request: parallel samples share the prefill).",
        "correct_samples": "Teacher samples whose parsed answer equals the gold answer.",
        "parse_failures": "Completions without a parseable answer.",
        "engine_busy_seconds": "Seconds the vLLM engines spent stepping (per engine: its rate below 1 is time it "
                               "waited for work).",
    }
    return {name: Counter(f"scotd_{name}", description=text, tag_keys=("run",)) for name, text in described.items()}


def sampling_params(s: Sampling, n: int, seed: int, stop: str):
    """The ``SamplingParams`` of one request row (``stop``: a JSON list). Seeds only where sampling."""
    from vllm import SamplingParams

    sampled = s.temperature > 0
    return SamplingParams(n=int(n), temperature=s.temperature, top_p=s.top_p if sampled else 1.0,
                          max_tokens=s.max_new_tokens, seed=int(seed) if sampled else None,
                          stop=json.loads(str(stop)), include_stop_str_in_output=True,
                          logprobs=0 if s.logprobs else None, repetition_penalty=s.repetition_penalty)


@dataclass
class StepAccount:
    """An engine's steps: how many, the unfinished requests summed over them (``seq_steps / steps`` = sequences per
    step; parallel samples count one each) and the seconds spent inside them."""

    busy_s: float = 0.0
    steps: int = 0
    seq_steps: int = 0

    def step(self, engine, step: Callable[[], list] | None = None) -> list:
        """One engine step, counted and timed (``step``: the engine's own step function, default ``engine.step``)."""
        self.seq_steps += engine.get_num_unfinished_requests()
        started = time.perf_counter()
        try:
            return (step or engine.step)()
        finally:
            self.busy_s += time.perf_counter() - started
            self.steps += 1


class EngineLoop:
    """Builds one ``vllm.LLM`` and steps its engine on a thread of its own, for requests submitted from any thread.

    The engine is built on the thread that steps it: a CPU engine computes with a team of OpenMP threads per
    calling thread, and an engine built on one thread (loading and profiling make that thread's team) and stepped
    on another ran 10-15 % slower on an AMX 2-core machine (Qwen2.5-Coder-1.5B bf16, 64 sequences: 113-126
    against 132-140 generated tokens/s), while one built and stepped on the same non-main thread ran at full
    speed. ``build`` makes the engine (``lambda: llm`` for one that exists); the constructor returns once it is
    ready and raises what ``build`` raised.

    ``submit`` queues a group of requests and returns a future of their outputs, in order, at once: only the step
    thread touches the engine, adding every queued group before each step, so a group submitted while a step runs
    joins the very next one. (Adding under a lock the step thread held through each step starved submitters: the
    step thread took the lock back before a waiting thread woke, and a second batch measured on CPU waited 20 steps
    to join the first.) The step thread runs ``thread_setup`` first; by default it takes the creating thread's torch
    thread count (per thread, and vLLM's CPU attention fails when its step thread has another count than the engine
    was built with). A group the engine refuses (``add_request`` raises: a prompt over ``max_model_len``, say) fails
    alone; an engine step error fails every waiting group and every later ``submit``.
    """

    def __init__(self, build: Callable[[], Any], thread_setup: Callable[[], None] | None = None):
        if thread_setup is None:
            import torch

            threads = torch.get_num_threads()
            thread_setup = lambda: set_torch_threads(threads)  # noqa: E731
        self._ids = itertools.count()
        self._lock = threading.Condition()  # guards _queued, _error and _closed; never held during a step
        self._queued: list[tuple[list[str], list, Future]] = []
        self._error: BaseException | None = None
        self._closed = False
        self._waiting: dict[str, tuple[Future, dict[str, Any]]] = {}  # step thread only
        self.account = StepAccount()  # written by the step thread only
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(thread_setup, build, ready),
                                        name="scotd-engine-loop", daemon=True)
        self._thread.start()
        self.llm = ready.result()  # the step thread has set self.engine

    def submit(self, prompts: list[str], params: list) -> Future:
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        future: Future = Future()
        if not prompts:
            future.set_result([])
            return future
        with self._lock:
            if self._error is not None:
                raise RuntimeError("the vLLM engine failed earlier") from self._error
            if self._closed:
                raise RuntimeError("the engine loop is closed")
            self._queued.append((list(prompts), list(params), future))
            self._lock.notify()
        return future

    def close(self) -> None:
        """Stop the step thread once the requests queued and in flight are done (it holds the engine until then)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def _add(self, prompts: list[str], params: list, future: Future) -> None:
        """Hand one submitted group to the engine; a refused request fails its group (and withdraws the rest)."""
        from vllm.sampling_params import RequestOutputKind

        group: dict[str, Any] = {}  # request id -> output (None until finished), in submission order
        try:
            for prompt, p in zip(prompts, params):
                p.output_kind = RequestOutputKind.FINAL_ONLY  # only finished outputs, as LLM.generate asks
                request_id = str(next(self._ids))
                self.engine.add_request(request_id, {"prompt": prompt}, p)
                group[request_id] = None
                self._waiting[request_id] = (future, group)
        except Exception as error:  # noqa: BLE001 - the caller gets it through its future
            if group:
                self.engine.abort_request(list(group))
            for request_id in group:
                self._waiting.pop(request_id)
            future.set_exception(error)

    def _run(self, thread_setup: Callable[[], None], build: Callable[[], Any], ready: Future) -> None:
        try:
            thread_setup()
            llm = build()
        except BaseException as error:  # noqa: BLE001 - the constructor raises it
            ready.set_exception(error)
            return
        self.engine = llm.llm_engine
        ready.set_result(llm)
        while True:
            with self._lock:
                while not self._queued and not self.engine.has_unfinished_requests():
                    if self._closed:
                        return
                    self._lock.wait()
                queued, self._queued = self._queued, []
            try:
                for group in queued:
                    self._add(*group)
                if not self.engine.has_unfinished_requests():  # every queued group was refused
                    continue
                outputs = self.account.step(self.engine)
            except BaseException as error:  # the engine is unusable now: tell everyone waiting on it
                with self._lock:
                    self._error = error
                    queued, self._queued = self._queued, []
                for future in {future for future, _ in self._waiting.values()} | {f for *_, f in queued}:
                    future.set_exception(error)
                self._waiting.clear()
                log.exception("vLLM engine step failed")
                return
            for out in outputs:
                if not out.finished or out.request_id not in self._waiting:
                    continue
                future, group = self._waiting.pop(out.request_id)
                group[out.request_id] = out
                if all(o is not None for o in group.values()):
                    future.set_result(list(group.values()))


class VLLMGenerator:
    """Ray Data callable class: one vLLM engine per actor; the batches in flight share it through ``EngineLoop``."""

    def __init__(self, spec: dict, sampling: dict, run: str = "teacher", concurrent_batches: int = 1):
        self.spec = EngineSpec(**spec)
        self.concurrent_batches = concurrent_batches
        self._slots: asyncio.Semaphore | None = None
        self.sampling = Sampling(**sampling)
        self.tags = {"run": run}
        self.counters = throughput_counters()
        started = time.monotonic()
        local = self.spec
        if is_uri(self.spec.model):  # a model folder at output.dir's URI: copy it to this node first
            local = replace(self.spec, model=str(fetch_folder(self.spec.model, self.spec.cache_dir)))
        # Built on the loop's thread, which steps it (build_llm gives that thread its compute threads and normal
        # priority: both are per thread).
        self.loop = EngineLoop(lambda: build_llm(local))
        self.tokenizer = self.loop.llm.get_tokenizer()
        self.engine_id = uuid.uuid4().hex[:12]
        self._reported_busy_s = 0.0
        log.info("vLLM engine for %s ready in %.1f s", self.spec.model, time.monotonic() - started)

    def _prompt(self, prompt: str) -> str:
        if not self.spec.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    async def _generate(self, prompts: list[str], params: list) -> list:
        return await asyncio.wrap_future(self.loop.submit(prompts, params))

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        # Ray may run more calls at once than asked (several batches of one task run concurrently too): the
        # semaphore (made on the actor's event loop, where every call runs) keeps concurrent_batches exact.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrent_batches)
        async with self._slots:
            return await self._call(batch)

    async def _call(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        call_started_at = time.time()
        params = [sampling_params(self.sampling, n, seed, stop)
                  for n, seed, stop in zip(batch["n"], batch["seed"], batch["stop"])]
        prompts = [self._prompt(str(p)) for p in batch["prompt"]]
        outputs = await self._generate(prompts, params)
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
        # When this call started: the caller measures its steady rate from the first call's start, which leaves
        # the engine start-up out (as for a bare engine) and keeps every overhead between calls in.
        rows["call_started_at"] = [call_started_at] * len(rows["text"])
        rows["call_finished_at"] = [time.time()] * len(rows["text"])
        account = self.loop.account
        busy_s = account.busy_s
        for key, value in (("engine_id", self.engine_id), ("engine_busy_s", busy_s),
                           ("engine_steps", account.steps), ("engine_seq_steps", account.seq_steps)):
            rows[key] = [value] * len(rows["text"])
        if busy_s > self._reported_busy_s:  # Ray counters take positive increments only
            self.counters["engine_busy_seconds"].inc(busy_s - self._reported_busy_s, tags=self.tags)
            self._reported_busy_s = busy_s
        self.counters["rationales"].inc(len(rows["text"]), tags=self.tags)
        self.counters["generated_tokens"].inc(sum(rows["num_tokens"]), tags=self.tags)
        self.counters["prompt_tokens"].inc(sum(len(o.prompt_token_ids or ()) for o in outputs), tags=self.tags)
        return rows


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

    Measured on 2 AMX cores (Qwen2.5-Coder-1.5B bf16, 64 CommonsenseQA questions x 4, calls of 8 questions): a
    fixed 2 calls at once gave the engine 52 sequences a step on average and 123.0 generated tokens/s, 9 calls 205
    and 164.5, against 211 and 184.3 for one bare ``generate`` call over all 256 sequences on a fresh engine (a
    step over more sequences costs little more time). At most 64 calls: smaller batches than that needs should
    be made larger (``batch_size``) rather than queued as hundreds of Ray tasks.
    """
    return min(math.ceil(engine_capacity(spec) / max(batch_size * samples_per_request, 1)) + 1, MAX_BATCHES_IN_FLIGHT)


def generate(ds, spec: EngineSpec, sampling: Sampling, *, replicas: int | tuple[int, int], batch_size: int,
             num_cpus: float, run: str = "teacher", resource: str | None = None,
             concurrent_batches: int | None = None, samples_per_request: int = 1):
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
                               "concurrent_batches": concurrent_batches},
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


def engine_process_env(spec: EngineSpec) -> dict[str, str]:
    """Environment an engine's Ray worker process must start with (Ray's ``runtime_env``; the job's own
    ``env_vars`` still apply).

    CPU engines: ``OMP_NUM_THREADS`` = the engine's bound cores. Ray starts workers with ``OMP_NUM_THREADS`` set
    to their ``num_cpus`` (1), and although ``build_llm`` raises the engine thread's count afterwards, the OpenMP
    runtime has read the variable at start-up: its worker threads then sleep between parallel regions instead of
    waiting for the next one. Measured on 2 AMX cores (Qwen2.5-Coder-1.5B bf16, 64 sequences, engine built and
    stepped on one thread with 2 compute threads): 102.8 generated tokens/s started with ``OMP_NUM_THREADS=1``
    against 131.2 with 2; with Ray's 1, the stage's engine process used 135 % of its 2 cores against 194 % for
    the bare engine. The cores are counted on the driver's machine (``VLLM_CPU_OMP_THREADS_BIND`` if set there, else all
    of them), which is the engine's machine for the local clusters CPU engines are meant for.
    """
    if spec.use_gpu:
        return {}
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or cpu_engine_env(spec)["VLLM_CPU_OMP_THREADS_BIND"]
    return {"OMP_NUM_THREADS": str(len(bound_cores(bind)))}


def gpus_per_replica(spec: EngineSpec) -> int:
    return spec.tensor_parallel_size * spec.pipeline_parallel_size if spec.use_gpu else 0


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


class EngineStats:
    """The engines' own account over a stage, from the ``engine_*`` and call-time columns of its output batches."""

    def __init__(self) -> None:
        self._engines: dict[str, dict[str, float]] = {}

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for i, engine in enumerate(batch["engine_id"].tolist()):
            e = self._engines.setdefault(str(engine), {"first": float("inf"), "last": 0.0, "busy_s": 0.0,
                                                       "steps": 0, "seq_steps": 0})
            e["first"] = min(e["first"], float(batch["call_started_at"][i]))
            e["last"] = max(e["last"], float(batch["call_finished_at"][i]))
            for key, column in (("busy_s", "engine_busy_s"), ("steps", "engine_steps"),
                                ("seq_steps", "engine_seq_steps")):
                e[key] = max(e[key], float(batch[column][i]))  # cumulative per engine: the latest is the largest

    @property
    def first_call_at(self) -> float:
        """Wall clock when the stage's first engine call started (after engine start-up); inf before any."""
        return min((e["first"] for e in self._engines.values()), default=float("inf"))

    def summary(self) -> dict:
        """``engine_busy_share``: of the time from each engine's first call's start to its last call's end, the
        share it spent stepping (below 1: it waited for work, e.g. for Ray Data to hand it the next batch);
        ``sequences_per_step``: requests in flight per engine step, on average."""
        if not self._engines:
            return {}
        engines = self._engines.values()
        active = sum(max(e["last"] - e["first"], 0.0) for e in engines)
        steps = sum(e["steps"] for e in engines)
        return {"engines": len(self._engines),
                "engine_busy_s": round(sum(e["busy_s"] for e in engines), 2),
                "engine_busy_share": sum(e["busy_s"] for e in engines) / active if active > 0 else 0.0,
                "engine_steps": int(steps),
                "sequences_per_step": sum(e["seq_steps"] for e in engines) / steps if steps else 0.0}


def stream_batches(ds, *, total: int, label: str, unit: str = "questions", key: str = "question_id",
                   every_s: float = 10.0):
    """Iterate the output dataset block by block as engine calls finish, logging progress (distinct ``key``
    values done, rate, time left). Blocks as they come: with a batch size that is not the engine call's, Ray Data
    held every batch back until the last call had finished (a 13-minute evaluation without a progress line)."""
    started = last = time.monotonic()
    seen: set = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        seen.update(batch[key].tolist())
        yield batch
        now = time.monotonic()
        if now - last >= every_s or len(seen) >= total:
            last = now
            rate = len(seen) / max(now - started, 1e-9)
            left = (total - len(seen)) / rate if rate > 0 else float("inf")
            log.info("[%s] %d/%d %s, %.2f/s, ~%.0f s left", label, len(seen), total, unit, rate, left)
