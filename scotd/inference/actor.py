"""The Ray Data callable class: one vLLM engine per actor, shared by the batches in flight through ``EngineLoop``.

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
import threading
import time
import uuid
from dataclasses import replace

import numpy as np

from scotd.inference.loop import EngineLoop
from scotd.inference.metrics import throughput_counters
from scotd.inference.progress import post_account
from scotd.inference.rounds import keep_sampling
from scotd.inference.spec import EngineSpec, Sampling, build_llm, sampling_params
from scotd.prompts import in_chat
from scotd.storage import fetch_folder, is_uri

log = logging.getLogger(__name__)


class VLLMGenerator:
    """Ray Data callable class: one vLLM engine per actor; the batches in flight share it through ``EngineLoop``."""

    def __init__(self, spec: dict, sampling: dict, run: str = "teacher", concurrent_batches: int = 1,
                 progress: str | None = None):
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
        self._posting = threading.Event()
        if progress:  # the stage's ProgressBoard: tokens so far, for the driver's rate and time left
            threading.Thread(target=post_account, args=(progress, self.engine_id, self.loop.account.progress,
                                                        self._posting), name="scotd-progress", daemon=True).start()

    def _prompt(self, prompt: str) -> str:
        if not self.spec.chat_template:
            return prompt
        return in_chat(self.tokenizer, prompt)

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
        prompts = [self._prompt(str(p)) for p in batch["prompt"]]
        if self.sampling.per_round:
            completions, prompt_tokens = await self._rounds(batch, prompts)
        else:
            params = [sampling_params(self.sampling, n, seed, stop)
                      for n, seed, stop in zip(batch["n"], batch["seed"], batch["stop"])]
            outputs = await self._generate(prompts, params)
            completions = [list(out.outputs) for out in outputs]
            prompt_tokens = [len(out.prompt_token_ids or ()) for out in outputs]
        keep = [k for k in batch if k not in ("prompt", "seed", "n", "stop")]
        rows: dict[str, list] = {k: [] for k in keep}
        rows.update(sample_index=[], text=[], num_tokens=[], logprob_sum=[], finish_reason=[], num_prompt_tokens=[],
                    question_samples=[])
        for i, comps in enumerate(completions):
            for j, comp in enumerate(comps):
                for k in keep:
                    rows[k].append(batch[k][i])
                rows["sample_index"].append(j)
                rows["text"].append(comp.text)
                rows["num_tokens"].append(len(comp.token_ids))
                rows["logprob_sum"].append(comp.cumulative_logprob)
                rows["finish_reason"].append(comp.finish_reason)
                rows["num_prompt_tokens"].append(prompt_tokens[i])
                rows["question_samples"].append(len(comps))  # the request's samples, all rounds: it is whole
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
        self.counters["prompt_tokens"].inc(sum(prompt_tokens), tags=self.tags)
        return rows

    async def _rounds(self, batch: dict[str, np.ndarray], prompts: list[str]) -> tuple[list[list], list[int]]:
        """Every request's samples drawn ``per_round`` at a time, up to its ``n``, each round with its own seed,
        until ``rounds.keep_sampling`` says stop; the requests still open share each round's engine steps."""
        s = self.sampling
        have: list[list] = [[] for _ in prompts]
        prompt_tokens = [0] * len(prompts)
        num_choices = ([len(json.loads(str(c))) for c in batch["choices"]] if "choices" in batch
                       else [0] * len(prompts))
        gold = [str(g) or None for g in batch["gold_answer"]] if "gold_answer" in batch else [None] * len(prompts)
        open_ = list(range(len(prompts)))
        for round_ in itertools.count():
            if not open_:
                break
            counts = [min(s.per_round, int(batch["n"][i]) - len(have[i])) for i in open_]
            params = [sampling_params(s, k, int(batch["seed"][i]) + 7919 * round_, batch["stop"][i])
                      for i, k in zip(open_, counts)]
            outputs = await self._generate([prompts[i] for i in open_], params)
            still = []
            for i, k, out in zip(open_, counts, outputs):
                have[i].extend(out.outputs)
                prompt_tokens[i] = prompt_tokens[i] or len(out.prompt_token_ids or ())
                if keep_sampling([c.text for c in have[i]], k, int(batch["n"][i]), num_choices=num_choices[i],
                                 gold=gold[i], stop_when_repeated=s.stop_when_repeated,
                                 stop_at_distinct=s.stop_at_distinct):
                    still.append(i)
            open_ = still
        return have, prompt_tokens
