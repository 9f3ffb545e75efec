"""Teacher sampling throughput, side by side in one run on the same model and prompts.

    .venv/bin/python benchmarks/sampling.py [--model tiny|offline:<key>|PATH] [--questions 64] [--n 4]
                                            [--sweep 100,1000] [--task commonsenseqa|gsm8k] [--gpu]

``--task gsm8k`` samples GSM8K's worked rationales (several sentences of arithmetic, longer than CommonsenseQA's
one-line ones) from its official train file with scotd's GSM8K exemplars; ``bare_n30_over_n1`` is then the cost of
30 samples per question against one (wall time of the bare engine's calls on the same questions).

Measures, in one process and one Ray session:
  1. bare ``vllm.LLM.generate`` (the ceiling): the same prompts and SamplingParams as the stage, each one call
     from an empty prefix cache: first the fresh engine's first call at --n (``bare_cold``: the stage's engines
     are fresh too, and a CPU engine's first call pays a one-time cost), then warm calls at n = 1, 5, 30 and --n;
     time per generated token: it falls with n when the prompt is not paid n times;
  2. scotd's sampling stage (Ray Data + vLLM actor, resumable blocks, parsing, metrics) on the same questions:
     generated tokens/s from its first engine call's start (engine start-up excluded, as for the bare engine) and
     the ratio to the fresh bare engine's call at the same n (goal >= 0.95; also to the warm call), once per
     --concurrent-batches value; with --bare-in-ray also the bare call inside a Ray actor while the cluster runs
     (Ray's own cost), and with --bare-loop the bare call through scotd's ``EngineLoop`` (built and stepped on its
     own thread) in the plain process, both on fresh engines;
     every engine path reports its steps, sequences per step and seconds inside steps, so a gap splits into
     time the engine waited for work and slower or more steps;
  3. the stage on --sweep question counts (default 100 and 1000): throughput and the driver's resident memory,
     which should both stay flat as the question count grows;
  4. a plain transformers ``generate`` loop (what one would write without an engine) on --hf-questions questions,
     with the stage's stop strings, after a warm-up call: the ratio warm bare engine / transformers (goal >= 10x).
Prints a JSON object; benchmarks/RESULTS.md records runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Per task: (data file, format, exemplar file); the exemplars are scotd's own (scotd/exemplars).
TASKS = {"commonsenseqa": (REPO.parent / "shared" / "data" / "commonsenseqa" / "train_rand_split.jsonl",
                           "commonsenseqa", "commonsenseqa"),
         "gsm8k": (REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl", "gsm8k", "gsm8k")}


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
    parser.add_argument("--concurrent-batches", default="auto",
                        help="teacher.concurrent_batches values to run the stage with, e.g. auto,2 (auto: the "
                             "default, enough batches to fill the engine)")
    parser.add_argument("--bare-in-ray", action="store_true",
                        help="also time the bare call inside a Ray actor while the local cluster runs")
    parser.add_argument("--bare-loop", action="store_true",
                        help="also time the bare call through scotd's EngineLoop in the plain process")
    parser.add_argument("--gpu", action="store_true", help="GPU engine (vLLM's GPU build)")
    parser.add_argument("--task", choices=sorted(TASKS), default="commonsenseqa")
    parser.add_argument("--data", default="", help="the task's questions (default: its file under ../shared/data)")
    parser.add_argument("--shots", type=int, default=3, help="exemplars in the teacher prompt")
    args = parser.parse_args()

    import ray

    from scotd.config import ResourcesConfig, TeacherConfig
    from scotd.inference.spec import Sampling, build_llm, engine_process_env, resolve_dtype
    from scotd.prompts import load_exemplars
    from scotd.tasks import load_questions
    from scotd.inference.spec import engine_spec
    from scotd.teacher import sample_rationales, to_request

    sweep = [int(x) for x in args.sweep.split(",") if x]
    data, fmt, exemplars = TASKS[args.task]
    task = args.task
    pool = load_questions(args.data or data, fmt, task).questions[: max([args.questions, *sweep])]
    questions = pool[: args.questions]
    shots = load_exemplars(exemplars, task)[: args.shots]
    work = Path(tempfile.mkdtemp(prefix="scotd-bench-"))
    model = resolve(args.model, pool, shots, work)
    cfg = TeacherConfig(model=model, num_samples=args.n, max_new_tokens=args.max_new_tokens, max_model_len=1024,
                        batch_size=args.batch_size, cpu_kvcache_gb=2, use_gpu=args.gpu)
    spec = engine_spec(cfg, model, seed=cfg.seed)
    results: dict = {"model": args.model, "task": task, "dtype": resolve_dtype(spec), "questions": len(questions),
                     "n": args.n, "max_new_tokens": args.max_new_tokens}

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

    # The stage's engines are fresh when their first call starts, so the ratio's bare call is a fresh engine's
    # first call too: a CPU engine's first call pays a one-time cost (measured on 2 AMX cores: 21.5 s for 16
    # questions x 4, then 17.1-17.6 s for new questions and 17.0-18.1 s for the same ones again).
    results["bare_cold"] = bare(args.n)
    for n in sorted({*(int(x) for x in args.bare_n.split(",")), args.n}):
        results[f"bare_n{n}"] = bare(n)  # warm: after the first call
    if "bare_n1" in results and "bare_n30" in results:
        results["bare_n30_over_n1"] = {key: results["bare_n30"][key] / results["bare_n1"][key]
                                       for key in ("s", "generated_tokens", "ms_per_generated_token")}
    llm = None  # free the engine before the next one starts
    if args.bare_loop:
        results["bare_loop"] = timed_loop(spec, prompts, requests, sampling, args.n)
        results["ratio_bare_loop_over_bare"] = results["bare_loop"]["tok_per_s"] / results["bare_cold"]["tok_per_s"]

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
                                                  / results["bare_cold"]["tok_per_s"])
        ray.kill(engine)
    for k in [x for x in args.concurrent_batches.split(",") if x]:
        summary = sample_rationales(questions, {task: shots},
                                    replace(cfg, concurrent_batches=None if k == "auto" else int(k)),
                                    ResourcesConfig(), model, work / f"stage-c{k}")
        results[f"stage_c{k}"] = summary
        results[f"ratio_stage_c{k}_over_bare"] = (summary["steady_generated_tokens_per_s"]
                                                  / results["bare_cold"]["tok_per_s"])
        results[f"ratio_stage_c{k}_over_warm_bare"] = (summary["steady_generated_tokens_per_s"]
                                                       / results[f"bare_n{args.n}"]["tok_per_s"])
        if "bare_in_ray" in results:  # what the stage costs beyond running under Ray at all
            results[f"ratio_stage_c{k}_over_bare_in_ray"] = (summary["steady_generated_tokens_per_s"]
                                                             / results["bare_in_ray"]["tok_per_s"])

    # 3. scaling with the question count: throughput and driver memory
    for count in sweep:
        before = rss_mb()
        s = sample_rationales(pool[:count], {task: shots}, cfg, ResourcesConfig(), model, work / f"sweep{count}")
        results[f"sweep_{count}"] = {"steady_tok_per_s": s.get("steady_generated_tokens_per_s"),
                                     "tok_per_s_with_start": s["generated_tokens_per_s"], "wall_s": s["wall_s"],
                                     "driver_rss_mb_before": round(before), "driver_rss_mb_after": round(rss_mb())}
    ray.shutdown()

    # 4. transformers generate loop on a subset (--hf-questions 0 skips it)
    if args.hf_questions:
        stops = [json.loads(r["stop"]) for r in requests[: args.hf_questions]]
        hf = hf_generate(model, prompts[: args.hf_questions], stops, args.n, args.max_new_tokens,
                         resolve_dtype(spec), args.gpu)
        results["transformers"] = {**hf, "questions": args.hf_questions}
        results["ratio_bare_over_transformers"] = results[f"bare_n{args.n}"]["tok_per_s"] / hf["tok_per_s"]
        results["transformers_no_stop"] = {**hf["no_stop"], "questions": args.hf_questions}
        results["ratio_bare_over_transformers_no_stop"] = (results[f"bare_n{args.n}"]["tok_per_s"]
                                                           / hf["no_stop"]["tok_per_s"])
    print(json.dumps(results, indent=2))


def request_params(sampling, requests: list[dict], n: int) -> list:
    """The stage's ``SamplingParams`` for its request rows, with ``n`` samples each."""
    from scotd.inference.spec import sampling_params

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
    stepped on the loop's thread as in the stage, timed on its first call as the fresh bare engine."""
    from scotd.inference.loop import EngineLoop
    from scotd.inference.spec import build_llm

    loop = EngineLoop(lambda: build_llm(spec))
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
    from scotd.inference.loop import StepAccount

    engine, account = llm.llm_engine, StepAccount()
    step = engine.step
    engine.step = lambda: account.step(engine, step)
    try:
        yield account
    finally:
        del engine.step  # the class's method again


