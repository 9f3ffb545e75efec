"""Teacher sampling throughput, side by side in one run on the same model and prompts.

    .venv/bin/python benchmarks/sampling.py [--model tiny|offline:<key>|PATH] [--questions 64] [--n 4]
                                            [--sweep 100,1000] [--gpu]

Measures, in one process and one Ray session:
  1. bare ``vllm.LLM.generate`` (the ceiling): the same prompts and SamplingParams as the stage, n = 1, 5, 30
     and --n, each one call from an empty prefix cache; time per generated token: it falls with n when the prompt
     is not paid n times;
  2. scotd's sampling stage (Ray Data + vLLM actor, resumable blocks, parsing, metrics) on the same questions:
     generated tokens/s from its first engine call's start (engine start-up excluded, as for the bare engine) and
     the ratio to the bare engine's plain call at the same n (goal >= 0.95), once per --concurrent-batches value;
     with --bare-in-ray also the bare call inside a Ray actor while the cluster runs (Ray's own cost), and with
     --bare-loop the bare call through scotd's ``EngineLoop`` (built and stepped on its own thread) in the plain
     process;
     every engine path reports its steps, sequences per step and seconds inside steps, so a gap splits into
     time the engine waited for work and slower or more steps;
  3. the stage on --sweep question counts (default 100 and 1000): throughput and the driver's resident memory,
     which should both stay flat as the question count grows;
  4. a plain transformers ``generate`` loop (what one would write without an engine) on --hf-questions questions:
     the ratio bare engine / transformers (goal >= 10x).
Prints a JSON object; benchmarks/RESULTS.md records runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "commonsenseqa" / "train_rand_split.jsonl"


def rss_mb() -> float:
    """Resident memory of this (the driver's) process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--bare-n", default="1,5,30", help="n values for the bare engine's per-token cost")
    parser.add_argument("--sweep", default="100,1000", help="question counts for the stage's scaling check ('' = skip)")
    parser.add_argument("--hf-questions", type=int, default=4, help="questions for the transformers baseline")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="questions per engine call in the stage")
    parser.add_argument("--concurrent-batches", default="2",
                        help="teacher.concurrent_batches values to run the stage with, e.g. 1,2")
    parser.add_argument("--bare-in-ray", action="store_true",
                        help="also time the bare call inside a Ray actor while the local cluster runs")
    parser.add_argument("--bare-loop", action="store_true",
                        help="also time the bare call through scotd's EngineLoop in the plain process")
    parser.add_argument("--gpu", action="store_true", help="GPU engine (vLLM's GPU build)")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()

    import ray

    from scotd.config import ResourcesConfig, TeacherConfig
    from scotd.engine import Sampling, build_llm, engine_process_env, resolve_dtype
    from scotd.prompts import load_exemplars
    from scotd.tasks import load_questions
    from scotd.teacher import engine_spec, sample_rationales, to_request

    sweep = [int(x) for x in args.sweep.split(",") if x]
    pool = load_questions(args.data, "commonsenseqa", "csqa").questions[: max([args.questions, *sweep])]
    questions = pool[: args.questions]
    shots = load_exemplars("commonsenseqa", "csqa")[:3]
    work = Path(tempfile.mkdtemp(prefix="scotd-bench-"))
    model = resolve(args.model, pool, shots, work)
    cfg = TeacherConfig(model=model, num_samples=args.n, max_new_tokens=args.max_new_tokens, max_model_len=1024,
                        batch_size=args.batch_size, cpu_kvcache_gb=2, use_gpu=args.gpu)
    spec = engine_spec(cfg, model)
    results: dict = {"model": args.model, "dtype": resolve_dtype(spec), "questions": len(questions), "n": args.n,
                     "max_new_tokens": args.max_new_tokens}

    # 1. bare engine (built before timing: start-up excluded)
    llm = build_llm(spec)
    # The stage's own requests (prompt, per-question seed, stop strings) and SamplingParams, so that both paths
    # generate the same samples: the ratio compares the same work.
    requests = [to_request(q, shots, cfg, args.n) for q in questions]
    prompts = [r["prompt"] for r in requests]
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)

    def bare(n: int) -> dict:
        """One ``generate`` call over all questions from an empty prefix cache: the call a user would write."""
        return timed_generate(llm, prompts, request_params(sampling, requests, n))

    bare(1)  # warm-up (kernels, allocator)
    for n in sorted({*(int(x) for x in args.bare_n.split(",")), args.n}):
        results[f"bare_n{n}"] = bare(n)
    llm = None  # free the engine before the next one starts
    if args.bare_loop:
        results["bare_loop"] = timed_loop(spec, prompts, requests, sampling, args.n)
        results["ratio_bare_loop_over_bare"] = results["bare_loop"]["tok_per_s"] / results[f"bare_n{args.n}"]["tok_per_s"]

    # 2. scotd's stage on a local Ray cluster
    ray.init(address="local", num_cpus=4, num_gpus=1 if args.gpu else 0, include_dashboard=False,
             log_to_driver=False)
    if args.bare_in_ray:
        # The bare call again, in a Ray actor (a plain vllm.LLM: no Ray Data, no scotd stage code) while the
        # cluster runs: what running under Ray costs the engine by itself.
        actor = ray.remote(num_cpus=ResourcesConfig().engine_cpus, num_gpus=1 if args.gpu else 0,
                           runtime_env={"env_vars": engine_process_env(spec)})(BareEngine)
        engine = actor.remote(asdict(spec))
        results["bare_in_ray"] = ray.get(engine.run.remote(prompts, requests, asdict(sampling), args.n))
        results["ratio_bare_in_ray_over_bare"] = (results["bare_in_ray"]["tok_per_s"]
                                                  / results[f"bare_n{args.n}"]["tok_per_s"])
        ray.kill(engine)
    for k in [int(x) for x in args.concurrent_batches.split(",") if x]:
        summary = sample_rationales(questions, {"csqa": shots}, replace(cfg, concurrent_batches=k),
                                    ResourcesConfig(), model, work / f"stage-c{k}")
        results[f"stage_c{k}"] = summary
        results[f"ratio_stage_c{k}_over_bare"] = (summary["steady_generated_tokens_per_s"]
                                                  / results[f"bare_n{args.n}"]["tok_per_s"])

    # 3. scaling with the question count: throughput and driver memory
    for count in sweep:
        before = rss_mb()
        s = sample_rationales(pool[:count], {"csqa": shots}, cfg, ResourcesConfig(), model, work / f"sweep{count}")
        results[f"sweep_{count}"] = {"steady_tok_per_s": s.get("steady_generated_tokens_per_s"),
                                     "tok_per_s_with_start": s["generated_tokens_per_s"], "wall_s": s["wall_s"],
                                     "driver_rss_mb_before": round(before), "driver_rss_mb_after": round(rss_mb())}
    ray.shutdown()

    # 4. transformers generate loop on a subset (--hf-questions 0 skips it)
    if args.hf_questions:
        hf = hf_generate(model, prompts[: args.hf_questions], args.n, args.max_new_tokens, resolve_dtype(spec),
                         args.gpu)
        results["transformers"] = {**hf, "questions": args.hf_questions}
        results["ratio_bare_over_transformers"] = results[f"bare_n{args.n}"]["tok_per_s"] / hf["tok_per_s"]
    print(json.dumps(results, indent=2))


