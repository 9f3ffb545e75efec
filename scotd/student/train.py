"""Student stage: Ray Train ``TorchTrainer`` workers running a DeepSpeed ZeRO training loop.

``train_loop_per_worker(config)`` reads only its argument, the student's ``StudentJob``. Each epoch reports metrics and a checkpoint (a Hugging
Face folder) through ``ray.train.report``; a restarted run continues after the last reported epoch. Several
students train concurrently: each ``TorchTrainer.fit()`` runs in its own Ray task (``train_students``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scotd import layout
from scotd.config import StudentConfig
from scotd.cpu import normal_priority, use_own_extensions_dir
from scotd.tracking import StudentTracking, student_logger
from scotd.schema import write_text
from scotd.student.model import chat_format, dev_metrics, save_model, with_lora
from scotd.student.settings import (accumulation_steps, best_key, cpu_autocast, deepspeed_config, seen_summary,
                                    single_rank_no_allreduce, stop_early, warmup_linear)

log = logging.getLogger(__name__)

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


@dataclass(frozen=True)
class StudentJob:
    """One student to train, as the driver hands it to ``fit_student`` and every rank's ``train_loop_per_worker``:
    its config, the base model, its training rows (a path or URI every node reads), its folder (on the driver's
    node), Ray Train's storage, the metadata its exported model carries, and the dev questions (``prompt``,
    ``num_choices``, ``gold``) that score each epoch with ``dev_max_new_tokens`` per answer."""

    cfg: StudentConfig
    model_path: str
    rows_path: str
    out_dir: str
    storage_path: str
    meta: dict = field(default_factory=dict)
    dev: list[dict] = field(default_factory=list)
    dev_max_new_tokens: int = 128
    tracking: StudentTracking | None = None  # where rank 0 logs its curves (MLflow), if anywhere
    run_name: str = ""  # Ray Train's run (its checkpoints under storage_path); default: the student's name

    @property
    def history_path(self) -> Path:
        return layout.history(Path(self.out_dir))


@dataclass
class _Worker:
    """What one rank trains with, set up by ``_set_up``."""

    job: StudentJob
    rank: int
    world: int
    tokenizer: Any
    engine: Any  # the DeepSpeed engine around the model
    scheduler: Any
    encoded: list
    plan: Any  # student.data.Plan
    pad_id: int
    autocast: bool
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    resume_dir: str | None = None


def train_loop_per_worker(config: dict) -> None:
    """One data-parallel rank of ``config["job"]`` (a ``StudentJob``; Ray Train passes a dict): set up, then each
    epoch trained, scored on dev and reported as a checkpoint, until the plan or early stopping ends it."""
    job: StudentJob = config["job"]
    cfg = job.cfg
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        normal_priority()  # Ray's worker niceness makes the OpenMP team wait for preempted threads
        use_own_extensions_dir()  # DeepSpeed's CPU op, built once per environment (make setup)
    w = _set_up(job)
    progress = Progress(layout.progress(Path(job.out_dir)) if w.rank == 0 else None)
    tracker = student_logger(job.tracking, cfg.name, w.rank, asdict(cfg))
    seen: set[tuple[int, int]] = set()  # every rank's (question, rationale) picks trained on so far
    for epoch in range(w.start_epoch):
        seen.update(_picks(w.encoded, cfg, epoch, w.world, w.plan.micro_per_epoch))
    for epoch in range(w.start_epoch, w.plan.epochs):
        if stop_early(w.history, cfg.patience):
            break
        trained = _train_epoch(w, epoch, seen, progress, tracker)
        metrics = {**_dev_scores(w), **trained}
        if tracker:
            tracker.log_metrics({f"epoch_{k}": float(v) for k, v in metrics.items()
                                 if k in ("loss", "tokens_per_s", "dev_accuracy", "dev_parse_failures")},
                                step=epoch + 1)
        w.history.append(metrics)
        _report(w.engine, w.tokenizer, job, metrics, w.history, w.rank)
        if stop_early(w.history, cfg.patience):
            log.info("rank %d: %s stops early: no better dev accuracy in %d epochs", w.rank, cfg.name, cfg.patience)
    if tracker:
        tracker.end_run()
    if w.resume_dir:
        shutil.rmtree(w.resume_dir, ignore_errors=True)


def _set_up(job: StudentJob) -> _Worker:
    """The rank's model (from the last checkpoint when Ray Train resumes the run), tokenized rows, training plan,
    optimizer and schedule inside a DeepSpeed engine."""
    import deepspeed
    import pyarrow.parquet as pq
    import ray.train
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scotd.student.data import encode, training_plan, training_texts

    cfg = job.cfg
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    start_epoch, model_path, history, resume_dir = 0, job.model_path, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        resume_dir = checkpoint.to_directory()
        resumed = json.loads(layout.student_meta(Path(resume_dir)).read_text())
        start_epoch, history = resumed["epochs_done"], resumed.get("history", [])
        model_path = resume_dir
        log.info("rank %d: resuming %s after epoch %d", rank, cfg.name, start_epoch)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dtype = torch.bfloat16 if cfg.use_gpu else torch.float32
    # A LoRA student resumes as the base model with its saved adapter; a full one from the checkpoint's weights.
    model = AutoModelForCausalLM.from_pretrained(job.model_path if cfg.lora else model_path, dtype=dtype)
    if cfg.lora:
        model = with_lora(model, cfg, resume_dir)
    rows = pq.read_table(job.rows_path).to_pylist()
    encoded = encode(training_texts(rows, cfg.method), tokenizer, chat=cfg.chat_template)
    if not encoded:
        raise RuntimeError(f"student {cfg.name}: no training examples in {job.rows_path}")
    accum = accumulation_steps(cfg, world)
    plan = training_plan(encoded, cfg, world, accum)
    trainable = [p for p in model.parameters() if p.requires_grad]  # a LoRA student's adapters only
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(cfg.warmup_steps, plan.optimizer_steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, world))
    single_rank_no_allreduce(engine, world)
    for _ in range(start_epoch * plan.micro_per_epoch // accum):
        scheduler.step()  # the schedule continues where the checkpointed run stopped
    engine.train()
    return _Worker(job, rank, world, tokenizer, engine, scheduler, encoded, plan, pad_id, cpu_autocast(cfg),
                   start_epoch, history, resume_dir)


def _train_epoch(w: _Worker, epoch: int, seen: set, progress: Progress, tracker) -> dict:
    """One epoch of this rank's micro-batches (``seen`` gains every rank's picks); its loss, speed and counts."""
    import torch

    from scotd.student.data import collate, epoch_batches

    cfg, plan, world = w.job.cfg, w.plan, w.world
    limit = min(plan.micro_per_epoch, plan.micro_batches - epoch * plan.micro_per_epoch)
    batches = epoch_batches(w.encoded, cfg, epoch=epoch, rank=w.rank, world_size=world)[:limit]
    seen.update(_picks(w.encoded, cfg, epoch, world, limit))
    started_at, started = time.time(), time.monotonic()
    loss_sum, real, padded, target_tokens = 0.0, 0, 0, 0
    for step, batch in enumerate(batches, start=1):
        step_started = time.monotonic()
        inputs, num_real = collate(batch, w.pad_id)
        inputs = {k: v.to(w.engine.device) for k, v in inputs.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=w.autocast):
            loss = w.engine(**inputs).loss  # HF causal-LM loss: mean over the target tokens of the micro-batch
        w.engine.backward(loss)
        w.engine.step()
        loss_sum += float(loss.detach())
        real += num_real
        padded += inputs["input_ids"].numel()
        target_tokens += int((inputs["labels"] != -100).sum())
        progress.update(epoch=epoch + 1, epochs=plan.epochs, first_epoch=w.start_epoch + 1, step=step,
                        steps=len(batches), loss=loss_sum / step)
        if tracker:
            tracker.log_metrics({"loss": float(loss.detach()), "learning_rate": w.scheduler.get_last_lr()[0],
                                 "tokens_per_s": num_real * world / (time.monotonic() - step_started)},
                                step=epoch * len(batches) + step)
    elapsed = time.monotonic() - started
    return {"epoch": epoch + 1, "loss": loss_sum / max(1, len(batches)), "micro_batches": len(batches),
            "tokens_per_s": real * world / elapsed, "real_token_share": real / max(1, padded),
            "target_tokens": target_tokens, "lr": w.scheduler.get_last_lr()[0], "epoch_s": elapsed,
            "started_at": started_at, "ended_at": time.time(), "threads": torch.get_num_threads(),
            "cpu_bf16_autocast": w.autocast,
            # what the student saw, all ranks together: this epoch's sequences and tokens; rationales so far
            "sequences": len(batches) * cfg.micro_batch_size * world, "tokens": real * world,
            "distinct_rationales_seen": len(seen), "planned_epochs": plan.epochs}


def _dev_scores(w: _Worker) -> dict:
    """Greedy dev accuracy after the epoch, the dev questions shared among the ranks (none without a dev split)."""
    job = w.job
    if not job.dev:
        return {}
    return dev_metrics(w.engine.module, w.tokenizer, job.dev, job.dev_max_new_tokens, w.rank, w.world,
                       batch_size=job.cfg.dev_batch_size, synced=job.cfg.zero_stage == 3, chat=job.cfg.chat_template)


def _picks(encoded, cfg: StudentConfig, epoch: int, world: int, limit: int) -> set[tuple[int, int]]:
    """Every rank's (question, rationale) picks in the first ``limit`` micro-batches of ``epoch``."""
    from scotd.student.data import epoch_batches

    return {item[2] for r in range(world) for batch in epoch_batches(encoded, cfg, epoch=epoch, rank=r,
                                                                     world_size=world)[:limit] for item in batch}