class BareEngine:
    """A plain ``vllm.LLM`` as a Ray actor, for the bare call under Ray. Built and called on one thread of its own
    (a CPU engine built on one thread and stepped on another runs slower: scotd/inference/loop.py's ``EngineLoop``)."""

    def __init__(self, spec: dict):
        from concurrent.futures import ThreadPoolExecutor

        from scotd.inference.spec import EngineSpec, build_llm

        self.thread = ThreadPoolExecutor(max_workers=1)
        self.llm = self.thread.submit(build_llm, EngineSpec(**spec)).result()

    def run(self, prompts: list[str], requests: list[dict], sampling: dict, n: int) -> dict:
        return self.thread.submit(self._run, prompts, requests, sampling, n).result()

    def _run(self, prompts: list[str], requests: list[dict], sampling: dict, n: int) -> dict:
        from scotd.inference.spec import Sampling

        s = Sampling(**sampling)
        # The first call of a fresh engine, as for the bare call it is compared with.
        return timed_generate(self.llm, prompts, request_params(s, requests, n))


def resolve(ref: str, questions, shots, work: Path) -> str:
    if ref == "tiny":
        from scotd.experiment import format_texts
        from scotd.prompts import student_prompt
        from scotd.tiny import ensure_tiny_model

        return str(ensure_tiny_model("teacher", work / "tiny", [student_prompt(q) for q in questions],
                                     format_texts(questions, {questions[0].task: shots})))
    from scotd.assets import resolve_model

    from scotd.config import OutputConfig
    return resolve_model(ref, Path(OutputConfig.cache_dir).expanduser())


