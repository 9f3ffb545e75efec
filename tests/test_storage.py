"""Experiment folders at a URI: the local copy and the mirror, on pyarrow's local filesystem through file:// URIs
(the same code path as s3:// and gs://, which need a cloud account)."""

from dataclasses import replace

import pytest

from scotd.storage import Mirror, is_uri, local_copy, redact


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
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    listing = files(remote)
    assert second.pull() == len(listing)
    # questions/{train,dev,eval}.parquet, summary.json, where.json, config, timings, provenance.json, and the MLflow
    # store of the run (scotd.tracking)
    assert len([f for f in listing if not f.startswith("mlruns/")]) == 8
    assert any(f.startswith("mlruns/") and f.endswith("/artifacts/config.json") for f in listing)
    assert files(tmp_path / "cache2" / "copy") == listing == files(exp.dir)


def test_fetch_folder_copies_a_uri_folder_once_per_content(tmp_path):
    """What an engine on another node does with a student given as a URI: a local copy, made once, made again
    when the folder at the URI changes; a local path is used as it is."""
    from scotd.storage import fetch_folder

    remote = tmp_path / "bucket" / "exp" / "students" / "s" / "model"
    (remote / "sub").mkdir(parents=True)
    (remote / "config.json").write_text("{}")
    (remote / "sub" / "weights.bin").write_bytes(b"w" * 5000)
    uri = f"file://{remote}"
    local = fetch_folder(uri, tmp_path / "cache")
    assert local.parent == tmp_path / "cache" / "models" and local.name.startswith("model-")
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(local) == files(remote)
    (local / "config.json").write_text("marker")  # a second fetch of the same content reuses the copy
    assert fetch_folder(uri + "/", tmp_path / "cache") == local and (local / "config.json").read_text() == "marker"
    (remote / "config.json").write_text('{"retrained": true}')
    again = fetch_folder(uri, tmp_path / "cache")
    assert again != local and (again / "config.json").read_text() == '{"retrained": true}'
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")]  # no partial copy
    assert fetch_folder(str(remote), tmp_path / "cache") == remote
    with pytest.raises(FileNotFoundError, match="no files there"):
        fetch_folder(f"file://{tmp_path / 'nothing'}", tmp_path / "cache")


def _uri_experiment(tmp_path, students: str = "[{name: s}, {name: t}]", extra: str = ""):
    import json

    from scotd.config import load_config
    from scotd.experiment import Experiment
    from scotd.tasks_stage import stage_tasks

    rows = [{"id": f"t{i}", "question": f"Question {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(4)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    data, held = tmp_path / "d.jsonl", tmp_path / "e.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held.write_text("".join(json.dumps({**r, "id": f"e{i}", "question": f"Held {i}?"}) + "\n"
                            for i, r in enumerate(rows)))
    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: {data}, eval: {held}}}]\nstudents: {students}\n"
        f"eval: {{teacher: false, untrained: false{extra}}}\n"
        f"output: {{dir: 'file://{tmp_path / 'bucket' / 'exp'}', cache_dir: {tmp_path / 'cache'}}}\n")
    exp = Experiment(load_config(tmp_path / "exp.yaml"))
    stage_tasks(exp)
    return exp