class Progress:
    """Rank 0's position in training, written to ``progress.json`` in the student's folder at most every
    ``every_s`` seconds and at each epoch's end (the driver reads it to log progress); a no-op where that folder
    is not on this node. ``started`` is when this run's first step began (after model load and start-up)."""

    def __init__(self, path: Path | None, every_s: float = 5.0):
        self.path = path if path is not None and path.parent.is_dir() else None
        self.every_s, self.last, self.started = every_s, 0.0, time.time()

    def update(self, **position) -> None:
        now = time.monotonic()
        if self.path is None or (now - self.last < self.every_s and position["step"] < position["steps"]):
            return
        self.last = now
        write_text(self.path, json.dumps({**position, "started": self.started, "time": time.time()}))


def progress_line(name: str, position: dict | None) -> str:
    """``name: epoch 2/4, step 13/30, loss 1.520, ~95 s left`` from a student's ``progress.json`` (pure); the time
    left is this run's pace so far (dev scoring between epochs not counted)."""
    if not position:
        return f"{name}: starting"
    steps, first = position["steps"], position["first_epoch"]
    done = ((position["epoch"] - first) * steps + position["step"]) / ((position["epochs"] - first + 1) * steps)
    elapsed = max(position["time"] - position["started"], 0.0)
    left = f", ~{elapsed / done * (1 - done):.0f} s left" if 0 < done < 1 else ""
    return (f"{name}: epoch {position['epoch']}/{position['epochs']}, step {position['step']}/{steps}, "
            f"loss {position['loss']:.3f}{left}")


