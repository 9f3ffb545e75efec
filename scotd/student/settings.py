"""A student's training settings derived from its config (pure): DeepSpeed's config, gradient accumulation, the
learning-rate schedule, bf16 autocast on CPU, early stopping, the order of checkpoints, and what a run trained on."""

from __future__ import annotations

from scotd import cpu
from scotd.config import StudentConfig


def accumulation_steps(cfg: StudentConfig, world_size: int) -> int:
    return max(1, cfg.batch_size // (cfg.micro_batch_size * world_size))


def deepspeed_config(cfg: StudentConfig, world_size: int) -> dict:
    """The DeepSpeed dict, built here and nowhere else. The optimizer and schedule are client objects (AdamW +
    ``warmup_linear``), which avoids DeepSpeed compiling fused/cpu Adam kernels."""
    accum = accumulation_steps(cfg, world_size)
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # full weights for the HF export
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "train_batch_size": cfg.micro_batch_size * accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.use_gpu},  # fp32 on CPU: bf16 autocast there is slow and lossy for tiny models
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def single_rank_no_allreduce(engine, world_size: int) -> None:
    """With one rank there is nothing to average: at ZeRO stage 0/1 DeepSpeed would still flatten every gradient
    into buckets, all-reduce them with itself and copy them back after each backward."""
    if world_size == 1 and engine.zero_optimization_stage() < 2:
        engine.enable_backward_allreduce = False


def warmup_linear(warmup_steps: int, total_steps: int):
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    warmup = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def cpu_autocast(cfg: StudentConfig) -> bool:
    """Whether a CPU student's forward passes run under bfloat16 autocast (``students[].cpu_bf16``)."""

    return not cfg.use_gpu and (cfg.cpu_bf16 is True or (cfg.cpu_bf16 == "auto" and cpu.cpu_has_bf16()))


def stop_early(history: list[dict], patience: int | None) -> bool:
    """Whether the last ``patience`` epochs of ``history`` brought no better dev accuracy than the best before
    them (pure; never without ``patience`` or dev scores)."""
    scores = [h["dev_accuracy"] for h in history if "dev_accuracy" in h]
    if not patience or len(scores) <= patience:
        return False
    return max(scores[-patience:]) <= max(scores[:-patience])


def seen_summary(history: list[dict], cfg: StudentConfig) -> dict:
    """What a student trained on, over its epochs: sequences, tokens (prompt and target, no padding) and distinct
    (question, rationale) pairs, with the epochs it ran and whether early stopping or a step/token budget ended it
    (pure; epochs written before these counts existed give None)."""
    def total(key: str):
        values = [h.get(key) for h in history]
        return None if not values or None in values else int(sum(values))

    epochs = len(history)
    planned = history[-1].get("planned_epochs", cfg.epochs) if history else cfg.epochs
    ended = ("early stopping" if epochs < planned else
             "step or token budget" if planned < cfg.epochs or (history and history[-1].get("micro_batches", 0)
                                                                 < history[0].get("micro_batches", 0)) else "epochs")
    return {"epochs": epochs, "sequences": total("sequences"), "tokens": total("tokens"),
            "distinct_rationales": history[-1].get("distinct_rationales_seen") if history else None,
            "each_epoch": cfg.each_epoch, "ended_by": ended}


def best_key(metrics: dict) -> tuple:
    """Order of checkpoints by dev result: accuracy, then fewer parse failures, then the later epoch (pure)."""
    return metrics["dev_accuracy"], -metrics.get("dev_parse_failures", 0), metrics["epoch"]