def hf_generate(model: str, prompts: list[str], stops: list[list[str]], n: int, max_new_tokens: int, dtype: str,
                gpu: bool) -> dict:
    """The loop a user would write: one ``generate`` call per question with n return sequences, the same dtype and
    stop strings as the stage (a call ends when all n have stopped), after one untimed call (the bare engine's
    rate is a warm one too). Counts the tokens up to each sequence's end, as the engine does. Also the same loop
    without stop strings (``no_stop``: every sequence runs to the token limit, which is transformers' best rate:
    its stop-string check cost 0.14 s per step here, and stopped sequences still take part in every step)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if gpu else "cpu"
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def sample(prompt: str, stop: list[str] | None, max_tokens: int):
        ids = tok(prompt, return_tensors="pt").to(device)
        stopping = {"stop_strings": stop, "tokenizer": tok} if stop else {}
        out = lm.generate(**ids, do_sample=True, temperature=1.0, max_new_tokens=max_tokens, num_return_sequences=n,
                          pad_token_id=pad, **stopping)
        return int((out[:, ids["input_ids"].shape[1]:] != pad).sum())

    def loop(with_stops: bool) -> dict:
        started, tokens = time.perf_counter(), 0
        for prompt, stop in zip(prompts, stops):
            tokens += sample(prompt, stop if with_stops else None, max_new_tokens)
        seconds = time.perf_counter() - started
        return {"s": round(seconds, 2), "generated_tokens": tokens, "tok_per_s": tokens / seconds}

    sample(prompts[0], stops[0], 8)  # warm-up
    return {**loop(True), "no_stop": loop(False)}


if __name__ == "__main__":
    main()