def request_params(sampling, requests: list[dict], n: int) -> list:
    """The stage's ``SamplingParams`` for its request rows, with ``n`` samples each."""
    from scotd.engine import sampling_params

    return [sampling_params(sampling, n, r["seed"], r["stop"]) for r in requests]


def timed_generate(llm, prompts: list[str], params: list) -> dict:
    """One ``LLM.generate`` call from an empty prefix cache, timed."""
    llm.reset_prefix_cache()
    with counted_steps(llm) as steps:
        started = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
    return timing(outs, seconds, steps)


def timed_loop(spec, prompts: list[str], requests: list[dict], sampling, n: int) -> dict:
    """The bare call submitted to scotd's ``EngineLoop`` in the plain process: an engine of its own, built and
    stepped on the loop's thread as in the stage, warmed up like the bare engine, timed from an empty prefix cache."""
    from scotd.engine import EngineLoop, StepAccount, build_llm

    loop = EngineLoop(lambda: build_llm(spec))
    loop.submit(prompts, request_params(sampling, requests, 1)).result()  # warm-up, as for the bare call
    loop.llm.reset_prefix_cache()  # no request in flight: safe from this thread
    loop.account = StepAccount()
    started = time.perf_counter()
    outs = loop.submit(prompts, request_params(sampling, requests, n)).result()
    seconds = time.perf_counter() - started
    loop.close()  # its thread would keep the engine alive after the benchmark drops it
    return timing(outs, seconds, loop.account)


