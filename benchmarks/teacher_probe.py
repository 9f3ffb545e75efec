"""How fast and how good the offline demo teacher is on this machine: bare vLLM, no Ray.

    .venv/bin/python benchmarks/teacher_probe.py

Loads Qwen2.5-Coder-1.5B-Instruct (scotd.assets, cached in ~/.cache/scotd) with scotd's engine settings and answers
the first QASC questions with the 4-exemplar teacher prompt: 8 questions greedy, 8 questions x 4 samples (T=1),
32 questions greedy. Prints wall time (prompt processing included), generated tokens, tokens/s and how many first
completions end with the gold letter.
"""

import time
from pathlib import Path

from scotd.assets import ensure_dataset, ensure_model
from scotd.engine import EngineSpec, build_llm
from scotd.prompts import load_exemplars, stop_strings, teacher_prompt
from scotd.tasks import load_questions

if __name__ == "__main__":
    from vllm import SamplingParams

    cache = Path("~/.cache/scotd").expanduser()
    questions = load_questions(ensure_dataset("bigbench-qasc", cache), "jsonl", "qasc").questions[:32]
    shots = load_exemplars("qasc", "qasc")[:4]
    started = time.time()
    llm = build_llm(EngineSpec(model=str(ensure_model("qwen2.5-coder-1.5b-instruct", cache)), max_model_len=1536,
                               cpu_kvcache_gb=2))
    print(f"engine start {time.time() - started:.1f} s", flush=True)
    for num_questions, n in [(8, 1), (8, 4), (32, 1)]:
        prompts = [teacher_prompt(q, shots) for q in questions[:num_questions]]
        params = SamplingParams(n=n, temperature=1.0 if n > 1 else 0.0, max_tokens=48, stop=stop_strings(4),
                                include_stop_str_in_output=True)
        started = time.time()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.time() - started
        tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        right = sum(o.outputs[0].text.strip().endswith(f"({chr(97 + q.answer_index)})")
                    for o, q in zip(outputs, questions))
        print(f"{num_questions} questions x n={n}: {seconds:.1f} s, {tokens} tokens, {tokens / seconds:.1f} tok/s, "
              f"first completion right {right}/{num_questions}", flush=True)
