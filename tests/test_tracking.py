"""Experiment tracking (issue 21, item 1) with the real libraries, in-process: the job's run and a student's run as
the pipeline and a rank-0 training worker make them. The whole job's MLflow experiment is checked on the tiny job
(tests/test_pipeline.py); a W&B server cannot be reached here, so W&B is checked in its offline mode."""

import pytest

from scotd.config import load_config
from scotd.tracking import ALLOW_FILE_STORE, Tracker, flat_params, numbers, student_logger
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"


def test_flat_params_and_numbers():
    cfg = load_config(DEMO)
    params = flat_params(cfg)
    assert params["teacher.num_samples"] == str(cfg.teacher.num_samples) and params["students.1.name"] == "label-only"
    assert numbers({"a": 1, "b": {"c": 2.5}, "s": "x", "flag": True}, "t") == {"t.a": 1.0, "t.b.c": 2.5}


def test_mlflow_job_run_and_a_nested_student_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv(ALLOW_FILE_STORE, "true")
    tracker = Tracker(load_config(DEMO), tmp_path)
    tracker.start(("tasks", "teacher"))
    tracker.log_metrics({"teacher.sample_accuracy": 0.9})
    logger = student_logger(tracker.for_student(), "scotd", rank=0, settings={"epochs": 2, "lora": None})
    for step, loss in enumerate((2.0, 1.5, 1.0), start=1):
        logger.log_metrics({"loss": loss}, step=step)
    logger.end_run()
    assert student_logger(tracker.for_student(), "scotd", rank=1) is None  # only rank 0 logs
    tracker.end(failed=False)
    # Read back from a copy of the files alone, as output.dir at a URI keeps them (no empty folders)
    copy = tmp_path / "copy" / "mlruns"
    for path in (tmp_path / "mlruns").rglob("*"):
        if path.is_file():
            (copy / path.relative_to(tmp_path / "mlruns")).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(tmp_path / "mlruns")).write_bytes(path.read_bytes())
    client = MlflowClient(copy.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    job = next(r for r in runs if r.info.run_id == tracker.run_id)
    assert job.info.status == "FINISHED" and job.data.metrics == {"teacher.sample_accuracy": 0.9}
    assert job.data.params["eval.batch_size"] == "50"
    assert client.get_metric_history(job.info.run_id, "teacher.sample_accuracy")[0].value == 0.9
    student = next(r for r in runs if r.info.run_id != tracker.run_id)
    assert student.data.tags["mlflow.parentRunId"] == tracker.run_id and student.data.tags["scotd.student"] == "scotd"
    assert student.data.params == {"epochs": "2", "lora": "None"}
    assert [m.value for m in client.get_metric_history(student.info.run_id, "loss")] == [2.0, 1.5, 1.0]


def test_tracking_off_logs_nothing(tmp_path):
    tracker = Tracker(load_config(DEMO, ["tracking.backend=none"]), tmp_path)
    tracker.start(("tasks",))
    tracker.log_metrics({"x": 1.0})
    tracker.end(failed=False)
    assert tracker.for_student() is None and not (tmp_path / "mlruns").exists()


@pytest.mark.filterwarnings("ignore")
def test_wandb_offline_job_run_and_student_run_in_its_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # what the student's logger sets for Ray's helper, undone after
    tracker = Tracker(load_config(DEMO, ["tracking.backend=wandb", "tracking.project=scotd-test"]), tmp_path)
    tracker.start(("tasks",))
    tracker.log_metrics({"corpus.kept": 12})
    run = tracker.wandb_run
    assert run.settings.mode == "offline" and run.project == "scotd-test"
    assert run.summary["corpus.kept"] == 12
    assert run.config["teacher.num_samples"] == str(load_config(DEMO).teacher.num_samples)  # 1 where sized for AVX2
    logger = student_logger(tracker.for_student(), "scotd", rank=0)
    logger.log_metrics({"loss": 1.5}, step=1)
    logger.log_metrics({"loss": 1.2}, step=2)
    assert logger.run.group == tracker.run_id and logger.run.name == "student scotd"
    assert logger.run.summary["loss"] == 1.5  # a step is committed once the next begins
    logger.end_run()
    tracker.end(failed=False)
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
