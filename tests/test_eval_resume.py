"""Stop a real evaluation part-way with SIGTERM, as ``timeout``, a scheduler or Kubernetes do, and rerun the same
command: the stopped run ends with one line naming the stage and the command that resumes, and the rerun asks only
the questions no answers file holds, so each evaluation question is answered exactly once.

Real stack: the tiny teacher in vLLM's CPU engine inside a Ray Data actor on the session's Ray head; the job is the
``scotd`` command line in its own process group, signalled the way ``timeout`` signals it."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from scotd.schema import ANSWER_SCHEMA
from tests.conftest import REPO, signal_once_written

pytestmark = pytest.mark.slow

QUESTIONS, BATCH = 64, 4


def eval_command(out, shared_data) -> list[str]:
    csqa = shared_data / "commonsenseqa"
    return [sys.executable, "-m", "scotd.cli", "run", str(REPO / "configs" / "tiny.yaml"), "--stages", "tasks,eval",
            f"output.dir={out}", f"tasks.0.train={csqa / 'train_rand_split.jsonl'}",
            f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}", f"tasks.0.max_eval={QUESTIONS}",
            f"eval.batch_size={BATCH}", "students=[]", "eval.untrained=false", "eval.judge_pairs=[]"]


def files(folder) -> dict[str, str]:
    """File name -> sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_sigterm_during_evaluation_then_rerun_answers_each_question_once(ray_cluster, shared_data, tmp_path):
    out = tmp_path / "exp"
    answers = out / "eval" / "teacher" / "answers"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    command = eval_command(out, shared_data)
    code, stderr = signal_once_written(command, env, answers, signal.SIGTERM, tmp_path / "first.log")
    assert code == 128 + signal.SIGTERM, stderr[-3000:]  # the job's output: its log lines (stderr) only
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("scotd: stopped by SIGTERM in stage eval; finished work is kept. Resume with: "
                                "scotd run "), stderr[-3000:]
    assert "--stages tasks,eval" in lines[-1] and f"output.dir={out}" in lines[-1]
    assert "Traceback" not in stderr and "***" not in stderr and "SIGTERM received" not in stderr, stderr[-3000:]
    assert all(line[:2].isdigit() or line.startswith("scotd:") for line in lines), stderr[-3000:]  # scotd's only
    assert not (out / "eval" / "teacher" / "metrics.json").exists()
    before = files(answers)
    done = pq.read_table(answers, schema=ANSWER_SCHEMA).column("question_id").to_pylist()
    assert 0 < len(done) < QUESTIONS, f"the stop was not part-way: {len(done)} of {QUESTIONS} answered"
    timings = json.loads((out / "timings.json").read_text())
    assert timings["eval"] > 0  # the stopped run's time is counted

    rerun = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"eval teacher: {len(set(done))} questions answered by an earlier run, {QUESTIONS - len(set(done))} to ask" \
        in rerun.stderr
    after = files(answers)
    assert {name: after[name] for name in before} == before, "answers kept before the stop were rewritten"
    asked = pq.read_table(answers, schema=ANSWER_SCHEMA).column("question_id").to_pylist()
    assert len(asked) == len(set(asked)) == QUESTIONS  # every question answered exactly once over both runs
    predictions = pq.read_table(out / "eval" / "teacher" / "predictions.parquet")
    assert sorted(predictions.column("question_id").to_pylist()) == sorted(asked)
    eval_ids = pq.read_table(out / "questions" / "eval.parquet").column("question_id").to_pylist()
    assert set(asked) == set(eval_ids)
    assert json.loads((out / "timings.json").read_text())["eval"] > timings["eval"]  # summed over both runs
