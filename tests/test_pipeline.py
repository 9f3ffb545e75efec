"""The tiny preset end to end on the real stack, submitted as a Ray job to a real head: vLLM CPU engine in Ray
Data, Ray Train + DeepSpeed ZeRO, Parquet hand-offs. One run (module fixture) is checked stage by stage."""

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.parquet as pq
import pytest

from scotd.config import load_config
from scotd.schema import CORPUS_SCHEMA, PREDICTION_SCHEMA, QUESTION_SCHEMA, SAMPLE_SCHEMA
from tests.conftest import RAY, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, shared_data, tmp_path_factory):
    """Submit the tiny preset with `ray job submit` to the session's Ray head, as a user would, watching the scotd
    sampling metrics on the head's Prometheus endpoint while it runs. ``output.dir`` is a file:// URI, so every
    artifact goes through the storage mirror (scotd/storage.py) and Ray Train's checkpoints through pyarrow."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path_factory.mktemp("tiny")
    cache = tmp_path_factory.mktemp("cache")
    csqa = shared_data / "commonsenseqa"
    overrides = [f"output.dir=file://{out}", f"output.cache_dir={cache}",
                 f"tasks.0.train={csqa / 'train_rand_split.jsonl'}",
                 f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}"]
    job_id = f"scotd-tiny-{uuid.uuid4().hex[:8]}"
    # The session's Ray head counts every teacher run of the test session: this job's share is what it adds.
    before = {name: scrape_counter(ray_cluster.metrics_url, name, run="teacher")
              for name in ("scotd_rationales", "scotd_engine_busy_seconds")}
    subprocess.run([RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--submission-id", job_id,
                    "--no-wait", "--", sys.executable, str(REPO / "jobs" / "distill.py"),
                    str(REPO / "configs" / "tiny.yaml"), *overrides], check=True, capture_output=True, cwd=REPO)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline, seen = time.monotonic() + 1500, {"scotd_rationales": 0.0, "scotd_engine_busy_seconds": 0.0}
    while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, "tiny job did not finish in 25 minutes"
        for name in seen:
            seen[name] = max(seen[name], scrape_counter(ray_cluster.metrics_url, name, run="teacher") - before[name])
        time.sleep(3)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-4000:]
    return load_config(out / "config.yaml"), out, logs, seen


def scrape_counter(url: str, name: str, **labels) -> float:
    """Sum of a Prometheus counter's samples whose labels include ``labels`` (0 when absent)."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"ray_{name}") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_job_succeeded_printed_the_report_and_reported_metrics(tiny_run):
    cfg, out, logs, seen = tiny_run
    assert "| scotd | scotd | tiny:student |" in logs and f"artifacts: file://{out} (local copy: " in logs
    # Ray Train wrote the students' checkpoints to the URI itself
    assert list((out / "ray_train").glob("scotd-*/checkpoint_*/scotd_student.json"))
    assert 0 < seen["scotd_rationales"] <= cfg.tasks[0].max_train * cfg.teacher.num_samples
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert 0 < seen["scotd_engine_busy_seconds"] <= summary["engine_busy_s"] + 0.01


def test_job_output_is_scotd_lines_without_tracebacks_or_engine_chatter(tiny_run):
    """The driver's output of a run that succeeded: stages, progress (teacher and students), report; the engines'
    and training workers' own lines stay in Ray's log folder."""
    _, _, logs, _ = tiny_run
    assert "Traceback" not in logs
    for stage in ("tasks", "teacher", "corpus", "students", "eval", "report"):
        assert f"=== stage {stage} ===" in logs
    assert "[teacher] 48/48 questions" in logs
    assert re.search(r"\[students\] scotd: epoch 4/4, step \d+/\d+, loss [\d.]+; label-only: epoch 4/4", logs), logs
    for chatter in ("PlacementGroupCleaner", "Initializing a V1 LLM engine", "(MapWorker(", "logging_progress",
                    "issue_detector_manager", "Progress bars disabled"):
        assert chatter not in logs, chatter


def test_questions_stage(tiny_run):
    cfg, out, _, _ = tiny_run
    train = pq.read_table(out / "questions" / "train.parquet")
    assert train.schema.equals(QUESTION_SCHEMA) and train.num_rows == cfg.tasks[0].max_train
    assert pq.read_table(out / "questions" / "eval.parquet").num_rows == cfg.tasks[0].max_eval


