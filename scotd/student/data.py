"""Student training data: (prompt, target) pairs, tokenized once; what each epoch visits; how long training runs.

By default each epoch visits every training question once and pairs it with one of its kept rationales drawn at
random (balanced: questions with many correct rationales do not dominate); ``each_epoch: rationale`` visits every
kept rationale instead, the paper's "sheer volume". ``max_steps`` / ``max_tokens`` cut training at a fixed compute
so that students of different corpora compare fairly. Token ids are computed once for every prompt and every
target; an epoch only chooses indices and concatenates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scotd.prompts import in_chat, training_pair

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips: prompt tokens and padding carry no loss


@dataclass(frozen=True)
class EncodedQuestion:
    prompt_ids: tuple[int, ...]
    target_ids: tuple[tuple[int, ...], ...]  # one per kept rationale (a single one for label-only)


def training_texts(rows: list[dict], method: str) -> dict[str, tuple[str, list[str]]]:
    """Group corpus rows (or label rows for ``label_only``) into question id -> (prompt, [targets])."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for r in sorted(rows, key=lambda r: (r["question_id"], r.get("sample_index", 0))):
        free = not r["choices"]  # a free-form question's label is its answer text
        if method == "scotd":  # the answer text is read only without choices (older files have no such column)
            index, label, rationale = r["label_index"], r.get("label"), r["rationale"]
        else:
            index, label, rationale = r["answer_index"], r.get("answer"), None
        if (label if free else index) is None:
            continue
        prompt, target = training_pair(r["question"], r["choices"], rationale, index, label)
        groups.setdefault(r["question_id"], (prompt, []))[1].append(target)
    return groups


def encode(groups: dict[str, tuple[str, list[str]]], tokenizer, chat: bool = False) -> list[EncodedQuestion]:
    """Tokenize every prompt and target once; targets end with EOS so the student learns to stop. ``chat``: the
    prompt is the user turn of the tokenizer's chat template and the target the assistant's (``prompts.in_chat``;
    the EOS of a chat model's tokenizer ends its turn)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded = []
    for prompt, targets in groups.values():
        if chat:
            prompt, targets = in_chat(tokenizer, prompt), [t.lstrip() for t in targets]
        prompt_ids = tuple(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        target_ids = tuple(tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) + tuple(eos) for t in targets)
        encoded.append(EncodedQuestion(prompt_ids, target_ids))
    return encoded


def build_sequence(prompt: tuple[int, ...], target: tuple[int, ...], max_length: int) -> tuple[list[int], list[int]]:
    """``input_ids`` and ``labels`` (prompt masked); over-long sequences lose prompt tokens from the left first."""
    target = target[:max_length]
    keep = max_length - len(target)
    prompt = prompt[len(prompt) - keep:] if keep > 0 else ()
    return list(prompt) + list(target), [IGNORE_INDEX] * len(prompt) + list(target)


def epoch_picks(encoded: list[EncodedQuestion], *, epoch: int, seed: int, rank: int, world_size: int,
                each: str = "question") -> list[tuple[int, int]]:
    """This rank's (question, rationale) indices for one epoch, shuffled and split evenly across ranks.

    ``each`` "question": every question once, with one of its targets drawn at random (the balanced default);
    "rationale": every target of every question once (the whole corpus). Every rank gets the same count (the last
    ones wrap around) so data-parallel ranks take the same number of optimizer steps.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    if each == "rationale":
        picks = [(i, j) for i, e in enumerate(encoded) for j in range(len(e.target_ids))]
        rng.shuffle(picks)
    else:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        picks = [(i, rng.randrange(len(encoded[i].target_ids))) for i in order]
    per_rank = -(-len(picks) // world_size)
    return [picks[(rank + k * world_size) % len(picks)] for k in range(per_rank)]


def epoch_sequences(encoded: list[EncodedQuestion], *, epoch: int, seed: int, rank: int, world_size: int,
                    max_length: int, each: str = "question") -> list[tuple[list[int], list[int], tuple[int, int]]]:
    """This rank's sequences for one epoch (``epoch_picks``): ``input_ids``, ``labels`` and the pick they are."""
    return [(*build_sequence(encoded[i].prompt_ids, encoded[i].target_ids[j], max_length), (i, j))
            for i, j in epoch_picks(encoded, epoch=epoch, seed=seed, rank=rank, world_size=world_size, each=each)]


def make_batches(seqs: list[tuple], micro_batch_size: int, *, seed: int, bucket_batches: int = 16) -> list[list[tuple]]:
    """Length-bucketed micro-batches: sort windows of ``bucket_batches`` batches by length so padding stays small,
    then shuffle the batch order so lengths do not trend through the epoch."""
    window = micro_batch_size * bucket_batches
    batches = []
    for start in range(0, len(seqs), window):
        chunk = sorted(seqs[start:start + window], key=lambda s: len(s[0]))
        batches.extend(chunk[i:i + micro_batch_size] for i in range(0, len(chunk), micro_batch_size))
    random.Random(seed).shuffle(batches)
    return batches


def epoch_batches(encoded: list[EncodedQuestion], cfg, *, epoch: int, rank: int, world_size: int) -> list[list[tuple]]:
    """One rank's micro-batches of one epoch for a student config ``cfg`` (its seed, ``each_epoch``, lengths)."""
    seqs = epoch_sequences(encoded, epoch=epoch, seed=cfg.seed, rank=rank, world_size=world_size,
                           max_length=cfg.max_length, each=cfg.each_epoch)
    return make_batches(seqs, cfg.micro_batch_size, seed=cfg.seed * 7919 + epoch)


@dataclass(frozen=True)
class Plan:
    """How long a student trains: micro-batches per epoch (per rank), the epochs that run, the micro-batches in
    all (the last epoch may be cut short) and the optimizer steps the learning-rate schedule spans."""

    micro_per_epoch: int
    epochs: int
    micro_batches: int
    optimizer_steps: int


def training_plan(encoded: list[EncodedQuestion], cfg, world_size: int, accumulation: int) -> Plan:
    """``cfg.epochs`` epochs, cut at ``cfg.max_steps`` optimizer steps or at the micro-batch that reaches
    ``cfg.max_tokens`` trained tokens (all ranks; every rank's batches are known from the seed, so every rank
    computes the same plan and they stop together)."""
    micro = len(epoch_batches(encoded, cfg, epoch=0, rank=0, world_size=world_size))
    total = micro * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps * accumulation)
    if cfg.max_tokens is not None:
        tokens, done = 0, 0
        for epoch in range(cfg.epochs):
            ranks = [epoch_batches(encoded, cfg, epoch=epoch, rank=r, world_size=world_size)
                     for r in range(world_size)]
            for k in range(micro):
                tokens += sum(len(s[0]) for batches in ranks for s in batches[k])
                done += 1
                if tokens >= cfg.max_tokens:
                    break
            if tokens >= cfg.max_tokens:
                break
        total = min(total, done)
    total = max(total, 1)
    return Plan(micro_per_epoch=micro, epochs=-(-total // micro), micro_batches=total,
                optimizer_steps=max(1, -(-total // accumulation)))


def collate(batch: list[tuple], pad_id: int):
    """Right-pad to the longest sequence (items: ``input_ids``, ``labels``, and anything after them, ignored);
    returns torch tensors and the number of real tokens."""
    import torch

    width = max(len(item[0]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs, *_) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}, int(mask.sum())
