"""Which of two rationales is better: an automatic pairwise judge and an export of the same pairs for people.

The paper asked crowd workers to compare two rationales for the same question. Here a judge model (by default the
teacher) sees the question, two rationales in an order drawn per question (seeded, so a rerun asks the same
questions the same way) and answers ``(1)``, ``(2)`` or ``(tie)``. Verdicts are mapped back to the two runs; the
report gives win rates and a two-sided sign test on the non-tied pairs (the exact binomial test McNemar uses).

A pair is built only where both runs wrote a rationale (a completion with text before the answer phrase), so
label-only students, which write none, cannot be judged. ``judge/<a>__vs__<b>/`` holds ``pairs.jsonl`` (what the
judge saw, in the order it saw it, with a ``key`` column mapping positions to runs), ``verdicts.parquet``,
``summary.json``, and the same pairs for people: ``annotate.jsonl`` (blind: pair id, question, choices, rationale A
and B in the judge's order, an empty ``verdict`` to fill with A, B or tie) and ``key.jsonl`` (pair id -> the runs
shown as A and B, kept from annotators); ``tally_annotations`` scores a filled-in copy like the judge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from scotd import layout
from scotd.inference import EngineSpec, Sampling, engine_spec, generate_rows
from scotd.prompts import parse_answer, render_question
from scotd.runs import EvalRun, eval_runs, run_dir_name
from scotd.schema import PREDICTION_SCHEMA, read_table, write_table, write_text
from scotd.scoring import mcnemar_p
from scotd.tasks import Question

if TYPE_CHECKING:
    from scotd.config import EngineConfig
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)

INSTRUCTION = ("Two explanations answer the same multiple-choice question. Judge which explanation reasons better: "
               "correct facts, steps that lead to the answer, no irrelevant or repeated text. Reply with (1), (2) or "
               "(tie).")
VERDICTS = ("1", "2", "tie")
_VERDICT = re.compile(r"\(\s*(1|2|tie)\s*\)", re.I)


def judge_prompt(q: Question, first: str, second: str) -> str:
    return (f"{INSTRUCTION}\n\n{render_question(q)}\n\nExplanation (1): {first.strip()}\n\n"
            f"Explanation (2): {second.strip()}\n\nBetter explanation:")


def parse_verdict(text: str | None) -> str | None:
    """``"1"``, ``"2"``, ``"tie"`` from the first parenthesised verdict, or None."""
    found = _VERDICT.search(text or "")
    return found.group(1).lower() if found else None


def swapped(seed: int, question_id: str) -> bool:
    """Whether run b's rationale is shown first for this question: a fair coin per (seed, question)."""
    return hashlib.sha256(f"{seed}:{question_id}".encode()).digest()[0] & 1 == 1


def make_pairs(questions: dict[str, Question], a: str, b: str, preds_a: list[dict], preds_b: list[dict],
               seed: int = 0) -> list[dict]:
    """One pair per question both runs wrote a rationale for, in the order the judge will see them."""
    rationale = lambda p: parse_answer(p["text"], len(questions[p["question_id"]].choices)).rationale  # noqa: E731
    by_b = {p["question_id"]: rationale(p) for p in preds_b}
    pairs = []
    for p in sorted(preds_a, key=lambda p: p["question_id"]):
        qid = p["question_id"]
        ra, rb = rationale(p), by_b.get(qid, "")
        if not ra or not rb:
            continue
        flip = swapped(seed, qid)
        first, second = (rb, ra) if flip else (ra, rb)
        pairs.append({"question_id": qid, "question": render_question(questions[qid]), "first": first,
                      "second": second, "key": {"1": b if flip else a, "2": a if flip else b}})
    return pairs


