"""The student model inside a training rank: LoRA adapters, the folder a checkpoint exports, the chat-template
record, and the greedy dev answers that score each epoch's checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from scotd.config import StudentConfig

log = logging.getLogger(__name__)


ADAPTER = "adapter"  # a LoRA student's adapter, inside its exported folder


def with_lora(model, cfg: StudentConfig, resume_dir: str | None):
    """``model`` with trainable LoRA adapters (everything else frozen): the saved adapter of a resumed run, or new
    ones from ``cfg.lora``."""
    from peft import LoraConfig, PeftModel, get_peft_model

    saved = Path(resume_dir) / ADAPTER if resume_dir else None
    if saved is not None and saved.is_dir():
        return PeftModel.from_pretrained(model, str(saved), is_trainable=True)
    lora = cfg.lora
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def save_model(module, folder: str, state: dict | None, *, lora: bool) -> None:
    """The Hugging Face folder a checkpoint exports: the weights (ZeRO-3: ``state``, gathered from every rank); for
    a LoRA student the base weights with the adapters merged in, which vLLM loads like any model, and the adapter
    itself in ``adapter/``."""
    if not lora:
        module.save_pretrained(folder, state_dict=state, safe_serialization=True)
        return
    import copy

    module.save_pretrained(str(Path(folder) / ADAPTER))
    copy.deepcopy(module).merge_and_unload().save_pretrained(folder, safe_serialization=True)


def chat_format(meta: dict, tokenizer, chat: bool) -> dict:
    """What ``scotd_student.json`` records of the chat template: whether the student uses it and, if so, its prompt
    formats as the template renders them (what the student sees at training and evaluation time)."""
    if not chat:
        return {"chat_template": False}
    from scotd.prompts import in_chat

    return {"chat_template": True,
            **{key: {"input": in_chat(tokenizer, f["input"]), "target": f["target"].lstrip()}
               for key, f in meta.items() if key.startswith("prompt_format")}}


def dev_metrics(model, tokenizer, dev: list[dict], max_new_tokens: int, rank: int, world: int, *, batch_size: int,
                synced: bool, chat: bool = False) -> dict:
    """Greedy answers of the model in training to the dev questions (``{"prompt", "num_choices", "gold"}``: gold is
    the answer key, ``prompts.gold_key``; ``chat``: asked inside the chat template, as in training), split over the
    ranks and summed: ``dev_accuracy`` chooses the checkpoint, ``dev_parse_failures`` explains it.

    Ranks answer equally many questions (the last ones wrap around and are not counted) so that ZeRO-3 ranks, which
    gather each layer's weights together, run the same number of forward passes (``synced``).
    """
    import torch
    import torch.distributed as dist

    from scotd.prompts import cut_at_stop, in_chat, parse_answer, stop_strings
    from scotd.scoring import answers_match

    per_rank = -(-len(dev) // world)
    mine = [(dev[(rank + k * world) % len(dev)], rank + k * world < len(dev)) for k in range(per_rank)]
    # No stop strings here: trained students end with EOS, and transformers' stop-string check slows generation
    # down several times on CPU; the parse below cuts at the first stop as the engine would.
    prompts = [in_chat(tokenizer, q["prompt"]) if chat else q["prompt"] for q, _ in mine]
    texts = greedy_answers(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size,
                           synced=synced and world > 1)
    correct = failures = counted = 0
    for (q, real), text in zip(mine, texts):
        if not real:
            continue
        parsed = parse_answer(cut_at_stop(text, stop_strings(q["num_choices"])), q["num_choices"])
        counted += 1
        correct += answers_match(parsed.key, q["gold"])
        failures += parsed.key is None
    totals = torch.tensor([correct, failures, counted], dtype=torch.long, device=model.device)
    if world > 1:
        dist.all_reduce(totals)
    correct, failures, counted = (int(v) for v in totals)
    return {"dev_accuracy": correct / max(1, counted), "dev_parse_failures": failures, "dev_questions": counted}


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, *, batch_size: int,
                   synced: bool = False) -> list[str]:
    """Greedy completions of ``prompts`` by a transformers model, in left-padded batches."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only batches pad on the left
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            inputs = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                     synced_gpus=synced)
            texts += tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts
