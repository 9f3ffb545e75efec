"""The storage path on S3, against an in-process S3-compatible server (moto's ThreadedMotoServer): an experiment
mirrored to s3:// and read back on a "fresh machine", task data read from s3://, a student folder fetched by an
engine, and Ray Train's checkpoint storage and training rows at the same URI. Plain ``s3://`` URIs reach the local
server through AWS_ENDPOINT_URL, as they reach any S3-compatible store; keys come from the environment only."""

from __future__ import annotations

import json
import os

import pytest

moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] is not installed: the in-process S3 server (pip install -e '.[test]')")

BUCKET = "scotd-test"


@pytest.fixture
def s3(monkeypatch):
    """A fresh S3 server on 127.0.0.1 with one bucket; yields a pyarrow S3FileSystem on it for checks."""
    import pyarrow.fs as pafs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "scotd-test-key", "AWS_SECRET_ACCESS_KEY": "scotd-test-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                           access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                           allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    try:
        yield fs
    finally:
        server.stop()


def s3_files(fs, prefix: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(prefix) + 1:]] = f.read()
    return out


def local_files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def put(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def test_experiment_at_s3_round_trip(s3, tmp_path):
    """Data read from s3://, the tasks stage mirrored to s3://, a student folder pushed and fetched by an engine on
    another node, and a fresh machine that resumes from what the bucket holds."""
    from scotd.config import load_config
    from scotd.pipeline import run
    from scotd.storage import Mirror, fetch_folder

    rows = [{"id": f"t{i}", "question": f"Question {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(8)]
    put(s3, f"{BUCKET}/data/g.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    uri = f"s3://{BUCKET}/runs/exp"
    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: 's3://{BUCKET}/data/g.jsonl', eval: 's3://{BUCKET}/data/g.jsonl',"
        f" max_train: 4}}]\nstudents: [{{name: s}}]\noutput: {{dir: '{uri}', cache_dir: {tmp_path / 'cache1'}}}\n")
    exp = run(load_config(tmp_path / "exp.yaml"), ("tasks",))
    assert json.loads((exp.dir / "questions" / "summary.json").read_text())["g"]["train"] == 4
    remote = s3_files(s3, f"{BUCKET}/runs/exp")
    assert sorted(remote) == sorted(local_files(exp.dir)) and remote == local_files(exp.dir)
    assert "config.yaml" in remote and "questions/train.parquet" in remote

    model = exp.dir / "students" / "s" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(3 << 20))  # several multipart chunks' worth
    assert exp.engine_model(str(model)) == f"{uri}/students/s/model"
    fetched = fetch_folder(f"{uri}/students/s/model", tmp_path / "engine-node-cache")
    assert local_files(fetched) == local_files(model)

    fresh = Mirror(uri, tmp_path / "machine2")
    assert fresh.pull() == len(s3_files(s3, f"{BUCKET}/runs/exp"))
    assert local_files(tmp_path / "machine2") == local_files(exp.dir)
    assert fresh.push("questions", "config.yaml") == 0  # what was pulled is not uploaded again
    (tmp_path / "machine2" / "config.yaml").write_text("name: changed\n")
    assert fresh.push("config.yaml") == 1 and s3_files(s3, f"{BUCKET}/runs/exp")["config.yaml"] == b"name: changed\n"


def test_ray_train_checkpoints_and_training_rows_at_s3(s3, tmp_path):
    """What fit_student hands Ray Train (RunConfig.storage_path = <output.dir>/ray_train) persists and restores
    checkpoints on S3; training workers read their rows from the URI with pyarrow, as train_loop_per_worker does."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.train import Checkpoint, RunConfig

    from scotd.storage import Mirror

    uri = f"s3://{BUCKET}/runs/exp"
    storage = RunConfig(name="s", storage_path=f"{uri}/ray_train").storage_context
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "model.bin").write_bytes(os.urandom(1 << 20))
    (source / "scotd_student.json").write_text('{"epoch": 1}')
    persisted = storage.persist_current_checkpoint(Checkpoint.from_directory(str(source)), "checkpoint_000000")
    assert set(s3_files(s3, f"{BUCKET}/runs/exp/ray_train/s/checkpoint_000000")) == {"model.bin",
                                                                                      "scotd_student.json"}
    restored = tmp_path / "restored"
    persisted.to_directory(str(restored))
    assert local_files(restored) == local_files(source)

    local = tmp_path / "driver"
    (local / "corpus").mkdir(parents=True)
    pq.write_table(pa.table({"question_id": ["q1", "q2"], "rationale": ["r1", "r2"]}), local / "corpus" / "c.parquet")
    mirror = Mirror(uri, local)
    assert mirror.push("corpus") == 1
    assert pq.read_table(mirror.remote("corpus/c.parquet")).to_pylist() == [
        {"question_id": "q1", "rationale": "r1"}, {"question_id": "q2", "rationale": "r2"}]
