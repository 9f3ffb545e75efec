"""Teacher sampling throughput, side by side in one run on the same model and prompts.

    .venv/bin/python benchmarks/sampling.py [--model tiny|offline:<key>|PATH] [--questions 64] [--n 4]

Measures generated tokens/s of
  1. scotd's sampling stage (Ray Data + vLLM actor, resumable block writing, parsing),
  2. bare ``vllm.LLM.generate`` in one process with the same SamplingParams (the ceiling),
  3. a plain transformers ``generate`` loop (what one would write without an engine), on a subset,
and prints the ratios 1/2 and 2/3 (engine start-up excluded from every timing). Also N = 1, 5 (and --n) for
the bare engine: time per generated token, showing the prompt is not paid N times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--hf-questions", type=int, default=8, help="questions for the transformers baseline")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "commonsenseqa" / "dev_rand_split.jsonl"))
    args = parser.parse_args()

    import ray

    from scotd.config import ResourcesConfig, TeacherConfig
    from scotd.engine import EngineSpec, Sampling, build_llm
    from scotd.prompts import load_exemplars, stop_strings, teacher_prompt
    from scotd.tasks import load_questions
    from scotd.teacher import engine_spec, question_seed, sample_rationales

    questions = load_questions(args.data, "commonsenseqa", "csqa").questions[: args.questions]
    shots = load_exemplars("commonsenseqa", "csqa")[:3]
    work = Path(tempfile.mkdtemp(prefix="scotd-bench-"))
    model = resolve(args.model, questions, shots, work)
    cfg = TeacherConfig(model=model, num_samples=args.n, max_new_tokens=args.max_new_tokens, max_model_len=1024,
                        batch_size=max(1, args.questions // 4), cpu_kvcache_gb=2)
    results = {"model": args.model, "questions": len(questions), "n": args.n}

    # 2. bare engine, same prompts and params (built first so its start-up is not timed)
    from vllm import SamplingParams

    llm = build_llm(engine_spec(cfg, model))
    prompts = [teacher_prompt(q, shots) for q in questions]

    def bare(n: int) -> tuple[float, int]:
        params = [SamplingParams(n=n, temperature=1.0, max_tokens=args.max_new_tokens, seed=question_seed(0, q.id),
                                 stop=stop_strings(len(q.choices)), include_stop_str_in_output=True, logprobs=0)
                  for q in questions]
        started = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - started, sum(len(c.token_ids) for o in outs for c in o.outputs)

    bare(1)  # warm-up
    for n in sorted({1, 5, args.n}):
        seconds, tokens = bare(n)
        results[f"bare_n{n}"] = {"s": seconds, "tokens": tokens, "tok_per_s": tokens / seconds,
                                 "ms_per_token": 1000 * seconds / tokens}
    del llm

    # 1. scotd's stage on a local Ray cluster, in four engine calls; its steady rate is measured after the first
    # call returned, which leaves the actor's engine start-up out as the bare engine's is.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    out = work / "stage"
    started = time.perf_counter()
    summary = sample_rationales(questions, {"csqa": shots}, cfg, ResourcesConfig(), model, out)
    stage_total = time.perf_counter() - started
    ray.shutdown()
    results["stage"] = {"s_total_with_engine_start": stage_total, "summary": summary}

    # 3. transformers generate loop on a subset
    hf_s, hf_tokens = hf_generate(model, prompts[: args.hf_questions], args.n, args.max_new_tokens)
    results["transformers"] = {"s": hf_s, "tokens": hf_tokens, "tok_per_s": hf_tokens / hf_s,
                               "questions": args.hf_questions}
    bare_n = results[f"bare_n{args.n}"]["tok_per_s"]
    results["ratio_stage_over_bare"] = summary["steady_generated_tokens_per_s"] / bare_n
    results["ratio_bare_over_transformers"] = bare_n / results["transformers"]["tok_per_s"]
    print(json.dumps(results, indent=2))


def resolve(ref: str, questions, shots, work: Path) -> str:
    if ref == "tiny":
        from scotd.pipeline import format_texts
        from scotd.prompts import student_prompt
        from scotd.tiny import ensure_tiny_model

        return str(ensure_tiny_model("teacher", work / "tiny", [student_prompt(q) for q in questions],
                                     format_texts(questions, {"csqa": shots})))
    from scotd.assets import resolve_model

    return resolve_model(ref, Path(os.path.expanduser("~/.cache/scotd")))


def hf_generate(model: str, prompts: list[str], n: int, max_new_tokens: int) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    started, tokens = time.perf_counter(), 0
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        out = lm.generate(**ids, do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens,
                          num_return_sequences=n, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = out[:, ids["input_ids"].shape[1]:]
        tokens += int((new != (tok.pad_token_id or tok.eos_token_id)).sum())
    return time.perf_counter() - started, tokens


if __name__ == "__main__":
    main()