def _report(engine, tokenizer, job: StudentJob, metrics: dict, history: list[dict], rank: int) -> None:
    """Save an HF folder (rank 0) and report it; ZeRO-3 gathers the sharded weights on every rank first. The
    checkpoint's metadata carries the metrics of every epoch so far; ``history.jsonl`` in the student's folder is
    a progress log, written where that folder is on this worker's node."""
    import ray.train

    cfg = job.cfg
    state = engine._zero3_consolidated_16bit_state_dict() if cfg.zero_stage == 3 else None
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_model(engine.module, tmp, state, lora=cfg.lora is not None)
            tokenizer.save_pretrained(tmp)
            meta = {**job.meta, **chat_format(job.meta, tokenizer, cfg.chat_template), "student": asdict(cfg),
                    "epochs_done": metrics["epoch"], "metrics": metrics,
                    "history": history}
            layout.student_meta(Path(tmp)).write_text(json.dumps(meta, indent=2))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
    # Written after ``report`` returns: Ray's result queue holds one report, so once epoch N's line is there the
    # controller has taken epoch N-1's checkpoint, and a worker killed from then on resumes after it.
    log_path = job.history_path
    if rank == 0 and log_path.parent.is_dir():
        with open(log_path, "a", encoding="utf-8") as progress:
            progress.write(json.dumps(metrics) + "\n")


