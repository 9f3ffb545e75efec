"""GPU student step: tokens/s and model FLOPs utilisation of a ~1B student in bf16, scotd's DeepSpeed path vs plain.

    python benchmarks/gpu_student.py --corpus RUN/corpus/corpus.parquet --tokenizer MODEL_DIR [--arch opt-1.3b]

What runs, side by side in one process on one GPU, on the same micro-batches:
  plain       the loop a user would write: fp32 weights, bf16 autocast, fused AdamW, gradient clipping;
  zero2/zero3 scotd's student step: the model loaded in bf16, ``deepspeed.initialize`` with the dict from
              ``scotd.student.settings.deepspeed_config`` (ZeRO stage 2 or 3, bf16, fp32 master weights, clipping)
              and the batches from ``scotd.student.data`` (one rationale per question visit, length-bucketed).
This is the body of ``train_loop_per_worker`` without Ray Train around it; ``benchmarks/gpu_ray_train.py`` runs
the same step inside Ray Train (``train_students``) next to this one.

The student is the paper's OPT architecture at its published sizes, randomly initialised (no model hub on the GPU
machine; FLOPs and memory traffic do not depend on the weights' values). Any tokenizer whose ids fit OPT's
vocabulary works; the sequences are the corpus's real prompts and rationales.

MFU = model FLOPs / (time x peak dense bf16 FLOP/s). Model FLOPs per trained token = 6 x parameters (matmuls,
forward + backward) + 12 x layers x hidden x sequence length (attention scores and values), counted on real
(non-pad) tokens: padding is work the GPU does but not work the model needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Published sizes of facebook/opt-* (hidden, layers, heads, ffn); vocabulary 50272, 2048 positions.
OPT_SIZES = {"opt-125m": (768, 12, 12, 3072), "opt-350m": (1024, 24, 16, 4096), "opt-1.3b": (2048, 24, 32, 8192)}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core bf16, SXM parts


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def build_model(arch: str, device: str, dtype):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    hidden, layers, heads, ffn = OPT_SIZES[arch]
    config = OPTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=ffn,
                       word_embed_proj_dim=hidden, vocab_size=50272, max_position_embeddings=2048,
                       attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = OPTForCausalLM(config).to(dtype)
    return model, config


def model_flops(n_params: int, config, batches_tokens: list[tuple[int, int]]) -> float:
    """Training FLOPs of the real tokens in ``batches_tokens`` = [(real tokens, padded width), ...]."""
    attn = 12 * config.num_hidden_layers * config.hidden_size
    return sum(real * (6 * n_params + attn * width) for real, width in batches_tokens)


def micro_batches(args, tokenizer, cfg, count: int):
    """``count`` micro-batches from scotd's data path, cycling epochs over the corpus."""
    import pyarrow.parquet as pq

    from scotd.student.data import epoch_sequences, encode, make_batches, training_texts

    encoded = encode(training_texts(pq.read_table(args.corpus).to_pylist(), "scotd"), tokenizer)
    seqs, epoch = [], 0
    while len(seqs) < count * cfg.micro_batch_size:
        seqs += epoch_sequences(encoded, epoch=epoch, seed=cfg.seed, rank=0, world_size=1, max_length=cfg.max_length)
        epoch += 1
    return make_batches(seqs[: count * cfg.micro_batch_size], cfg.micro_batch_size, seed=cfg.seed)


def time_steps(step, batches, pad_id, device, warmup: int) -> dict:
    import torch

    from scotd.student.data import collate

    tensors = []
    for batch in batches:
        inputs, real = collate(batch, pad_id)
        tensors.append(({k: v.to(device) for k, v in inputs.items()}, real, inputs["input_ids"].shape[1]))
    for inputs, _, _ in tensors[:warmup]:
        step(inputs)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for inputs, _, _ in tensors[warmup:]:
        step(inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    timed = tensors[warmup:]
    real = sum(r for _, r, _ in timed)
    padded = sum(i["input_ids"].numel() for i, _, _ in timed)
    return {"steps": len(timed), "seconds": elapsed, "real_tokens_per_s": real / elapsed,
            "real_token_share": real / padded, "batches_tokens": [(r, w) for _, r, w in timed],
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def run_plain(args, cfg, batches, pad_id, device):
    import torch

    model, config = build_model(args.arch, device, torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=device == "cuda")
    forward = torch.compile(model, dynamic=True) if args.compile else model

    def step(inputs):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = forward(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = time_steps(step, batches, pad_id, device, args.warmup)
    n_params = sum(p.numel() for p in model.parameters())
    return result, n_params, config


def run_deepspeed(args, cfg, batches, pad_id, device):
    import deepspeed
    import torch

    from scotd.student.settings import deepspeed_config, single_rank_no_allreduce, warmup_linear

    model, config = build_model(args.arch, device, torch.bfloat16 if cfg.use_gpu else torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(cfg.warmup_steps, len(batches)))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, 1))
    single_rank_no_allreduce(engine, 1)
    engine.train()
    if args.compile:
        engine.compile(compile_kwargs={"dynamic": True})

    def step(inputs):
        loss = engine(**inputs).loss
        engine.backward(loss)
        engine.step()

    result = time_steps(step, batches, pad_id, device, args.warmup)
    engine.destroy()
    return result, n_params, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a corpus.parquet written by `scotd run`")
    parser.add_argument("--tokenizer", required=True, help="a Hugging Face folder with a tokenizer")
    parser.add_argument("--arch", default="opt-1.3b", choices=sorted(OPT_SIZES))
    parser.add_argument("--micro-batch-sizes", default="32,128", help="comma-separated; 32 is the paper's batch")
    parser.add_argument("--runs", default="plain,zero2,zero3")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=700)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every run")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from scotd.config import StudentConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update({k: os.environ.get(k, v) for k, v in
                       {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29533"}.items()})
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = peak_flops(gpu)
    report = {"device": gpu, "arch": args.arch, "compile": args.compile, "torch": torch.__version__,
              "deepspeed": deepspeed.__version__, "peak_bf16_flops": peak, "runs": []}
    for mbs in (int(x) for x in args.micro_batch_sizes.split(",")):
        cfg = StudentConfig(name="bench", micro_batch_size=mbs, batch_size=mbs, warmup_steps=0, learning_rate=2e-5,
                            max_length=args.max_length, use_gpu=device == "cuda")
        batches = micro_batches(args, tokenizer, cfg, args.warmup + args.steps)
        for run in args.runs.split(","):
            if run == "plain":
                result, n_params, config = run_plain(args, cfg, batches, pad_id, device)
            else:
                stage = int(run.removeprefix("zero"))
                result, n_params, config = run_deepspeed(args, replace(cfg, zero_stage=stage), batches, pad_id, device)
            flops = model_flops(n_params, config, result.pop("batches_tokens"))
            result.update(run=run, compile=args.compile, micro_batch_size=mbs, params=n_params,
                          model_tflops_per_s=flops / result["seconds"] / 1e12)
            result["mfu"] = flops / result["seconds"] / peak if peak else None
            report["runs"].append(result)
            print(json.dumps(result), flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    by = {(r["run"], r["micro_batch_size"]): r for r in report["runs"]}
    report["ratios_over_plain"] = {f"{run}@{mbs}": r["real_tokens_per_s"] / by[("plain", mbs)]["real_tokens_per_s"]
                                   for (run, mbs), r in by.items() if run != "plain" and ("plain", mbs) in by}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
