"""The job's pre-flight line (scotd.preflight): CPU class, dtypes, expected time from measured per-class rates."""

import json

import pytest

from scotd.config import load_config
from scotd.preflight import answer_tokens, class_rates, cpu_class, expected_seconds, model_params, summary_line
from scotd.prompts import load_exemplars, render_answer
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"


def sums() -> list[str]:
    return [render_answer(e.rationale, e.question.gold) for e in load_exemplars("sum", "sum")]


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "amx"),
    ("fpu avx2 avx512f avx512bw avx512_bf16", "avx512_bf16"),
    ("fpu avx2 avx512f avx512bw", "avx512"),
    ("fpu sse avx avx2 fma", "avx2"),
    ("fpu sse sse2", "other"),
])
def test_cpu_class_from_the_flags(flags, expected):
    assert cpu_class(f"processor : 0\nflags : {flags}\n") == expected


def test_answer_tokens_count_digits_one_each():
    assert answer_tokens("12 + 34 = 46.") == 6 + 7 / 4
    assert answer_tokens("abcdefgh") == 2


def test_model_params_of_offline_tiny_and_local_models(tmp_path):
    assert model_params("offline:qwen2.5-coder-1.5b-instruct", tmp_path) == 1.54e9
    assert model_params("tiny:teacher", tmp_path) == 1e6
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2,
                                                            "vocab_size": 100}))
    assert model_params(str(tmp_path / "m"), tmp_path) == 12 * 2 * 64 ** 2 + 100 * 64
    assert model_params("some-org/some-model", tmp_path) is None  # a hub id: not known before the run


def test_expected_time_grows_with_the_work_and_is_unknown_without_sizes(tmp_path):
    cfg = load_config(DEMO, [f"output.cache_dir={tmp_path}"], check_training=False)
    base = expected_seconds(cfg, class_rates()["amx"], sums())
    more = expected_seconds(load_config(DEMO, [f"output.cache_dir={tmp_path}", "teacher.num_samples=8"],
                                        check_training=False), class_rates()["amx"], sums())
    assert 5 * 60 < base < more
    unsized = load_config(DEMO, [f"output.cache_dir={tmp_path}", "tasks.0.max_eval=null"], check_training=False)
    assert expected_seconds(unsized, class_rates()["amx"], sums()) is None


def test_the_line_names_class_dtypes_and_expected_time(tmp_path, monkeypatch):
    import scotd.cpu as cpu

    cfg = load_config(DEMO, [f"output.cache_dir={tmp_path}"], check_training=False)
    amx = summary_line(cfg, sums(), "amx")
    assert amx.startswith("machine: CPU AMX (native bf16); engines bfloat16, students bf16 autocast; expected ~")
    assert "for this config (rates of make demo on a 2-core AMX CPU, 2026-12-06)" in amx
    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: False)
    sized = load_config(DEMO, [f"output.cache_dir={tmp_path}"])  # the demo's sizes for a CPU without native bf16
    avx2 = summary_line(sized, sums(), "avx2")
    assert avx2.startswith("machine: CPU AVX2 without native bf16; engines float32, students float32; expected ~")
    minutes = int(avx2.split("expected ~")[1].split(" ")[0])
    # the AVX2 demo from a fresh clone took 29 min 19 s after set-up (2026-12-07); the sizes of a CPU with native
    # bf16 would take over twice that there
    assert sized.cpu_sized and 25 <= minutes <= 34
    plain = summary_line(cfg, sums(), "avx512")
    assert plain == ("machine: CPU AVX-512 without bf16; engines float32, students float32; no rates known for "
                     "this class of CPU: no expected time")