def fit_student(job: StudentJob) -> dict:
    """Train one student with ``TorchTrainer``; export the last checkpoint to ``out_dir/model`` and, with dev
    questions, the checkpoint with the best dev accuracy to ``out_dir/model-best`` when it is another epoch
    (``out_dir/checkpoints.json`` says which epochs they are)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg, dev, out_dir = job.cfg, job.dev, job.out_dir
    # Students queued for GPUs (more students than GPUs, or nodes still autoscaling) wait for their workers; Ray
    # Train retries a wait without end but logs a WorkerGroupStartupTimeoutError traceback each 60 s. Infeasible
    # requests still fail at once (checked before the wait). Ray passes this variable from the process calling fit()
    # to its controller; a value the user set is kept.
    os.environ.setdefault(START_TIMEOUT_ENV, "1800")
    # With a dev split Ray keeps the best-scoring checkpoint besides the latest; without, the last two.
    keep = (CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="dev_accuracy", checkpoint_score_order="max")
            if dev else CheckpointConfig(num_to_keep=2))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=RunConfig(name=job.run_name or cfg.name, storage_path=job.storage_path,
                             checkpoint_config=keep,
                             failure_config=FailureConfig(max_failures=2)),
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"student {cfg.name}: training ended without a checkpoint ({result.error})")
    last_epoch = int(result.metrics["epoch"])
    selection = {"last_epoch": last_epoch, "best_epoch": None, "dev_questions": len(dev)}
    if dev:
        best, best_metrics = max(result.best_checkpoints, key=lambda cm: best_key(cm[1]))
        selection["best_epoch"] = int(best_metrics["epoch"])
        if selection["best_epoch"] != last_epoch:
            _export(best, layout.student_model(Path(out_dir), layout.MODEL_BEST))
    final = layout.student_model(Path(out_dir))
    tmp = _export(result.checkpoint, final.with_name(".model.last"))
    history = json.loads(layout.student_meta(tmp).read_text())["history"]
    selection["dev"] = [{k: h[k] for k in ("epoch", "dev_accuracy", "dev_parse_failures")}
                        for h in history if "dev_accuracy" in h]
    selection["seen"] = seen_summary(history, cfg)
    write_text(layout.checkpoints(Path(out_dir)), json.dumps(selection, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # last: its presence marks the student done
    return {"name": cfg.name, "model_dir": str(final), "history": history, "selection": selection}


def _export(checkpoint, final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def train_students(jobs: list[StudentJob], every_s: float = 15.0) -> list[dict]:
    """Run every student's ``fit_student`` concurrently, each in its own Ray task; Ray schedules their workers.
    Every ``every_s`` seconds the driver logs each student's epoch, step, loss and time left."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: each task exports its student into the experiment folder there.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    fit = ray.remote(num_cpus=0, scheduling_strategy=here)(fit_student)
    for job in jobs:
        layout.progress(Path(job.out_dir)).unlink(missing_ok=True)  # a position left by an earlier run
    refs = [fit.remote(job) for job in jobs]
    pending = refs
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=every_s)
        lines = [progress_line(job.cfg.name, _read_progress(layout.progress(Path(job.out_dir)))) for job in jobs]
        log.info("[students] %s", "; ".join(lines))
    return ray.get(refs)


def _read_progress(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
