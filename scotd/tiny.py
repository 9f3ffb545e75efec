"""Tiny models built in-process (no downloads) for smoke runs and tests: ``tiny:teacher`` and ``tiny:student``.

Both are 2-layer Llama models with a byte-level BPE tokenizer trained on the run's own question texts. A purely
random teacher never writes the answer phrase, so every sample would fail to parse and the corpus would be empty;
``tiny:teacher`` is therefore first fitted for under a minute on *format* texts: its own few-shot prompt for a
training question followed by an exemplar's rationale and a random letter ("... So the answer is: (x)"). It learns
the shape of an answer, greedy decoding included, and nothing about the questions: its answers stay at chance.
``tiny:student`` stays random. Neither says anything about the method's quality; they exercise the machinery.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL = ["<pad>", "<s>", "</s>"]


def build_tokenizer(texts: list[str], vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE  # so that tiny students can train inside a chat template too
    return tokenizer


# A minimal chat template: each turn as "<|role|>\n<content></s>\n", then the assistant's header.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def build_model(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


FIT_TOKENS = 1024  # longer format texts are cut for fitting: their prompts exceed any tiny preset's engine


def fit_format(model, tokenizer, texts: list[str], steps: int = 80, batch_size: int = 8, lr: float = 5e-3,
               seed: int = 0) -> list[float]:
    """A few AdamW steps on random batches of ``texts``, each cut to ``FIT_TOKENS`` (a question of 50,000
    characters among them must not take the machine's memory: the teacher stage's length check leaves it out
    later); returns the loss curve. Small batches at a high rate: the format is what is learned, and it is learned
    quickly."""
    import random

    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        enc = tokenizer(rng.sample(texts, min(batch_size, len(texts))), padding=True, truncation=True,
                        max_length=FIT_TOKENS, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def ensure_tiny_model(role: str, folder: Path, corpus_texts: list[str], format_texts: list[str],
                      seed: int = 0) -> Path:
    """Build ``tiny:<role>`` into ``folder`` once (a marker file makes later calls instant)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"tiny:{role}: unknown tiny model (known: tiny:teacher, tiny:student)")
    marker = folder / "scotd_tiny.json"
    if marker.exists():
        return folder
    import torch

    tokenizer = build_tokenizer(corpus_texts + format_texts)
    model = build_model(tokenizer, seed)
    info = {"role": role, "seed": seed}
    if role == "teacher":
        losses = fit_format(model, tokenizer, [t + tokenizer.eos_token for t in format_texts])
        info["format_loss"] = [round(losses[0], 3), round(losses[-1], 3)]
        log.info("tiny teacher: format fit loss %.2f -> %.2f", losses[0], losses[-1])
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    marker.write_text(json.dumps(info))
    return folder