def test_eval_and_judge_engines_get_the_students_uri(tmp_path, monkeypatch):
    """With output.dir at a URI, stage_eval and stage_judge hand the engines the URI of each model folder inside
    the experiment (pushed first: it was exported on the driver's node only), never the driver's local copy."""
    import scotd.evaluate
    import scotd.judge
    from scotd.stages import BY_NAME
    from scotd.schema import PREDICTION_SCHEMA, to_table, write_table

    exp = _uri_experiment(tmp_path, extra=", judge_pairs: [[s, t]]")
    for name in ("s", "t"):
        (exp.dir / "students" / name / "model").mkdir(parents=True)
        (exp.dir / "students" / name / "model" / "config.json").write_text(name)
    (exp.dir / "models" / "judge").mkdir(parents=True)
    (exp.dir / "models" / "judge" / "config.json").write_text("judge")
    monkeypatch.setattr(type(exp), "model_path", lambda self, ref: str(self.dir / "models" / "judge"))
    monkeypatch.setattr(type(exp), "prepare_model", lambda self, ref: str(self.dir / "models" / "judge"))
    seen = []

    def evaluate_run(run, questions, prompt_fn, spec, engine, *, run_dir, **kwargs):
        seen.append((run.run, spec.model, spec.cache_dir))
        write_table(to_table([], PREDICTION_SCHEMA), run_dir / "predictions.parquet")
        return {}

    def judge_runs(questions, a, b, preds_a, preds_b, spec, engine, **kwargs):
        seen.append(("judge", spec.model, spec.cache_dir))
        return {}

    monkeypatch.setattr(scotd.evaluate, "evaluate_run", evaluate_run)
    monkeypatch.setattr(scotd.judge, "judge_runs", judge_runs)
    for step in BY_NAME["eval"].steps:  # the budget sized, then stage_eval and stage_judge
        step(exp)
    remote = tmp_path / "bucket" / "exp"
    cache = str(tmp_path / "cache")
    assert seen == [("s", f"file://{remote}/students/s/model", cache), ("t", f"file://{remote}/students/t/model", cache),
                    ("judge", f"file://{remote}/models/judge", cache)]
    for name in ("s", "t"):  # at the URI before any engine started
        assert (remote / "students" / name / "model" / "config.json").read_text() == name
    assert (remote / "models" / "judge" / "config.json").read_text() == "judge"


def test_teacher_engines_get_a_model_inside_the_experiment_by_uri(tmp_path, monkeypatch):
    """A teacher built into the experiment folder (``tiny:teacher``) reaches engines on other nodes as its URI,
    with the configured cache folder, for the sampled and the greedy rationales alike."""
    import scotd.teacher
    from scotd.stages import BY_NAME

    exp = _uri_experiment(tmp_path)
    exp.cfg = replace(exp.cfg, teacher=replace(exp.cfg.teacher, greedy_rationales=True))
    (exp.dir / "models" / "teacher").mkdir(parents=True)
    (exp.dir / "models" / "teacher" / "config.json").write_text("teacher")
    monkeypatch.setattr(type(exp), "model_path", lambda self, ref: str(self.dir / "models" / "teacher"))
    monkeypatch.setattr(type(exp), "prepare_model", lambda self, ref: str(self.dir / "models" / "teacher"))
    seen = []

    def sample_rationales(questions, exemplars, cfg, resources, model_path, out_dir, **kwargs):
        seen.append((model_path, kwargs["cache_dir"]))
        return {}

    monkeypatch.setattr(scotd.teacher, "sample_rationales", sample_rationales)
    for step in BY_NAME["teacher"].steps:  # the budget sized (from the exemplars), then the stage's work
        step(exp)
    remote = tmp_path / "bucket" / "exp"
    assert seen == [(f"file://{remote}/models/teacher", str(tmp_path / "cache"))] * 2
    assert (remote / "models" / "teacher" / "config.json").read_text() == "teacher"


