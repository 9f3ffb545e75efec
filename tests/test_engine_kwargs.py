"""Issue 21, item 5: any vLLM setting through ``teacher.engine_kwargs``, checked at config load against vLLM's
EngineArgs, handed to the teacher's and judge's engines (not to a student's evaluation engine), and counted in what
the teacher's samples were built from."""

import dataclasses
import os

import pytest

from scotd import provenance
from scotd.config import ConfigError, load_config
from scotd.inference import engine_spec
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"


def test_known_vllm_settings_load_and_reach_the_engines_that_take_them():
    cfg = load_config(DEMO, ["teacher.engine_kwargs={kv_cache_dtype: auto, enforce_eager: true}"])
    assert cfg.teacher.engine_kwargs == {"kv_cache_dtype": "auto", "enforce_eager": True}
    assert engine_spec(cfg.engine("teacher"), "m").engine_kwargs == cfg.teacher.engine_kwargs
    assert engine_spec(cfg.engine("judge"), "m").engine_kwargs == cfg.teacher.engine_kwargs
    assert cfg.engine("student_eval").engine_kwargs == {}  # a small student's engine takes none of them
    assert load_config(DEMO).teacher.engine_kwargs == {}


@pytest.mark.parametrize("override, message", [
    ("teacher.engine_kwargs={kv_cach_dtype: fp8}",
     r"teacher\.engine_kwargs\.kv_cach_dtype: not a vLLM engine setting \(did you mean kv_cache_dtype\?\)"),
    ("teacher.engine_kwargs={max_model_len: 4096}",
     r"teacher\.engine_kwargs\.max_model_len: set from the engine section's own key \(teacher\.max_model_len"),
    ("teacher.engine_kwargs=[enforce_eager]", r"teacher\.engine_kwargs: expected a mapping of names to values"),
])
def test_a_wrong_engine_setting_fails_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


def test_build_llm_passes_them_to_vllm_last(monkeypatch):
    """What ``vllm.LLM`` receives: scotd's settings, then the user's (which win over scotd's CPU defaults)."""
    import vllm

    from scotd.inference.spec import EngineSpec, build_llm, cpu_engine_env

    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    spec = EngineSpec(model="m", engine_kwargs={"enforce_eager": False, "kv_cache_dtype": "auto"})
    for key, value in cpu_engine_env(spec).items():  # build_llm sets these defaults: undone after the test
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.setattr(vllm, "LLM", Recorder)
    monkeypatch.setattr("scotd.inference.spec._use_bound_cores", lambda bind: None)
    monkeypatch.setattr("scotd.inference.spec.normal_priority", lambda: None)
    build_llm(spec)
    assert seen["model"] == "m" and seen["kv_cache_dtype"] == "auto" and seen["enforce_eager"] is False


def test_they_count_in_what_the_teacher_samples_were_built_from():
    cfg = load_config(DEMO)
    quantized = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, engine_kwargs={"quantization": "fp8"}))
    assert "teacher.engine_kwargs" not in provenance.units(cfg)["teacher"].values  # as records made before the key
    changed = provenance.differences(provenance.units(cfg)["teacher"].values, provenance.units(quantized)["teacher"].values)
    assert changed == [("teacher.engine_kwargs", "(absent)", {"quantization": "fp8"})]
    assert provenance.units(quantized)["eval teacher"].values["teacher.engine_kwargs"] == {"quantization": "fp8"}


def test_a_student_is_evaluated_inside_its_chat_template_only_if_it_trained_in_one():
    cfg = load_config(DEMO, ["students.0.chat_template=true", "teacher.chat_template=true"])
    chat, plain = cfg.students
    assert cfg.engine("student_eval", chat).chat_template is True
    assert cfg.engine("student_eval", plain).chat_template is False
    assert cfg.engine("student_eval").chat_template is False  # an untrained base model: the plain prompt
    assert cfg.engine("teacher_eval").chat_template is True
