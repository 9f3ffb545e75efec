"""Kill a real sampling run part-way (SIGKILL of the driver) and rerun the same command: the rerun samples only the
questions that were not finished, and the corpus holds every (question, sample index) exactly once.

Real stack: the tiny teacher in vLLM's CPU engine inside a Ray Data actor on the session's Ray head."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from scotd.schema import SAMPLE_SCHEMA
from tests.conftest import REPO, signal_once_written

pytestmark = pytest.mark.slow

QUESTIONS, N, BLOCK = 96, 4, 4


def teacher_command(out, shared_data) -> list[str]:
    csqa = shared_data / "commonsenseqa"
    return [sys.executable, "-m", "scotd.cli", "run", str(REPO / "configs" / "tiny.yaml"), "--stages", "tasks,teacher",
            f"output.dir={out}", f"tasks.0.train={csqa / 'train_rand_split.jsonl'}",
            f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}", f"tasks.0.max_train={QUESTIONS}",
            f"teacher.num_samples={N}", f"teacher.batch_size={BLOCK}"]


def blocks(samples_dir) -> dict[str, str]:
    """Block file name -> sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(samples_dir.glob("*.parquet"))}


def test_sigkilled_sampling_run_resumes_without_redoing_or_duplicating(ray_cluster, shared_data, tmp_path):
    out = tmp_path / "exp"
    samples_dir = out / "teacher" / "samples"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    signal_once_written(teacher_command(out, shared_data), env, samples_dir, signal.SIGKILL, tmp_path / "first.log")
    before = blocks(samples_dir)
    done = set(pq.read_table(samples_dir, columns=["question_id"]).column("question_id").to_pylist())
    assert 0 < len(done) < QUESTIONS, f"kill was not part-way: {len(done)} of {QUESTIONS} questions finished"
    assert not (out / "teacher" / "sampling_summary.json").exists()

    rerun = subprocess.run(teacher_command(out, shared_data), env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    after = blocks(samples_dir)
    assert {name: after[name] for name in before} == before, "blocks finished before the kill were rewritten"
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert summary["questions_sampled_this_run"] == QUESTIONS - len(done)
    assert summary["questions"] == QUESTIONS and summary["samples"] == QUESTIONS * N

    samples = pq.read_table(samples_dir, schema=SAMPLE_SCHEMA)
    keys = list(zip(samples["question_id"].to_pylist(), samples["sample_index"].to_pylist()))
    assert len(keys) == len(set(keys)) == QUESTIONS * N
    train = pq.read_table(out / "questions" / "train.parquet").column("question_id").to_pylist()
    assert set(samples["question_id"].to_pylist()) == set(train)
    assert all(sorted(i for q, i in keys if q == qid) == list(range(N)) for qid in train[:10])


def test_rounds_and_a_sample_budget_resume_exactly_once_and_spend_what_rounds_save(ray_cluster, shared_data,
                                                                                   tmp_path):
    """teacher.samples_per_round with stop_when_repeated, under teacher.sample_budget: questions take 2 to N
    samples, so more questions than budget / N are sampled; a SIGKILL part-way and a rerun leave every question's
    samples whole (0..k-1) and sampled once, the budget kept to within a question, and the corpus and the labels
    holding the sampled questions only."""
    out = tmp_path / "exp"
    samples_dir = out / "teacher" / "samples"
    budget = 48
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    command = [*teacher_command(out, shared_data), "teacher.samples_per_round=2", "teacher.stop_when_repeated=true",
               "teacher.temperature=0.05",  # a cold tiny teacher repeats itself often
               f"teacher.sample_budget={budget}"]
    signal_once_written(command, env, samples_dir, signal.SIGKILL, tmp_path / "first.log")
    before = blocks(samples_dir)
    first = {r["question_id"] for r in pq.read_table(samples_dir, columns=["question_id"]).to_pylist()}
    rerun = subprocess.run([*command, "--stages", "tasks,teacher,corpus"], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = blocks(samples_dir)
    assert {name: after[name] for name in before} == before, "blocks finished before the kill were rewritten"
    samples = pq.read_table(samples_dir, schema=SAMPLE_SCHEMA).to_pylist()
    by_question: dict[str, list[int]] = {}
    for r in samples:
        by_question.setdefault(r["question_id"], []).append(r["sample_index"])
    assert first < set(by_question), "the kill was not part-way, or the rerun sampled nothing"
    counts = [len(v) for v in by_question.values()]
    assert all(sorted(v) == list(range(len(v))) for v in by_question.values())  # whole, each sample once
    assert all(c in (2, 4) for c in counts)  # rounds of 2 up to N = 4
    assert counts.count(2) > 0, "no question stopped after its first round"
    sampled = set(by_question)
    assert budget // N < len(sampled) < QUESTIONS and len(samples) <= budget + N
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert summary["questions_left_unsampled"] == QUESTIONS - len(sampled)
    assert f"the sample budget ({budget}) is spent" in rerun.stderr
    labels = set(pq.read_table(out / "corpus" / "labels.parquet").column("question_id").to_pylist())
    kept = set(pq.read_table(out / "corpus" / "corpus.parquet").column("question_id").to_pylist())
    assert labels == sampled and kept <= sampled