def test_teacher_samples_every_question_n_times(tiny_run):
    cfg, out, _, _ = tiny_run
    samples = pq.read_table(out / "teacher" / "samples")
    assert samples.schema.equals(SAMPLE_SCHEMA)
    keys = list(zip(samples["question_id"].to_pylist(), samples["sample_index"].to_pylist()))
    assert len(keys) == len(set(keys)) == cfg.tasks[0].max_train * cfg.teacher.num_samples
    rows = samples.to_pylist()
    assert all(r["num_tokens"] > 0 and r["logprob_sum"] is not None and r["logprob_sum"] < 0 for r in rows)
    assert all(abs(r["logprob_mean"] - r["logprob_sum"] / r["num_tokens"]) < 1e-9 for r in rows)
    assert any(r["parsed_index"] is not None for r in rows)  # the tiny teacher learned the answer format
    for r in rows:  # text, parse and correctness agree
        assert (r["parse_error"] is None) == (r["parsed_index"] is not None)
        assert r["correct"] == (r["parsed_index"] == r["gold_index"])
    # sampled at T=1 with per-question seeds: the samples of a question differ
    by_q = {}
    for r in rows:
        by_q.setdefault(r["question_id"], set()).add(r["text"])
    assert sum(len(texts) > 1 for texts in by_q.values()) > len(by_q) // 2
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert summary["samples"] == len(rows) and summary["generated_tokens_per_s"] > 0
    # The engines' own account: one engine per replica, stepping for part of the time its calls were open.
    assert summary["engines"] == cfg.teacher.num_replicas
    assert 0 < summary["engine_busy_share"] <= 1.001 and summary["engine_steps"] > 0
    assert summary["sequences_per_step"] >= 1


def test_corpus_keeps_only_correct_rationales(tiny_run):
    _, out, _, _ = tiny_run
    corpus = pq.read_table(out / "corpus" / "corpus.parquet")
    assert corpus.schema.equals(CORPUS_SCHEMA) and corpus.num_rows > 0
    samples = {(r["question_id"], r["sample_index"]): r for r in pq.read_table(out / "teacher" / "samples").to_pylist()}
    for r in corpus.to_pylist():
        source = samples[(r["question_id"], r["sample_index"])]
        assert source["correct"] and r["label_index"] == source["gold_index"] and r["rationale"] == source["rationale"]


def test_corpus_carries_what_the_students_train_on_and_loads_as_a_dataset(tiny_run):
    """Issue 21, item 2: ``prompt`` / ``completion`` are exactly the student's training texts, and the Hugging Face
    ``datasets`` library (what TRL's SFT trainer takes) reads the file as is; the folder has its dataset card."""
    from datasets import load_dataset

    from scotd.student.data import training_texts

    _, out, _, _ = tiny_run
    rows = pq.read_table(out / "corpus" / "corpus.parquet").to_pylist()
    texts = training_texts(rows, "scotd")
    for r in rows:
        prompt, targets = texts[r["question_id"]]
        assert r["prompt"] == prompt and r["completion"] in targets and r["completion"].startswith(" ")
        assert r["completion"].endswith(f"So the answer is: ({r['label']})") and r["rationale"] in r["completion"]
    loaded = load_dataset("parquet", data_files=str(out / "corpus" / "corpus.parquet"), split="train")
    assert loaded.num_rows == len(rows) and {"prompt", "completion"} <= set(loaded.column_names)
    assert loaded[0]["prompt"] == rows[0]["prompt"] and loaded[0]["completion"] == rows[0]["completion"]
    card = (out / "corpus" / "README.md").read_text()
    assert card.startswith("---\n") and f"{len(rows)} rationales of" in card and "load_dataset(" in card


@pytest.mark.parametrize("student", ["scotd", "label-only"])
def test_student_model_card_has_its_settings_evaluation_and_licenses(tiny_run, student):
    cfg, out, _, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    card = (out / "students" / student / "model" / "README.md").read_text()
    row = next(r for r in report["rows"] if r["run"] == student)
    assert card.startswith("---\n") and "library_name: \"transformers\"" in card
    assert f"| {student} | {100 * row['accuracy']:.1f} % |" in card  # the report's numbers, after the report stage
    assert f"{row['correct']} / {row['total']}" in card and "## Licenses" in card and "from vllm import LLM" in card
    s = next(x for x in cfg.students if x.name == student)
    assert f"| epochs | {s.epochs} " in card and f"| DeepSpeed ZeRO stage | {s.zero_stage} " in card


