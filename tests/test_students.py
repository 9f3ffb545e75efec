"""Student training on the real stack: Ray Train TorchTrainer + DeepSpeed ZeRO over gloo on CPU, tiny Llama students
built in-process, a corpus Parquet of real CommonsenseQA questions with hand-written rationales.

- two students (ZeRO-2 and ZeRO-3) train concurrently in one call: both learn (loss falls, every parameter tensor
  moves), their training overlaps in time, and each ends as a Hugging Face folder with its metadata;
- a training worker killed mid-run (SIGKILL) is replaced and the run continues from its last checkpoint.
"""

import json
import os
import signal
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from scotd.config import StudentConfig
from scotd.prompts import gold_key, student_prompt
from scotd.corpus import with_training_text
from scotd.schema import CORPUS_SCHEMA, to_table, write_table
from scotd.layout import STUDENT_META
from scotd.student.settings import best_key
from scotd.student.train import StudentJob, train_students
from scotd.tasks import load_questions
from scotd.tiny import ensure_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory):
    """96 real questions, two hand-written rationales each, labelled with the gold answer; and a tiny student."""
    folder = tmp_path_factory.mktemp("students")
    questions = load_questions(shared_data / "commonsenseqa" / "train_rand_split.jsonl", "commonsenseqa",
                               "csqa").questions[:96]
    rows = [{"question_id": q.id, "task": q.task, "sample_index": k, "question": q.text, "choices": list(q.choices),
             "rationale": text, "label_index": q.answer_index, "label": gold_key(q), "logprob_sum": -10.0,
             "logprob_mean": -0.8,
             "num_tokens": 12}
            for q in questions
            for k, text in enumerate((f"The question asks about {q.choices[q.answer_index]}.",
                                      f"Of the choices only {q.choices[q.answer_index]} fits."))]
    write_table(to_table([with_training_text(r) for r in rows], CORPUS_SCHEMA), folder / "corpus.parquet")
    model = ensure_tiny_model("student", folder / "tiny-student", [student_prompt(q) for q in questions] +
                              [r["rationale"] for r in rows], [])
    return folder, model


def job(folder, model, name: str, dev=None, **overrides) -> StudentJob:
    settings = dict(method="scotd", learning_rate=3e-3, batch_size=8, micro_batch_size=8, warmup_steps=2,
                    grad_clip=1.0, max_length=128)
    cfg = StudentConfig(name=name, model=str(model), **{**settings, **overrides})
    return StudentJob(cfg, str(model), rows_path=str(folder / "corpus.parquet"), out_dir=str(folder / name),
                      storage_path=str(folder / "ray_train"), meta={"base_model": "tiny"},
                      **({"dev": dev, "dev_max_new_tokens": 24} if dev else {}))


def dev_questions(shared_data, count=12):
    """Dev questions from the CommonsenseQA dev file (not in the training corpus)."""
    questions = load_questions(shared_data / "commonsenseqa" / "dev_rand_split.jsonl", "commonsenseqa",
                               "csqa").questions[:count]
    return [{"prompt": student_prompt(q), "num_choices": len(q.choices), "gold": gold_key(q)}
            for q in questions]