def tally(pairs: list[dict], verdicts: list[str | None], a: str, b: str) -> dict:
    """Wins of each run, ties, unparsed verdicts and the sign-test p-value on the decided pairs."""
    wins = {a: 0, b: 0}
    ties = unparsed = 0
    for pair, verdict in zip(pairs, verdicts, strict=True):
        if verdict is None:
            unparsed += 1
        elif verdict == "tie":
            ties += 1
        else:
            wins[pair["key"][verdict]] += 1
    decided = wins[a] + wins[b]
    p = mcnemar_p(wins[a], wins[b])
    return {"a": a, "b": b, "pairs": len(pairs), "wins_a": wins[a], "wins_b": wins[b], "ties": ties,
            "unparsed": unparsed, "win_rate_a": wins[a] / decided if decided else None,
            "p_value": p, "within_noise": p >= 0.05}


def blind_pairs(pairs: list[dict], questions: dict[str, Question]) -> tuple[list[dict], list[dict]]:
    """The pairs for people to rate: ``annotate`` rows hold nothing that names a run (a pair id, the question, its
    choices, rationale A and B in the judge's per-question random order, an empty verdict); ``key`` rows map each
    pair id to its question and to the runs shown as A and B."""
    annotate, key = [], []
    for number, p in enumerate(pairs, start=1):
        pair_id = f"pair-{number:04d}"
        q = questions[p["question_id"]]
        annotate.append({"pair_id": pair_id, "question": q.text, "choices": list(q.choices), "rationale_a": p["first"],
                         "rationale_b": p["second"], "verdict": ""})
        key.append({"pair_id": pair_id, "question_id": p["question_id"], "a": p["key"]["1"], "b": p["key"]["2"]})
    return annotate, key


def tally_annotations(annotated: list[dict], key: list[dict], a: str, b: str) -> dict:
    """People's verdicts on the pairs of runs ``a`` and ``b`` (``annotate.jsonl`` rows with ``verdict`` filled in:
    A, B or tie, any case; anything else counts as unparsed), mapped back to the runs through the ``key.jsonl`` rows
    and counted as ``tally`` counts the judge's. Every pair of the key must be there once."""
    by_id = {row["pair_id"]: row for row in annotated}
    if len(by_id) != len(annotated) or by_id.keys() != {k["pair_id"] for k in key}:
        raise ValueError(f"the annotated pairs ({len(annotated)}) are not the key's {len(key)} pairs, each once")
    positions = {"a": "1", "b": "2", "tie": "tie"}
    verdicts = [positions.get(str(by_id[k["pair_id"]].get("verdict") or "").strip().lower()) for k in key]
    return tally([{"key": {"1": k["a"], "2": k["b"]}} for k in key], verdicts, a, b)


class AnnotationError(ValueError):
    """A judge folder or a filled-in annotation file that cannot be scored; the message names the file."""


def read_annotations(folder: Path, annotated: Path) -> dict:
    """``tally_annotations`` of a filled-in copy of ``folder``'s annotate.jsonl (``folder``: a judge/<a>__vs__<b>
    folder), with the same keys as the judge's summary.json."""
    folder = Path(folder)
    summary = _read_jsonl(layout.summary(folder), whole=True)[0]
    rows, key = _read_jsonl(annotated), _read_jsonl(layout.pair_file(folder, "key.jsonl"))
    try:
        return tally_annotations(rows, key, summary["a"], summary["b"])
    except ValueError as err:
        raise AnnotationError(f"{annotated}: {err} (was it exported from {folder}?)") from None


def people_summary(folder: Path, annotated: Path) -> dict:
    """``read_annotations``, also written to ``folder/people_summary.json`` (beside the judge's summary.json)."""
    summary = {**read_annotations(folder, annotated), "annotations": str(annotated)}
    write_text(layout.pair_file(Path(folder), "people_summary.json"), json.dumps(summary, indent=2))
    return summary