def timing(outs: list, seconds: float, steps) -> dict:
    """Rates of one call and its engine's ``StepAccount``."""
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outs)
    return {"s": round(seconds, 2), "generated_tokens": tokens, "tok_per_s": tokens / seconds,
            "ms_per_generated_token": 1000 * seconds / tokens, "prompt_tokens": prompt_tokens,
            "engine_steps": steps.steps, "engine_busy_s": round(steps.busy_s, 2),
            "sequences_per_step": steps.seq_steps / max(steps.steps, 1)}


@contextmanager
def counted_steps(llm):
    """Count a plain ``vllm.LLM``'s engine steps as ``EngineLoop`` does for the stage (``LLM.generate`` calls
    ``llm_engine.step()`` on the instance, so an instance attribute stands in for it meanwhile)."""
    from scotd.engine import StepAccount

    engine, account = llm.llm_engine, StepAccount()
    step = engine.step
    engine.step = lambda: account.step(engine, step)
    try:
        yield account
    finally:
        del engine.step  # the class's method again


class BareEngine:
    """A plain ``vllm.LLM`` as a Ray actor, for the bare call under Ray. Built and called on one thread of its own
    (a CPU engine built on one thread and stepped on another runs slower: scotd/engine.py's ``EngineLoop``)."""

    def __init__(self, spec: dict):
        from concurrent.futures import ThreadPoolExecutor

        from scotd.engine import EngineSpec, build_llm

        self.thread = ThreadPoolExecutor(max_workers=1)
        self.llm = self.thread.submit(build_llm, EngineSpec(**spec)).result()

    def run(self, prompts: list[str], requests: list[dict], sampling: dict, n: int) -> dict:
        return self.thread.submit(self._run, prompts, requests, sampling, n).result()

    def _run(self, prompts: list[str], requests: list[dict], sampling: dict, n: int) -> dict:
        from scotd.engine import Sampling

        s = Sampling(**sampling)
        timed_generate(self.llm, prompts, request_params(s, requests, 1))  # warm-up, as for the bare call
        return timed_generate(self.llm, prompts, request_params(s, requests, n))


def resolve(ref: str, questions, shots, work: Path) -> str:
    if ref == "tiny":
        from scotd.pipeline import format_texts
        from scotd.prompts import student_prompt
        from scotd.tiny import ensure_tiny_model

        return str(ensure_tiny_model("teacher", work / "tiny", [student_prompt(q) for q in questions],
                                     format_texts(questions, {"csqa": shots})))
    from scotd.assets import resolve_model

    return resolve_model(ref, Path(os.path.expanduser("~/.cache/scotd")))


def hf_generate(model: str, prompts: list[str], n: int, max_new_tokens: int, dtype: str, gpu: bool) -> dict:
    """The loop a user would write: one ``generate`` call per question with n return sequences, same dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if gpu else "cpu"
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    started, tokens = time.perf_counter(), 0
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").to(device)
        out = lm.generate(**ids, do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens,
                          num_return_sequences=n, pad_token_id=pad)
        tokens += int((out[:, ids["input_ids"].shape[1]:] != pad).sum())
    seconds = time.perf_counter() - started
    return {"s": round(seconds, 2), "generated_tokens": tokens, "tok_per_s": tokens / seconds}


if __name__ == "__main__":
    main()
