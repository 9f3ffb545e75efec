"""The engine loop: one ``vllm.LLM`` stepped by a thread of its own, for requests submitted from any thread."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from scotd.inference.spec import set_torch_threads

log = logging.getLogger(__name__)


@dataclass
class StepAccount:
    """An engine's steps: how many, the unfinished requests summed over them (``seq_steps / steps`` = sequences per
    step; parallel samples count one each; a step adds a token to each running sequence, so ``seq_steps`` also
    counts the tokens generated so far), the seconds spent inside them, when the first began (wall clock), and the
    sequences that finished with their tokens."""

    busy_s: float = 0.0
    steps: int = 0
    seq_steps: int = 0
    first_step_at: float | None = None
    finished_sequences: int = 0
    finished_tokens: int = 0

    def step(self, engine, step: Callable[[], list] | None = None) -> list:
        """One engine step, counted and timed (``step``: the engine's own step function, default ``engine.step``)."""
        if self.first_step_at is None:
            self.first_step_at = time.time()
        self.seq_steps += engine.get_num_unfinished_requests()
        started = time.perf_counter()
        try:
            outputs = (step or engine.step)()
        finally:
            self.busy_s += time.perf_counter() - started
            self.steps += 1
        for out in outputs:
            if getattr(out, "finished", False):
                completions = getattr(out, "outputs", ())  # a request's samples (none in a stand-in output)
                self.finished_sequences += len(completions)
                self.finished_tokens += sum(len(c.token_ids) for c in completions)
        return outputs

    def progress(self) -> dict:
        """What the engine posts to a ``ProgressBoard``."""
        return {"first_step_at": self.first_step_at, "seq_steps": self.seq_steps, "steps": self.steps,
                "finished_sequences": self.finished_sequences, "finished_tokens": self.finished_tokens}


class EngineLoop:
    """Builds one ``vllm.LLM`` and steps its engine on a thread of its own, for requests submitted from any thread.

    The engine is built on the thread that steps it: a CPU engine computes with a team of OpenMP threads per calling
    thread, and an engine built on one thread (loading and profiling make that thread's team) and stepped on another
    runs slower than one built and stepped on the same thread (``benchmarks/sampling.py``). ``build`` makes the engine
    (``lambda: llm`` for one that exists); the constructor returns once it is ready and raises what ``build`` raised.

    ``submit`` queues a group of requests and returns a future of their outputs, in order, at once: only the step
    thread touches the engine, adding every queued group before each step, so a group submitted while a step runs
    joins the very next one. No lock is held through a step: the step thread would take it back before a waiting
    submitter woke, and a second batch would wait many steps to join the first. The step thread runs
    ``thread_setup`` first; by default it takes the creating thread's torch thread count (per thread, and vLLM's CPU
    attention fails when its step thread has another count than the engine was built with). A group the engine
    refuses (``add_request`` raises: a prompt over ``max_model_len``, say) fails alone; an engine step error fails
    every waiting group and every later ``submit``.
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
                log.exception("vLLM engine step failed")  # first: the callers' own errors follow it
                with self._lock:
                    self._error = error
                    queued, self._queued = self._queued, []
                for future in {future for future, _ in self._waiting.values()} | {f for *_, f in queued}:
                    future.set_exception(error)
                self._waiting.clear()
                return
            for out in outputs:
                if not out.finished or out.request_id not in self._waiting:
                    continue
                future, group = self._waiting.pop(out.request_id)
                group[out.request_id] = out
                if all(o is not None for o in group.values()):
                    future.set_result(list(group.values()))