def test_the_job_leaves_an_mlflow_experiment_the_client_reads(tiny_run, monkeypatch):
    """Issue 21, item 1: the embedded MLflow file store in the experiment folder holds the job's run (the resolved
    config as parameters, the teacher's and corpus figures, every evaluation run with its interval) and a nested run
    per student with its per-step curves, logged by its rank-0 worker through Ray Train's MLflow integration."""
    from mlflow.tracking import MlflowClient

    from scotd.tracking import ALLOW_FILE_STORE

    monkeypatch.setenv(ALLOW_FILE_STORE, "true")
    cfg, out, _, _ = tiny_run
    client = MlflowClient((out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    jobs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(jobs) == 1 and jobs[0].info.status == "FINISHED"
    job = jobs[0]
    assert job.data.params["teacher.num_samples"] == "4" and job.data.params["students.0.name"] == "scotd"
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert job.data.metrics["teacher.sample_accuracy"] == pytest.approx(summary["sample_accuracy"])
    assert job.data.metrics["corpus.kept"] > 0 and job.data.metrics["stage_seconds.students"] > 0
    report = json.loads((out / "report.json").read_text())
    for row in report["rows"]:
        assert job.data.metrics[f"eval.{row['dir']}.accuracy"] == pytest.approx(row["accuracy"])
        assert job.data.metrics[f"eval.{row['dir']}.ci95_high"] == pytest.approx(row["ci95"][1])
    students = {r.data.tags["scotd.student"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == job.info.run_id}
    assert set(students) == {"scotd", "label-only"}
    for name, run in students.items():
        history = json.loads((out / "students" / name / "model" / "scotd_student.json").read_text())["history"]
        steps = sum(h["micro_batches"] for h in history)
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert len(losses) == steps and len(client.get_metric_history(run.info.run_id, "learning_rate")) == steps
        assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "tokens_per_s"))
        epochs = client.get_metric_history(run.info.run_id, "epoch_loss")
        assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == pytest.approx([h["loss"] for h in history])


@pytest.mark.parametrize("student", ["scotd", "label-only"])
def test_students_learned_and_export_loads(tiny_run, student):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out, _, _ = tiny_run
    history = [json.loads(line) for line in (out / "students" / student / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    folder = out / "students" / student / "model"
    meta = json.loads((folder / "scotd_student.json").read_text())
    assert meta["prompt_format"]["input"].endswith("\nA:") and meta["epochs_done"] == 4
    model = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(out / "models" / "tiny-student")
    base_params = dict(base.named_parameters())
    for name, param in model.named_parameters():
        assert not torch.equal(param.float(), base_params[name].float()), f"{name} did not change"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Q: Where?\nAnswer Choices:\n(a) x\n(b) y\nA:", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]


def test_report_equals_recount_of_predictions(tiny_run):
    cfg, out, _, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    assert [r["run"] for r in report["rows"]] == ["teacher", "untrained:tiny:student", "untrained:tiny:student 3-shot",
                                                  "scotd", "label-only"]
    for row in report["rows"]:
        preds = pq.read_table(out / row["predictions"])
        assert preds.schema.equals(PREDICTION_SCHEMA) and preds.num_rows == cfg.tasks[0].max_eval
        assert row["correct"] == sum(preds["correct"].to_pylist())
        assert row["parse_failures"] == sum(e is not None for e in preds["parse_error"].to_pylist())
        assert f"| {row['run']} |" in (out / "report.md").read_text()
    assert set(report["stage_seconds"]) == {"tasks", "teacher", "corpus", "students", "eval", "report"}


def test_judge_compared_the_rationales_of_both_runs(tiny_run):
    from scotd.runs import run_dir_name
    from scotd.judge import blind_pairs, make_pairs, parse_verdict
    from scotd.tasks import Question

    cfg, out, _, _ = tiny_run
    a, b = "untrained:tiny:student", "untrained:tiny:student 3-shot"
    folder = out / "judge" / "untrained_tiny_student__vs__untrained_tiny_student_3-shot"
    summary = json.loads((folder / "summary.json").read_text())
    pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    verdicts = pq.read_table(folder / "verdicts.parquet").to_pylist()
    assert summary["pairs"] == len(pairs) == len(verdicts) > 0
    assert [v["question_id"] for v in verdicts] == [p["question_id"] for p in pairs]
    # each verdict is the parse of the judge's text, mapped to a run through its pair's key; the summary recounts them
    for v, p in zip(verdicts, pairs):
        assert v["verdict"] == parse_verdict(v["text"])
        assert v["winner"] == (p["key"][v["verdict"]] if v["verdict"] in ("1", "2") else v["verdict"])
    winners = [v["winner"] for v in verdicts]
    assert (summary["wins_a"], summary["wins_b"], summary["ties"], summary["unparsed"]) == (
        winners.count(a), winners.count(b), winners.count("tie"), winners.count(None))
    # the pairs are exactly those rebuilt from the two runs' saved predictions
    questions = {r["question_id"]: Question(r["question_id"], r["task"], r["question"], tuple(r["choices"]),
                                            r["answer_index"])
                 for r in pq.read_table(out / "questions" / "eval.parquet").to_pylist()}
    preds = {run: pq.read_table(out / "eval" / run_dir_name(run) / "predictions.parquet").to_pylist() for run in (a, b)}
    assert make_pairs(questions, a, b, preds[a], preds[b], cfg.teacher.seed) == pairs
    assert all(v["text"] is not None for v in verdicts)  # the engine answered every pair (null: no output for it)
    # the blind export for people and its key are the same pairs
    annotate, key = blind_pairs(pairs, questions)
    for name, rows in (("annotate.jsonl", annotate), ("key.jsonl", key)):
        assert [json.loads(line) for line in (folder / name).read_text().splitlines()] == rows
    report = json.loads((out / "report.json").read_text())
    assert report["judge"] == [{**summary, "verdicts": f"judge/{folder.name}/verdicts.parquet"}]
    assert "## Rationale quality (pairwise judge)" in (out / "report.md").read_text()


def test_resolved_config_saved_and_rerun_on_a_fresh_machine_skips_finished_work(tiny_run):
    """A rerun whose local copy is gone (another machine) pulls the URI's artifacts and redoes nothing."""
    import shutil
    from pathlib import Path

    from scotd import pipeline
    from scotd.storage import local_copy

    cfg, out, _, _ = tiny_run
    assert load_config(out / "config.yaml") == cfg
    shutil.rmtree(local_copy(cfg.output.dir, Path(cfg.output.cache_dir)))
    watched = [*(out / "teacher" / "samples").glob("*.parquet"), out / "students" / "scotd" / "model" / "model.safetensors"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    exp = pipeline.run(cfg, ("teacher", "students"))
    assert (exp.dir / "students" / "scotd" / "model" / "model.safetensors").exists()  # pulled back
    summary = json.loads((out / "teacher" / "sampling_summary.json").read_text())
    assert summary["questions_sampled_this_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_rerun_with_changed_settings_is_refused_before_any_work(tiny_run, tmp_path, capsys):
    """Issue 19, item 4, on the real job's folder: every stage recorded what it was built from."""
    import shutil

    from scotd.cli import main

    cfg, out, _, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    recorded = json.loads((copy / "provenance.json").read_text())
    assert {"questions", "teacher", "student scotd", "student label-only", "eval teacher", "eval scotd"} <= set(recorded)
    args = ["run", str(REPO / "configs" / "tiny.yaml"), f"output.dir={copy}", f"output.cache_dir={cfg.output.cache_dir}",
            f"tasks.0.train={cfg.tasks[0].train}", f"tasks.0.eval={cfg.tasks[0].eval}"]
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    assert main([*args, "teacher.num_samples=8"]) == 2
    err = capsys.readouterr().err
    assert "teacher (teacher/samples): teacher.num_samples was 4, now 8" in err and "--restart teacher" in err, err
    assert main([*args, "tasks.0.max_train=16"]) == 2
    err = capsys.readouterr().err
    assert "student scotd (students/scotd): tasks.0.max_train was 48, now 16" in err and "--restart students" in err
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == before  # nothing touched


def test_import_scotd_is_light():
    code = "import sys, scotd, scotd.config, scotd.pipeline, scotd.tasks, scotd.prompts; " \
           "print(sorted(m for m in ('vllm', 'deepspeed', 'ray.train', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