def test_engine_model_with_a_local_output_dir_or_a_hub_id(tmp_path):
    """A local output.dir is shared storage on a multi-node cluster (README): its paths are handed on as they are,
    as are hub ids and folders outside the experiment."""
    from scotd.config import load_config
    from scotd.experiment import Experiment

    (tmp_path / "exp.yaml").write_text(f"output: {{dir: {tmp_path / 'exp'}}}\n")
    local = Experiment(load_config(tmp_path / "exp.yaml"))
    assert local.engine_model(str(local.dir / "students" / "s" / "model")) == str(local.dir / "students" / "s" / "model")
    at_uri = _uri_experiment(tmp_path / "u")
    assert at_uri.engine_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert at_uri.engine_model(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")


SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
SLASHED = "wJalr/XUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # most AWS secret keys hold "/"


@pytest.mark.parametrize(("override", "key"), [
    pytest.param(f"output.dir=s3://AKIAEXAMPLE:{SECRET}@bucket/runs/x", "output.dir", id="output-dir"),
    pytest.param(f"tasks.0.train=s3://AKIAEXAMPLE:{SECRET}@bucket/data/train.jsonl", "tasks.0.train", id="data"),
    pytest.param(f"output.dir=gs://user:{SECRET}@bucket/x", "output.dir", id="gs"),
    pytest.param(f"tasks.0.train=s3://AKIAEXAMPLE:{SLASHED}@bucket/x.jsonl", "tasks.0.train", id="slash-in-secret"),
    pytest.param(f"output.dir=s3://AKIAEXAMPLE:{SLASHED}@bucket/x", "output.dir", id="slash-in-secret-output"),
])
@pytest.mark.parametrize("command", ["run", "config"])
def test_credentials_in_a_uri_are_refused_before_anything_is_written(tmp_path, capsys, caplog, override, key,
                                                                     command):
    from scotd.cli import main

    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: {tmp_path / 'd.jsonl'}, eval: {tmp_path / 'd.jsonl'}}}]\n"
        f"students: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}, cache_dir: {tmp_path / 'cache'}}}\n")
    assert main([command, str(tmp_path / "exp.yaml"), override]) == 2
    out, err = capsys.readouterr()
    assert f"config error: {key}: " in err and "***@bucket" in err and "credentials" in err
    assert SECRET not in out + err + caplog.text and "XUtnFEMI" not in out + err + caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # no config.yaml, no local copy


@pytest.mark.parametrize(("location", "shown"), [
    (f"s3://AKIAEXAMPLE:{SLASHED}@bucket/x", "s3://***@bucket/x"),
    # a secret may hold "@" too (issue 31), so userinfo with a ":" runs to the last "@": an "@" later in the path
    # hides the bucket as well (more hidden, never less)
    (f"s3://AKIAEXAMPLE:{SLASHED}@bucket/v@2/x", "s3://***@2/x"),
    ("s3://AKIAEXAMPLE:wJalr/XUtn@K7MDENG@bucket/x", "s3://***@bucket/x"),
    ("tasks.0.train=[s3://AKIA:secret@bucket/x.jsonl", "tasks.0.train=[s3://***@bucket/x.jsonl"),
    ("a message: s3://KEY:SECRET@bucket/x and gs://k:s@b/y", "a message: s3://***@bucket/x and gs://***@b/y"),
    ("s3://user@bucket/x", "s3://***@bucket/x"),
    ("s3://bucket/runs@2/x", "s3://bucket/runs@2/x"),  # an "@" in the path is no userinfo
    ("gs://bucket/a:b@c", "gs://bucket/a:b@c"),
    ("/local/path@x", "/local/path@x"),
])
def test_redact_hides_every_form_of_userinfo(location, shown):
    assert redact(location) == shown


def test_mirror_refuses_credentials_itself(tmp_path):
    with pytest.raises(ValueError, match=r"output\.dir: s3://\*\*\*@bucket/x: a URI must not carry credentials"):
        Mirror(f"s3://AKIAEXAMPLE:{SECRET}@bucket/x", tmp_path)


@pytest.mark.parametrize("override", [
    pytest.param(f"tasks.0.train=[s3://AKIAEXAMPLE:{SECRET}@bucket/x.jsonl", id="bad-yaml"),
    pytest.param(f"tasks.0.max_train=s3://AKIAEXAMPLE:{SECRET}@bucket/x", id="wrong-type"),
    pytest.param(f"tasks.0.format=s3://AKIAEXAMPLE:{SECRET}@bucket/x", id="not-a-choice"),
    pytest.param(f"output.dir.sub=s3://AKIAEXAMPLE:{SECRET}@bucket/x", id="not-a-section"),
    pytest.param(f"teacher.engine_kwargs={{speculative_config: {{model: 's3://AKIAEXAMPLE:{SECRET}@b/draft'}}}}",
                 id="inside-a-dict"),
])
def test_no_error_or_dump_shows_a_secret(override, capsys):
    """Issue 31, items 6-7: secrets were echoed in the errors of bad overrides and dumped from inside dicts."""
    from scotd.cli import main
    from tests.conftest import REPO

    for command in ("config", "run"):
        assert main([command, str(REPO / "configs" / "tiny.yaml"), override]) == 2
        out, err = capsys.readouterr()
        assert SECRET not in out + err and "***@" in err and err.startswith("config error: "), err
