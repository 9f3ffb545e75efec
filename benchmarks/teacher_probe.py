"""How fast and how good the offline demo teacher is on this machine, per exemplar set: bare vLLM, no Ray.

    .venv/bin/python benchmarks/teacher_probe.py [--exemplars qasc[,OTHER.jsonl]] [--greedy 32] [--sampled 8]

Loads Qwen2.5-Coder-1.5B-Instruct (scotd.assets, cached in ~/.cache/scotd) with scotd's engine settings and, for
each exemplar set in turn (the same engine, the same questions), answers QASC questions from the hash split's
*train* part (never the evaluation part) with the demo's 4-exemplar teacher prompt: ``--greedy`` questions greedy,
then ``--sampled`` questions x 4 samples at T=1. Prints wall time (prompt processing included), generated tokens,
tokens/s, the share of completions with the gold answer and the share cut at 48 tokens before any answer.
"""

import argparse
import time
from pathlib import Path

from scotd.assets import ensure_dataset, ensure_model
from scotd.engine import EngineSpec, build_llm
from scotd.prompts import load_exemplars, parse_answer, stop_strings, teacher_prompt
from scotd.tasks import hash_split, load_questions

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplars", default="qasc", help="comma-separated exemplar names or .jsonl paths")
    parser.add_argument("--greedy", type=int, default=32)
    parser.add_argument("--sampled", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    from vllm import SamplingParams

    cache = Path("~/.cache/scotd").expanduser()
    questions = [q for q in load_questions(ensure_dataset("bigbench-qasc", cache), "jsonl", "qasc").questions
                 if hash_split(q.id) == "train"][: max(args.greedy, args.sampled)]
    started = time.time()
    llm = build_llm(EngineSpec(model=str(ensure_model("qwen2.5-coder-1.5b-instruct", cache)), max_model_len=1536,
                               cpu_kvcache_gb=2))
    print(f"engine start {time.time() - started:.1f} s", flush=True)
    for name in args.exemplars.split(","):
        shots = load_exemplars(name, "qasc")[:4]
        for num_questions, n in [(args.greedy, 1), (args.sampled, 4)]:
            asked = questions[:num_questions]
            params = SamplingParams(n=n, temperature=1.0 if n > 1 else 0.0, max_tokens=args.max_new_tokens,
                                    stop=stop_strings(4), include_stop_str_in_output=True, seed=0)
            started = time.time()
            outputs = llm.generate([teacher_prompt(q, shots) for q in asked], params, use_tqdm=False)
            seconds = time.time() - started
            completions = [(c, q) for o, q in zip(outputs, asked) for c in o.outputs]
            tokens = sum(len(c.token_ids) for c, _ in completions)
            parsed = [(parse_answer(c.text, 4), q) for c, q in completions]
            right = sum(p.index == q.answer_index for p, q in parsed)
            cut = sum(c.finish_reason == "length" and p.index is None
                      for (c, _), (p, _) in zip(completions, parsed))
            print(f"{name}: {num_questions} questions x n={n}: {seconds:.1f} s, {tokens} tokens "
                  f"({tokens / len(completions):.1f} per completion), {tokens / seconds:.1f} tok/s, "
                  f"gold answer {right}/{len(completions)}, cut before an answer {cut}/{len(completions)}",
                  flush=True)