def test_zero2_and_zero3_students_train_in_parallel(ray_cluster, corpus, shared_data):
    folder, model = corpus
    dev = dev_questions(shared_data)
    # One question a step (96 steps an epoch): on a fast CPU, batches of 8 trained each student in ~2 s, less than
    # the two trainers' start-up skew (up to ~3 s), so two students launched together could train one after the other.
    small = dict(batch_size=1, micro_batch_size=1)
    # The ZeRO-2 student trains under bfloat16 autocast (students.cpu_bf16): it must learn like the fp32 one.
    results = train_students([job(folder, model, "zero2", zero_stage=2, epochs=3, dev=dev, cpu_bf16=True, **small),
                              job(folder, model, "zero3", zero_stage=3, epochs=3, dev=dev, **small)])
    initial = load_file(str(model / "model.safetensors"))
    spans = []
    for result, stage in zip(results, (2, 3)):
        history = result["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3]
        assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
        assert all(h["real_token_share"] > 0.6 for h in history)
        trained = load_file(os.path.join(result["model_dir"], "model.safetensors"))
        assert trained.keys() == initial.keys()
        unchanged = [k for k in initial if torch.equal(initial[k].float(), trained[k].float())]
        assert not unchanged, f"ZeRO-{stage}: parameters that did not move: {unchanged}"
        meta = json.loads(open(os.path.join(result["model_dir"], STUDENT_META)).read())
        assert meta["student"]["zero_stage"] == stage and meta["epochs_done"] == 3
        spans.append((history[0]["started_at"], history[-1]["ended_at"]))
        # the position the driver logs as progress: the last step of the last epoch
        position = json.loads(open(os.path.join(os.path.dirname(result["model_dir"]), "progress.json")).read())
        assert (position["epoch"], position["epochs"]) == (3, 3) and position["step"] == position["steps"] > 1
        assert position["loss"] == pytest.approx(history[-1]["loss"], rel=1e-6)
        # dev accuracy after every epoch; the best checkpoint is the epoch best_key ranks first, exported when it
        # is not the last one
        assert all(h["dev_questions"] == len(dev) and 0 <= h["dev_accuracy"] <= 1 for h in history), history
        selection = json.loads(open(os.path.join(os.path.dirname(result["model_dir"]), "checkpoints.json")).read())
        assert selection["last_epoch"] == 3 and selection["dev_questions"] == len(dev)
        assert selection["best_epoch"] == max(history, key=best_key)["epoch"]
        best_dir = os.path.join(os.path.dirname(result["model_dir"]), "model-best")
        assert os.path.isdir(best_dir) == (selection["best_epoch"] != 3)
        if os.path.isdir(best_dir):
            assert json.loads(open(os.path.join(best_dir, STUDENT_META)).read())["epochs_done"] == selection["best_epoch"]
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, f"the two students did not train at the same time: {spans}"


def train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if "TrainWorker" in (a.class_name or "")]


def test_killed_training_worker_resumes_from_its_checkpoint(ray_cluster, corpus):
    folder, model = corpus
    # ZeRO stage 0 (the CPU configs' stage, where one rank skips DeepSpeed's gradient all-reduce)
    spec = job(folder, model, "killed", epochs=8, micro_batch_size=4, batch_size=4, zero_stage=0)
    history_path = folder / "killed" / "history.jsonl"
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=train_students([spec])[0]), daemon=True)
    runner.start()
    deadline = time.monotonic() + 600
    # Wait for epoch 2: its line is written after its report returned, and Ray's one-slot result queue lets that
    # report in only once the controller has taken epoch 1's (persisted) checkpoint.
    while not history_path.exists() or len(history_path.read_text().splitlines()) < 2:
        assert runner.is_alive() and time.monotonic() < deadline, "training ended or stalled before epoch 2"
        time.sleep(0.1)
    pids = train_worker_pids()
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    lines_at_kill = len(history_path.read_text().splitlines())
    assert lines_at_kill < 8, "training finished before the worker was killed"
    runner.join(timeout=900)
    assert not runner.is_alive() and "result" in outcome, "training did not finish after the worker was killed"

    epochs = [json.loads(line)["epoch"] for line in history_path.read_text().splitlines()]
    after = epochs[lines_at_kill:]
    assert after, "no epoch ran after the kill"
    # A restart from scratch would begin again at epoch 1; resuming begins after the last checkpoint (>= 1).
    assert 2 <= after[0] <= lines_at_kill + 1, epochs
    assert after == list(range(after[0], 9)), epochs
    meta = json.loads(open(os.path.join(outcome["result"]["model_dir"], STUDENT_META)).read())
    assert meta["epochs_done"] == 8
    history = outcome["result"]["history"]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    initial = load_file(str(model / "model.safetensors"))
    trained = load_file(os.path.join(outcome["result"]["model_dir"], "model.safetensors"))
    assert not [k for k in initial if torch.equal(initial[k].float(), trained[k].float())]


