"""Experiment folders at a URI: the local copy and the mirror, on pyarrow's local filesystem through file:// URIs
(the same code path as s3:// and gs://, which need a cloud account)."""

import pytest

from scotd.storage import Mirror, is_uri, local_copy


def test_local_paths_are_used_as_they_are(tmp_path):
    assert not is_uri(str(tmp_path)) and local_copy(str(tmp_path / "exp"), tmp_path / "cache") == tmp_path / "exp"
    mirror = Mirror(str(tmp_path / "exp"), tmp_path / "exp")
    assert mirror.uri is None and mirror.pull() == 0 and mirror.push("anything") == 0
    assert mirror.remote("corpus/corpus.parquet") == str(tmp_path / "exp" / "corpus" / "corpus.parquet")


def test_uri_gets_a_stable_local_copy_per_location(tmp_path):
    a = local_copy("s3://bucket/runs/exp1", tmp_path)
    assert a == local_copy("s3://bucket/runs/exp1/", tmp_path) and a.parent == tmp_path / "experiments"
    assert a.name.startswith("exp1-") and a != local_copy("gs://bucket/runs/exp1", tmp_path)


def test_push_then_pull_on_a_fresh_machine(tmp_path):
    uri = f"file://{tmp_path / 'remote' / 'exp'}"
    first = tmp_path / "machine1"
    (first / "teacher" / "samples").mkdir(parents=True)
    (first / "teacher" / "samples" / "block-1.parquet").write_bytes(b"x" * 1000)
    (first / "config.yaml").write_text("name: e\n")
    mirror = Mirror(uri, first)
    assert mirror.remote("ray_train") == f"{uri}/ray_train"
    assert mirror.push("teacher", "config.yaml", "missing") == 2
    assert (tmp_path / "remote" / "exp" / "teacher" / "samples" / "block-1.parquet").read_bytes() == b"x" * 1000
    assert mirror.push("teacher", "config.yaml") == 0  # unchanged files are not copied again
    (first / "config.yaml").write_text("name: changed\n")
    assert mirror.push("config.yaml") == 1

    (tmp_path / "remote" / "exp" / "ray_train").mkdir()
    (tmp_path / "remote" / "exp" / "ray_train" / "ckpt").write_text("Ray Train reads this itself")
    second = tmp_path / "machine2"
    again = Mirror(uri, second)
    assert again.pull() == 2 and not (second / "ray_train").exists()
    assert (second / "config.yaml").read_text() == "name: changed\n"
    assert again.push("teacher", "config.yaml") == 0  # what was pulled is not pushed back
    assert again.pull() == 0


def test_unknown_scheme_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"output\.dir: 'nosuch://x/y': not a filesystem pyarrow can open"):
        Mirror("nosuch://x/y", tmp_path)


def test_pipeline_writes_at_the_uri(tmp_path):
    """The tasks stage of a file:// experiment lands at the URI; a second machine (another cache) resumes from it."""
    import json

    from scotd.config import load_config
    from scotd.pipeline import run

    rows = [{"id": f"t{i}", "question": f"Question {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(8)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    remote = tmp_path / "bucket" / "exp"
    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: {data}, eval: {data}, max_train: 4}}]\nstudents: [{{name: s}}]\n"
        f"output: {{dir: 'file://{remote}', cache_dir: {tmp_path / 'cache1'}}}\n")
    exp = run(load_config(tmp_path / "exp.yaml"), ("tasks",))
    assert exp.dir.is_relative_to(tmp_path / "cache1") and (exp.dir / "questions" / "train.parquet").exists()
    for name in ("questions/train.parquet", "questions/eval.parquet", "config.yaml", "timings.json"):
        assert (remote / name).read_bytes() == (exp.dir / name).read_bytes(), name
    # a fresh machine: the mirror pulls what the URI holds before any stage runs
    second = Mirror(f"file://{remote}", tmp_path / "cache2" / "copy")
    assert second.pull() == 6  # questions/{train,dev,eval}.parquet, questions/summary.json, config, timings
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "cache2" / "copy") == files(remote) == files(exp.dir)
