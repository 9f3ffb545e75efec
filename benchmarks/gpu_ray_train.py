"""scotd's student stage on a GPU, through Ray Train: ``train_students`` with ``use_gpu`` (NCCL process group, bf16
DeepSpeed ZeRO-2 and ZeRO-3, checkpoints through ``ray.train.report``, dev-split selection, HF export), next to the
bare DeepSpeed step of ``benchmarks/gpu_student.py`` on the same corpus, student size and micro-batch.

    python benchmarks/gpu_ray_train.py --corpus RUN/corpus/corpus.parquet --tokenizer MODEL_DIR \
        [--arch opt-350m] [--micro-batch-size 64] [--repeat 200] [--epochs 2] [--stages 2,3]

What it checks (exit status 1 and the reason when one fails): each student trains every epoch on the GPU, its loss
falls, its exported folder loads in bf16 and generates, and ``checkpoints.json`` names the dev-chosen epoch. What it
measures: real tokens/s of each student's last epoch (the first pays CUDA and allocator warm-up) and the ratio to
the bare step (``gpu_student.py --runs zeroS``) run before it in a subprocess, on sequences of the same corpus.

The student is OPT at a published size, randomly initialised and saved as a Hugging Face folder first (no model hub
on the GPU machine). The corpus is repeated ``--repeat`` times under new question ids so that an epoch holds enough
micro-batches to time; its texts are the corpus's own. Dev questions are the corpus's first 32 questions (the point
is the selection path, not the accuracy of a random student).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def save_student(arch: str, tokenizer_dir: str, folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer

    from gpu_student import build_model

    model, _ = build_model(arch, "cpu", torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def repeated_corpus(corpus: str, repeat: int, out: Path) -> tuple[Path, list[dict]]:
    import pyarrow.parquet as pq

    from scotd.prompts import letter, student_prompt
    from scotd.tasks import Question

    table = pq.read_table(corpus)
    rows = table.to_pylist()
    copies = [{**r, "question_id": f"{r['question_id']}#{k}"} for k in range(repeat) for r in rows]
    pq.write_table(table.from_pylist(copies, schema=table.schema), out)
    first = {}
    for r in rows:
        first.setdefault(r["question_id"], r)
    dev = [{"prompt": student_prompt(Question(r["question_id"], r["task"], r["question"], tuple(r["choices"]),
                                              r["label_index"])),
            "num_choices": len(r["choices"]), "gold": letter(r["label_index"])} for r in list(first.values())[:32]]
    return out, dev


def bare_step(args, stage: int, work: Path) -> float:
    out = work / f"bare-zero{stage}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_student.py"), "--corpus", args.corpus, "--tokenizer",
           args.tokenizer, "--arch", args.arch, "--micro-batch-sizes", str(args.micro_batch_size), "--runs",
           f"zero{stage}", "--steps", str(args.bare_steps), "--warmup", "5", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["runs"][0]["real_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a corpus.parquet written by `scotd run`")
    parser.add_argument("--tokenizer", required=True, help="a Hugging Face folder with a tokenizer")
    parser.add_argument("--arch", default="opt-350m")
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=200, help="copies of the corpus under new question ids")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stages", default="2,3", help="ZeRO stages, one student each")
    parser.add_argument("--bare-steps", type=int, default=30, help="timed steps of the bare run; 0 skips it")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "scotd-gpu-ray-train"))
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    import ray
    import torch

    from scotd.config import StudentConfig
    from scotd.layout import STUDENT_META
    from scotd.student.train import StudentJob, train_students

    gpu = torch.cuda.is_available()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = [int(s) for s in args.stages.split(",")]
    bare = {s: bare_step(args, s, work) for s in stages} if args.bare_steps else {}

    model = save_student(args.arch, args.tokenizer, work / "student")
    rows_path, dev = repeated_corpus(args.corpus, args.repeat, work / "corpus.parquet")
    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if gpu else 0, include_dashboard=False)
    jobs = [StudentJob(StudentConfig(name=f"zero{s}", model=str(model), zero_stage=s, use_gpu=gpu, epochs=args.epochs,
                                     micro_batch_size=args.micro_batch_size, batch_size=args.micro_batch_size,
                                     learning_rate=1e-4, warmup_steps=10, max_length=700, cpus_per_worker=2),
                       str(model), rows_path=str(rows_path), out_dir=str(work / f"zero{s}"),
                       storage_path=str(work / "ray_train"), meta={"base_model": f"{args.arch} (random init)"},
                       dev=dev, dev_max_new_tokens=32)
            for s in stages]
    started = time.monotonic()
    results = train_students(jobs)
    wall = time.monotonic() - started
    ray.shutdown()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = {"device": torch.cuda.get_device_name() if gpu else "cpu", "arch": args.arch, "torch": torch.__version__,
              "ray": ray.__version__, "micro_batch_size": args.micro_batch_size, "train_students_wall_s": wall,
              "students": []}
    faults = []
    for s, result in zip(stages, results):
        history = result["history"]
        last = history[-1]
        loaded = AutoModelForCausalLM.from_pretrained(result["model_dir"], dtype=torch.bfloat16)
        meta = json.loads((Path(result["model_dir"]) / STUDENT_META).read_text())
        tok = AutoTokenizer.from_pretrained(result["model_dir"])
        device = "cuda" if gpu else "cpu"
        ids = tok(dev[0]["prompt"], return_tensors="pt").to(device)
        generated = loaded.to(device).generate(**ids, max_new_tokens=8, do_sample=False)
        entry = {"student": f"zero{s}", "epochs": [{k: h[k] for k in ("epoch", "loss", "tokens_per_s", "epoch_s",
                                                                     "real_token_share", "dev_accuracy")}
                                                  for h in history],
                 "selection": result["selection"], "meta_student_use_gpu": meta["student"]["use_gpu"],
                 "generated_tokens": int(generated.shape[1] - ids["input_ids"].shape[1]),
                 "bare_tokens_per_s": bare.get(s)}
        entry["ratio_to_bare"] = last["tokens_per_s"] / bare[s] if s in bare else None
        report["students"].append(entry)
        print(json.dumps(entry), flush=True)
        if [h["epoch"] for h in history] != list(range(1, args.epochs + 1)):
            faults.append(f"zero{s}: epochs {[h['epoch'] for h in history]}")
        if not history[-1]["loss"] < history[0]["loss"]:
            faults.append(f"zero{s}: loss did not fall ({history[0]['loss']:.3f} -> {history[-1]['loss']:.3f})")
        if entry["generated_tokens"] < 1:
            faults.append(f"zero{s}: exported model generated nothing")
        if result["selection"]["best_epoch"] is None:
            faults.append(f"zero{s}: no dev-chosen epoch")
    report["faults"] = faults
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    sys.exit(1 if faults else 0)


if __name__ == "__main__":
    main()
