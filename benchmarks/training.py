"""Student training throughput, side by side in one run on the same model, data and batch size.

    .venv/bin/python benchmarks/training.py [--model offline:smollm2-135m-instruct|tiny|PATH] [--questions 64]
        [--zero-stage 2] [--no-pair] [--cpu-bf16]

Measures
  1. scotd's training path (Ray Train TorchTrainer + DeepSpeed ZeRO, stage 2 by default, one worker) against a plain single-process
     PyTorch loop (AdamW, same batches from scotd.student.data, same threads): real tokens/s of an epoch after
     start-up, their ratio (goal >= 0.9) and the real-token share of the batches (goal >= 0.9);
  2. two students trained in parallel (``train_students`` with both) against one after the other: wall time ratio;
  3. with ``--cpu-bf16``: scotd's path with bfloat16 autocast against float32 (tokens/s, the epoch's mean loss).
The corpus: real CommonsenseQA training questions, each with two short rationales naming the gold answer (a
throughput measurement: the text only needs realistic lengths).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "commonsenseqa" / "train_rand_split.jsonl"


def write_corpus(questions, path: Path) -> None:
    from scotd.corpus import with_training_text
    from scotd.schema import CORPUS_SCHEMA, to_table, write_table

    rows = [{"question_id": q.id, "task": q.task, "sample_index": k, "question": q.text, "choices": list(q.choices),
             "rationale": text, "label_index": q.answer_index, "label": "abcdefghij"[q.answer_index],
             "logprob_sum": None, "logprob_mean": None,
             "num_tokens": 0}
            for q in questions
            for k, text in enumerate((f"The question is about {q.choices[q.answer_index]}, and people usually "
                                      f"connect it with this situation.",
                                      f"Of the choices, only {q.choices[q.answer_index]} fits what is asked."))]
    write_table(to_table([with_training_text(r) for r in rows], CORPUS_SCHEMA), path)


def plain_loop(cfg, model_path: str, rows_path: Path) -> dict:
    """One epoch of the loop a user would write: same sequences and batches, AdamW, no Ray, no DeepSpeed."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scotd.student.data import collate, encode, epoch_sequences, make_batches, training_texts

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    encoded = encode(training_texts(pq.read_table(rows_path).to_pylist(), cfg.method), tokenizer)
    seqs = epoch_sequences(encoded, epoch=0, seed=cfg.seed, rank=0, world_size=1, max_length=cfg.max_length)
    batches = make_batches(seqs, cfg.micro_batch_size, seed=cfg.seed * 7919)
    model.train()
    started, real, padded = time.monotonic(), 0, 0
    for batch in batches:
        inputs, num_real = collate(batch, pad)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        real += num_real
        padded += inputs["input_ids"].numel()
    elapsed = time.monotonic() - started
    return {"epoch_s": elapsed, "tokens_per_s": real / elapsed, "real_token_share": real / padded,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline:smollm2-135m-instruct")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--zero-stage", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--no-pair", action="store_true", help="skip the parallel-vs-sequential measurement")
    parser.add_argument("--cpu-bf16", action="store_true", help="also train scotd's path with students.cpu_bf16 "
                        "(bfloat16 autocast) and report its tokens/s and loss against float32 on the same batches")
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import ray

    from scotd.config import StudentConfig
    from scotd.student.train import StudentJob, train_students
    from scotd.tasks import load_questions

    work = Path(tempfile.mkdtemp(prefix="scotd-train-bench-"))
    questions = load_questions(args.data, "commonsenseqa", "csqa").questions[: args.questions]
    rows = work / "corpus.parquet"
    write_corpus(questions, rows)
    model = resolve(args.model, questions, work)
    cores = len(os.sched_getaffinity(0))
    cfg = StudentConfig(name="bench", model=model, method="scotd", epochs=1, learning_rate=2e-5,
                        batch_size=args.micro_batch_size, micro_batch_size=args.micro_batch_size, warmup_steps=0,
                        max_length=256, zero_stage=args.zero_stage, cpus_per_worker=float(cores))

    def job(c: StudentConfig) -> StudentJob:
        return StudentJob(c, model, rows_path=str(rows), out_dir=str(work / c.name),
                          storage_path=str(work / "ray_train"))

    results: dict = {"model": args.model, "questions": len(questions), "cores": cores, "zero_stage": args.zero_stage}
    results["plain"] = plain_loop(cfg, model, rows)

    ray.init(address="local", num_cpus=max(4, 2 * cores), include_dashboard=False, log_to_driver=False)
    one = train_students([job(cfg)])[0]["history"][0]
    results["scotd"] = {k: one.get(k) for k in ("epoch_s", "tokens_per_s", "real_token_share", "threads")}
    results["ratio_scotd_over_plain_tokens_per_s"] = one["tokens_per_s"] / results["plain"]["tokens_per_s"]
    results["scotd"]["loss"] = one["loss"]
    if args.cpu_bf16:
        bf16 = train_students([job(replace(cfg, name="bench-bf16", cpu_bf16=True))])[0]["history"][0]
        results["scotd_cpu_bf16"] = {k: bf16.get(k) for k in ("epoch_s", "tokens_per_s", "loss")}
        results["ratio_bf16_over_fp32_tokens_per_s"] = bf16["tokens_per_s"] / one["tokens_per_s"]

    if not args.no_pair:
        # Parallel vs sequential: two students, each given half the cores when parallel, all when alone.
        half = max(1.0, cores / 2)
        pair = [replace(cfg, name="a", cpus_per_worker=half), replace(cfg, name="b", cpus_per_worker=half)]
        started = time.monotonic()
        train_students([job(c) for c in pair])
        parallel_s = time.monotonic() - started
        started = time.monotonic()
        for c in (replace(cfg, name="a2"), replace(cfg, name="b2")):
            train_students([job(c)])
        sequential_s = time.monotonic() - started
        results["two_students"] = {"parallel_s": parallel_s, "sequential_s": sequential_s,
                                   "ratio_parallel_over_sequential": parallel_s / sequential_s}
    ray.shutdown()
    print(json.dumps(results, indent=2))

def resolve(ref: str, questions, work: Path) -> str:
    if ref == "tiny":
        from scotd.prompts import student_prompt
        from scotd.tiny import ensure_tiny_model

        return str(ensure_tiny_model("student", work / "tiny", [student_prompt(q) for q in questions], []))
    from scotd.assets import resolve_model

    from scotd.config import OutputConfig
    return resolve_model(ref, Path(OutputConfig.cache_dir).expanduser())


if __name__ == "__main__":
    main()
