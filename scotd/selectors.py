"""Corpus selectors: which of a question's kept rationales a student trains on.

Each selector is a pure function over corpus rows (``CORPUS_SCHEMA`` dicts) that returns a subset of them; the
paper's ablations compare them at an equal budget (5 rationales per question on average) against keeping all:

- ``first_n``: the N-sweep. Rows whose ``sample_index`` < N, i.e. what sampling only N rationales per question
  would have produced (the filter already ran on all samples, so N=5 keeps the correct ones among the first 5).
- ``random``: up to k per question, drawn with a per-question seed.
- ``likelihood``: the k with the highest teacher log-probability per token (``logprob_mean``).
- ``diverse``: the question's rationales embedded, clustered into k groups (k-means), the rationale nearest each
  group's centre kept.
- ``open_ended``: questions ranked by how varied their rationales are (unique bigrams across them), split into
  quintiles; at the default budget of 5 the least varied fifth keeps 1 rationale, then 3, 5, 7, and the most varied
  keeps 9 (average 5). Another budget k scales these counts in proportion (``open_ended_keep``), so k means the same
  average for all four selectors.

Every budget is a cap: a question with fewer kept rationales than its budget keeps them all, so the rationales per
question a selector actually keeps (``students/<name>/model/scotd_student.json``, ``selection.per_question``; the
report's selector table) can be below k.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

SELECTORS = ("all", "first_n", "random", "likelihood", "diverse", "open_ended")
OPEN_ENDED_KEEP = (1, 3, 5, 7, 9)  # rationales kept per question, by quintile of open-endedness (low -> high)

Embed = Callable[[list[str]], np.ndarray]


def by_question(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["question_id"], r["sample_index"])):
        groups[r["question_id"]].append(r)
    return dict(groups)


def _rng(seed: int, question_id: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{question_id}".encode()).digest()[:8], "little"))


def first_n(rows: Sequence[dict], n: int) -> list[dict]:
    return [r for r in rows if r["sample_index"] < n]


def random_k(rows: Sequence[dict], k: int, seed: int = 0) -> list[dict]:
    out = []
    for qid, group in by_question(rows).items():
        out.extend(group if len(group) <= k else _rng(seed, qid).sample(group, k))
    return out


def likelihood_k(rows: Sequence[dict], k: int) -> list[dict]:
    """Highest mean log-probability per token first; rows without a score come last, ties by sample index."""
    out = []
    for group in by_question(rows).values():
        ranked = sorted(group, key=lambda r: (r["logprob_mean"] is None, -(r["logprob_mean"] or 0.0),
                                              r["sample_index"]))
        out.extend(ranked[:k])
    return out


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster labels of ``vectors`` (rows) into ``k`` groups: k-means++ start, Lloyd iterations."""
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(len(vectors))]]
    for _ in range(1, k):
        dist = np.min([((vectors - c) ** 2).sum(axis=1) for c in centres], axis=0)
        if dist.sum() == 0:
            centres.append(vectors[rng.integers(len(vectors))])
        else:
            centres.append(vectors[rng.choice(len(vectors), p=dist / dist.sum())])
    centres = np.array(centres)
    labels = np.zeros(len(vectors), dtype=int)
    for iteration in range(iterations):
        labels_new = ((vectors[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        if iteration > 0 and np.array_equal(labels_new, labels):
            break
        labels = labels_new
        for j in range(k):
            if (labels == j).any():
                centres[j] = vectors[labels == j].mean(axis=0)
    return labels


def diverse_k(rows: Sequence[dict], k: int, embed: Embed, seed: int = 0) -> list[dict]:
    """One rationale per cluster: k clusters of the question's rationale embeddings, the member nearest each centre."""
    out = []
    for qid, group in by_question(rows).items():
        if len(group) <= k:
            out.extend(group)
            continue
        vectors = np.asarray(embed([r["rationale"] for r in group]), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        labels = kmeans(vectors, k, seed=int(_rng(seed, qid).random() * 2**31))
        for j in sorted(set(labels.tolist())):
            members = np.flatnonzero(labels == j)
            centre = vectors[members].mean(axis=0)
            nearest = members[((vectors[members] - centre) ** 2).sum(axis=1).argmin()]
            out.append(group[int(nearest)])
    return out


def unique_bigrams(texts: Sequence[str]) -> int:
    seen = set()
    for text in texts:
        words = text.lower().split()
        seen.update(zip(words, words[1:]))
    return len(seen)


def open_ended_keep(budget: int) -> tuple[int, ...]:
    """Rationales kept per quintile for an average ``budget`` per question: proportional to 1:3:5:7:9, at least 1 each,
    rounded by largest remainder so that the five counts sum to 5 x budget (mean exactly ``budget``).
    5 -> (1, 3, 5, 7, 9); 2 -> (1, 1, 2, 3, 3); 10 -> (2, 6, 10, 14, 18); 1 -> (1, 1, 1, 1, 1)."""
    if budget < 1:
        raise ValueError(f"open_ended: the budget must be at least 1 rationale per question, got {budget}")
    total = budget * len(OPEN_ENDED_KEEP)
    ideal = [total * w / sum(OPEN_ENDED_KEEP) for w in OPEN_ENDED_KEEP]
    counts = [max(1, math.floor(x)) for x in ideal]
    # the quintiles furthest below their ideal share get the rest, the more open-ended first on a tie
    order = sorted(range(len(counts)), key=lambda q: (counts[q] - ideal[q], -q))
    for q in order[: total - sum(counts)]:
        counts[q] += 1
    return tuple(counts)


def open_ended(rows: Sequence[dict], seed: int = 0, keep: Sequence[int] = OPEN_ENDED_KEEP) -> list[dict]:
    """Questions in quintiles of unique bigrams across their rationales; quintile q keeps ``keep[q]`` at random."""
    groups = by_question(rows)
    ranked = sorted(groups, key=lambda qid: (unique_bigrams([r["rationale"] for r in groups[qid]]), qid))
    out = []
    for position, qid in enumerate(ranked):
        quintile = position * len(keep) // len(ranked)
        out.extend(random_k(groups[qid], keep[quintile], seed))
    return out


def select(rows: Sequence[dict], selector: str, *, k: int = 5, seed: int = 0, embed: Embed | None = None) -> list[dict]:
    """Apply ``selector`` with budget ``k`` per question (``open_ended``: on average; ``first_n``: N). ``embed`` is
    needed by ``diverse`` only."""
    if selector == "all":
        return list(rows)
    if selector == "first_n":
        return first_n(rows, k)
    if selector == "random":
        return random_k(rows, k, seed)
    if selector == "likelihood":
        return likelihood_k(rows, k)
    if selector == "diverse":
        if embed is None:
            raise ValueError("selector 'diverse' needs an embedding function")
        return diverse_k(rows, k, embed, seed)
    if selector == "open_ended":
        return open_ended(rows, seed, keep=open_ended_keep(k))
    raise ValueError(f"unknown selector {selector!r}; known: {', '.join(SELECTORS)}")


def hf_embedder(model_path: str, batch_size: int = 32) -> Embed:
    """Sentence embeddings from a causal LM: the mean of the last hidden layer over the text's tokens.

    The default is the offline SmolLM2-135M-Instruct (the demo's student), which runs on CPU with no model hub;
    any local or hub model with hidden states works.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(model_path, dtype=torch.float32).eval()

    def embed(texts: list[str]) -> np.ndarray:
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                                max_length=256)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                chunks.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))

    return embed
