"""How fast and how good the offline demo teacher is on this machine, per exemplar set: bare vLLM, no Ray.

    .venv/bin/python benchmarks/teacher_probe.py [--source ../shared/data/commonsenseqa/train_rand_split.jsonl]
        [--format commonsenseqa] [--exemplars commonsenseqa[,OTHER.jsonl]] [--greedy 32] [--sampled 8]

Loads Qwen2.5-Coder-1.5B-Instruct (scotd.assets, cached in ~/.cache/scotd) with scotd's engine settings and, for
each exemplar set in turn (the same engine, the same questions), answers training questions (never evaluation
ones) of a task source: a file in ``--format`` or a generated stream (``--source gen:coin_flip:train:2-4 --format
coin_flip --exemplars coin_flip``): ``--greedy`` questions greedy, then ``--sampled`` questions x 4 samples at T=1.
Prints wall time (prompt processing included), generated tokens, tokens/s, the share of completions with the gold
answer and the share cut at the token limit before any answer.
"""

import argparse
import time
from pathlib import Path

from scotd import symbolic
from scotd.assets import ensure_model
from scotd.inference.spec import EngineSpec, build_llm
from scotd.prompts import load_exemplars, parse_answer, stop_strings, teacher_prompt
from scotd.tasks import load_questions

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO.parent / "shared/data/commonsenseqa/train_rand_split.jsonl"))
    parser.add_argument("--format", default="commonsenseqa")
    parser.add_argument("--exemplars", default="commonsenseqa", help="comma-separated exemplar names or .jsonl paths")
    parser.add_argument("--num-exemplars", type=int, default=None, help="the first K of each set (default: all)")
    parser.add_argument("--greedy", type=int, default=32)
    parser.add_argument("--sampled", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    from vllm import SamplingParams

    from scotd.config import OutputConfig
    cache = Path(OutputConfig.cache_dir).expanduser()
    wanted = max(args.greedy, args.sampled)
    questions = (symbolic.generate(args.source, "probe", wanted) if args.source.startswith(symbolic.PREFIX)
                 else load_questions(args.source, args.format, "probe").questions[:wanted])
    started = time.time()
    llm = build_llm(EngineSpec(model=str(ensure_model("qwen2.5-coder-1.5b-instruct", cache)), max_model_len=1536,
                               cpu_kvcache_gb=2))
    print(f"engine start {time.time() - started:.1f} s", flush=True)
    for name in args.exemplars.split(","):
        shots = load_exemplars(name, "probe")[: args.num_exemplars]
        for num_questions, n in [(args.greedy, 1), (args.sampled, 4)]:
            asked = questions[:num_questions]
            params = SamplingParams(n=n, temperature=1.0 if n > 1 else 0.0, max_tokens=args.max_new_tokens,
                                    stop=stop_strings(max(len(q.choices) for q in asked)),
                                    include_stop_str_in_output=True, seed=0)
            started = time.time()
            outputs = llm.generate([teacher_prompt(q, shots) for q in asked], params, use_tqdm=False)
            seconds = time.time() - started
            completions = [(c, q) for o, q in zip(outputs, asked) for c in o.outputs]
            tokens = sum(len(c.token_ids) for c, _ in completions)
            parsed = [(parse_answer(c.text, len(q.choices)), q) for c, q in completions]
            right = sum(p.index == q.answer_index for p, q in parsed)
            cut = sum(c.finish_reason == "length" and p.index is None
                      for (c, _), (p, _) in zip(completions, parsed))
            print(f"{name}: {num_questions} questions x n={n}: {seconds:.1f} s, {tokens} tokens "
                  f"({tokens / len(completions):.1f} per completion), {tokens / seconds:.1f} tok/s, "
                  f"gold answer {right}/{len(completions)}, cut before an answer {cut}/{len(completions)}",
                  flush=True)