def test_lora_and_chat_template_students_train_and_evaluate(ray_cluster, corpus, shared_data):
    """Issue 21, items 3 and 4: a LoRA student (only its adapters change; the export merges them into a folder vLLM
    loads, and keeps the adapter) and a chat-template student (trained, scored on dev and evaluated inside its
    tokenizer's chat template, recorded in scotd_student.json) train in one call and answer through the engine."""
    from dataclasses import replace

    from scotd.config import EngineConfig, LoraSettings
    from scotd.evaluate import evaluate_run
    from scotd.inference import engine_spec
    from scotd.runs import EvalRun
    from scotd.student.stage import prompt_formats

    folder, model = corpus
    dev = dev_questions(shared_data, 8)
    lora = job(folder, model, "lora", dev=dev, epochs=2, zero_stage=2,
               lora=LoraSettings(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj")))
    chat = replace(job(folder, model, "chat", dev=dev, epochs=2, zero_stage=0, chat_template=True),
                   meta={"base_model": "tiny", **prompt_formats({False}, scotd=True)})
    results = {r["name"]: r for r in train_students([lora, chat])}
    for name in ("lora", "chat"):
        history = results[name]["history"]
        assert history[-1]["loss"] < history[0]["loss"] and "dev_accuracy" in history[-1]

    exported = folder / "lora" / "model"
    assert (exported / "adapter" / "adapter_config.json").exists()
    base, merged = load_file(model / "model.safetensors"), load_file(exported / "model.safetensors")
    targets = [k for k in base if k.endswith(("q_proj.weight", "v_proj.weight"))]
    assert targets and set(merged) == set(base)
    for key, tensor in base.items():  # the adapters moved the targeted layers only
        moved = not torch.equal(merged[key].float(), tensor.float())
        assert moved == (key in targets), key
    adapter = load_file(exported / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())

    meta = json.loads((folder / "chat" / "model" / STUDENT_META).read_text())
    assert meta["chat_template"] is True and meta["student"]["chat_template"] is True
    assert meta["prompt_format"]["input"].startswith("<|user|>\nQ: {question}")
    assert meta["prompt_format"]["input"].endswith("<|assistant|>\n")
    assert meta["prompt_format"]["target"] == "<rationale> So the answer is: (a)"

    questions = load_questions(shared_data / "commonsenseqa" / "dev_rand_split.jsonl", "commonsenseqa",
                               "csqa").questions[:6]
    engine = EngineConfig(model="", max_model_len=512, cpu_kvcache_gb=1, batch_size=6)
    for name, chat_template in (("lora", False), ("chat", True)):
        spec = replace(engine_spec(engine, str(folder / name / "model")), chat_template=chat_template)
        metrics = evaluate_run(EvalRun(name, "scotd", "tiny", student=name), questions, student_prompt, spec,
                               engine, max_new_tokens=24, num_cpus=1, run_dir=folder / "eval" / name)
        assert metrics["total"] == 6 and (folder / "eval" / name / "predictions.parquet").exists()


def test_ray_train_run_name_follows_the_students_settings(tmp_path):
    """A student retrained with other settings must not resume the old run's checkpoints (Ray Train resumes by run
    name): its run is named by a digest of what its training depends on."""
    from scotd.config import load_config
    from scotd.provenance import units
    from scotd.student.stage import train_run_name
    from tests.conftest import REPO

    def name(*overrides):
        cfg = load_config(REPO / "configs" / "tiny.yaml", [f"output.dir={tmp_path / 'exp'}", *overrides])
        return train_run_name(units(cfg, tmp_path / "exp")["student scotd"])

    base = name()
    assert base.startswith("scotd-") and base == name()
    assert name("students.0.learning_rate=0.001") != base
    assert name("teacher.num_samples=2") != base  # another corpus
    assert name("students.0.cpus_per_worker=2") == base  # the same training, on other resources
    assert name("students.1.learning_rate=0.001") == base  # another student's settings