def _read_jsonl(path: Path, whole: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file (``whole``: the file is one JSON object); a missing file or a line that is
    not a JSON object is an ``AnnotationError`` naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    lines = [(1, text)] if whole else [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for number, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise AnnotationError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Written atomically: a killed write never leaves a short file a rerun trusts."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _write_blind(folder: Path, pairs: list[dict], by_id: dict[str, Question]) -> None:
    """The annotators' file and its key (``blind_pairs``); the key last, as it marks the export done."""
    annotate, key = blind_pairs(pairs, by_id)
    _write_jsonl(layout.pair_file(folder, "annotate.jsonl"), annotate)
    _write_jsonl(layout.pair_file(folder, "key.jsonl"), key)


def judge_runs(questions: list[Question], a: str, b: str, preds_a: list[dict], preds_b: list[dict], spec: EngineSpec,
               engine: EngineConfig, *, judge_dir: Path, num_cpus: float, seed: int = 0,
               max_new_tokens: int = 8) -> dict:
    """Judge every pair through the batched engine path (greedy) on ``engine``'s pool and write the pair folder;
    reruns reuse it."""
    import pyarrow as pa

    folder = layout.pair_dir(judge_dir, run_dir_name(a), run_dir_name(b))
    by_id = {q.id: q for q in questions}
    if layout.summary(folder).exists():
        return json.loads(layout.summary(folder).read_text())
    pairs = make_pairs(by_id, a, b, preds_a, preds_b, seed)
    requests = [{"prompt": judge_prompt(by_id[p["question_id"]], p["first"], p["second"]), "seed": 0, "n": 1,
                 "stop": json.dumps(["\n"]), "question_id": p["question_id"]} for p in pairs]
    verdicts: dict[str, str] = {}
    for batch in generate_rows(requests, spec, Sampling(temperature=0.0, max_new_tokens=max_new_tokens,
                                                        logprobs=False),
                               engine, num_cpus=num_cpus, run=f"judge:{a}:{b}", label=f"judge {a} vs {b}"):
        verdicts.update({str(q): str(t) for q, t in zip(batch["question_id"], batch["text"])})
    parsed = [parse_verdict(verdicts.get(p["question_id"])) for p in pairs]
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(layout.pair_file(folder, "pairs.jsonl"), pairs)
    _write_blind(folder, pairs, by_id)
    # text is null where the engine returned nothing for a pair (counted as unparsed), "" where it answered nothing
    write_table(pa.table({"question_id": [p["question_id"] for p in pairs],
                          "text": pa.array([verdicts.get(p["question_id"]) for p in pairs], pa.string()),
                          "verdict": parsed,
                          "winner": [p["key"].get(v) if v in ("1", "2") else v for p, v in zip(pairs, parsed)]}),
                layout.pair_file(folder, "verdicts.parquet"))
    summary = {**tally(pairs, parsed, a, b), "judge": spec.model, "seed": seed}
    write_text(layout.summary(folder), json.dumps(summary, indent=2))  # last: marks the pair judged
    log.info("judge %s vs %s: %s", a, b, summary)
    return summary


def stage_judge(exp: Experiment) -> list[dict]:
    """The pairwise rationale judge over ``eval.judge_pairs`` (greedy predictions of both runs); nothing without
    pairs."""
    cfg = exp.cfg
    if not cfg.eval.judge_pairs:
        return []
    by_run: dict[str, EvalRun] = {r.run: r for r in eval_runs(cfg, exp.dir) if r.samples == 1}
    for i, pair in enumerate(cfg.eval.judge_pairs):
        missing = [name for name in pair if name not in by_run]
        if len(pair) != 2 or missing:
            raise ValueError(f"eval.judge_pairs.{i}: expected two evaluation runs of {sorted(by_run)}, got "
                             f"{list(pair)}")
    engine = cfg.engine("judge")
    spec = engine_spec(engine, exp.engine_model(exp.model_path(engine.model)), cfg.output.cache_dir,
                       cfg.teacher.seed)
    questions = exp.questions("eval")

    def preds(run: str) -> list[dict]:
        return read_table(layout.predictions(layout.run_dir(exp.dir, by_run[run].dir)), PREDICTION_SCHEMA).to_pylist()

    return [judge_runs(questions, a, b, preds(a), preds(b), spec, engine, judge_dir=layout.judge_dir(exp.dir),
                       num_cpus=cfg.resources.engine_cpus, seed=cfg.teacher.seed)
            for a, b in cfg.eval.judge_pairs]
