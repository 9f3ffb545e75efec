"""``scotd eval DIR --task ...``: a finished experiment answers a new held-out set without redoing anything else.

Real stack: the tiny teacher in vLLM's CPU engine on the session's Ray head, CommonsenseQA and OpenBookQA files from
../shared/data. The experiment evaluates the teacher only (no students), which keeps it to a minute or two."""

import json

import pyarrow.parquet as pq
import pytest

from scotd.cli import main
from scotd.schema import ANSWER_SCHEMA
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_an_added_task_is_answered_alone_and_reported_as_its_own(ray_cluster, shared_data, tmp_path, capsys):
    out = tmp_path / "exp"
    csqa = shared_data / "commonsenseqa"
    assert main(["run", str(REPO / "configs" / "tiny.yaml"), "--stages", "tasks,eval,report", f"output.dir={out}",
                 f"tasks.0.train={csqa / 'train_rand_split.jsonl'}", f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}",
                 "tasks.0.max_eval=16", "students=[]", "eval.untrained=false", "eval.judge_pairs=[]"]) == 0
    before = pq.read_table(out / "eval" / "teacher" / "predictions.parquet").to_pylist()
    assert len(before) == 16
    # a folder from before answers were kept in files: its predictions stand in for them
    for path in (out / "eval" / "teacher" / "answers").glob("*.parquet"):
        path.unlink()
    capsys.readouterr()

    obqa = shared_data / "openbookqa" / "dev.jsonl"
    assert main(["eval", str(out), "--task", f"name=obqa,format=openbookqa,eval={obqa},max_eval=6,num_exemplars=1"]) == 0
    printed, log = capsys.readouterr()  # the job's log lines go to stderr (scotd.console)
    assert "eval teacher: 16 questions answered by an earlier run, 6 to ask" in log
    after = {r["question_id"]: r for r in pq.read_table(out / "eval" / "teacher" / "predictions.parquet").to_pylist()}
    assert len(after) == 22 and sum(r["task"] == "obqa" for r in after.values()) == 6
    assert all(after[r["question_id"]]["text"] == r["text"] for r in before)  # the earlier answers, as they were
    asked = pq.read_table(out / "eval" / "teacher" / "answers", schema=ANSWER_SCHEMA).column("question_id").to_pylist()
    assert len(asked) == len(set(asked)) == 22
    report = json.loads((out / "report.json").read_text())
    teacher = next(r for r in report["rows"] if r["run"] == "teacher")
    assert set(teacher["by_task"]) == {"csqa", "obqa"} and teacher["total"] == 22
    assert "obqa" in printed  # the report printed covers the new task
    saved = (out / "config.yaml").read_text()
    assert "name: obqa" in saved  # the folder's config now holds the task: a rerun keeps it

    assert main(["report", str(out)]) == 0  # the same again: nothing new to ask
    assert main(["run", str(out / "config.yaml"), "--stages", "tasks,eval", f"output.dir={out}"]) == 0
    assert "eval teacher: already done, skipping" in capsys.readouterr().err
    assert main(["eval", str(out), "--task", f"name=obqa,format=openbookqa,eval={obqa}"]) == 2  # name taken
