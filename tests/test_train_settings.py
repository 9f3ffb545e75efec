"""The student stage's settings as pure functions (the DeepSpeed dict, the LR schedule) and what ``fit_student``
hands Ray Train before training starts."""

import os

import pytest

from scotd.config import StudentConfig
from scotd.student.settings import deepspeed_config, warmup_linear
from scotd.student.train import START_TIMEOUT_ENV, StudentJob, fit_student


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("use_gpu", [False, True])
def test_deepspeed_dict_follows_the_student_config(stage, use_gpu):
    cfg = StudentConfig(name="s", batch_size=32, micro_batch_size=4, zero_stage=stage, use_gpu=use_gpu,
                        grad_clip=0.5)
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 32 == cfg.batch_size
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) == (stage == 3)
    assert ds["bf16"]["enabled"] is use_gpu and ds["gradient_clipping"] == 0.5


def test_warmup_then_linear_decay_to_zero():
    factor = warmup_linear(warmup_steps=3, total_steps=10)
    values = [factor(step) for step in range(11)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[3:] == sorted(values[3:], reverse=True) and values[10] == 0.0
    # fewer steps than the warm-up: the peak is still reached before the end
    short = warmup_linear(warmup_steps=500, total_steps=4)
    assert max(short(step) for step in range(4)) == pytest.approx(1.0)


class Stop(Exception):
    pass


@pytest.mark.parametrize("user_value, expected", [(None, "1800"), ("90", "90")])
def test_fit_student_lets_queued_students_wait_without_tracebacks(monkeypatch, tmp_path, user_value, expected):
    """Ray Train passes RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S from the process calling fit() to its controller.
    The trainer here is a stand-in that records the environment at construction and stops: a real queued student
    would have to wait past the 60 s default to show the difference, too slow for a test."""
    import ray.train.torch

    seen = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen["value"] = os.environ.get(START_TIMEOUT_ENV)
            seen["backend"] = kwargs["torch_config"].backend

        def fit(self):
            raise Stop

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", Recorder)
    monkeypatch.setenv(START_TIMEOUT_ENV, user_value or "")  # registers the variable's restore at teardown
    if user_value is None:
        monkeypatch.delenv(START_TIMEOUT_ENV)
    with pytest.raises(Stop):
        fit_student(StudentJob(StudentConfig(name="s", use_gpu=True), "model", "rows.parquet", str(tmp_path / "s"),
                               str(tmp_path / "ray_train")))
    assert seen == {"value": expected, "backend": "nccl"}


def test_progress_line_gives_position_loss_and_time_left():
    from scotd.student.train import progress_line

    assert progress_line("scotd", None) == "scotd: starting"
    position = {"epoch": 2, "epochs": 4, "first_epoch": 1, "step": 5, "steps": 10, "loss": 1.23456,
                "started": 1000.0, "time": 1150.0}
    # 15 of 40 steps in 150 s: 25 steps left at 10 s each
    assert progress_line("scotd", position) == "scotd: epoch 2/4, step 5/10, loss 1.235, ~250 s left"
    resumed = {**position, "first_epoch": 2}  # a rerun that resumed after epoch 1: 5 of its 30 steps in 150 s
    assert progress_line("s", resumed).endswith("~750 s left")
    done = {**position, "epoch": 4, "step": 10}
    assert progress_line("s", done) == "s: epoch 4/4, step 10/10, loss 1.235"


def test_progress_file_is_written_every_few_seconds_and_at_epoch_end(tmp_path, monkeypatch):
    import json

    from scotd.student import train

    clock = iter([100.0, 101.0, 106.5, 107.0])
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    progress = train.Progress(tmp_path / "progress.json", every_s=5.0)
    written = []
    for step in (1, 2, 3, 4):
        progress.update(epoch=1, epochs=1, first_epoch=1, step=step, steps=4, loss=float(step))
        written.append(json.loads((tmp_path / "progress.json").read_text())["step"])
    assert written == [1, 1, 3, 4]  # step 2 within 5 s of step 1; step 4 is the epoch's last
    assert train.Progress(tmp_path / "absent" / "progress.json").path is None  # the folder is on another node


@pytest.mark.parametrize("setting, native, use_gpu, expected", [
    (False, True, False, False), (True, False, False, True), ("auto", True, False, True),
    ("auto", False, False, False), (True, True, True, False),  # GPUs train in bf16 weights, not CPU autocast
])
def test_cpu_autocast_follows_the_setting_and_the_cpu(monkeypatch, setting, native, use_gpu, expected):
    from scotd.config import StudentConfig
    from scotd import cpu
    from scotd.student.settings import cpu_autocast

    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: native)
    assert cpu_autocast(StudentConfig(name="s", cpu_bf16=setting, use_gpu=use_gpu)) is expected
