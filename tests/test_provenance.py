"""Issue 19, item 4: a rerun never silently reuses work built from other settings.

The record and its check are exercised on an experiment folder whose questions the real tasks stage wrote; the
teacher's, students' and evaluation folders stand for finished work by their presence only (what the check reads).
The real stages write the same record: tests/test_pipeline.py reruns the tiny job's folder with changed settings.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from scotd import layout, pipeline, provenance, stages
from scotd.cli import main
from scotd.config import load_config
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture
def finished(tmp_path, shared_data):
    """An experiment folder after the tasks stage, with every later unit recorded and its folder present."""
    csqa = shared_data / "commonsenseqa"
    cfg = load_config(TINY, [f"output.dir={tmp_path / 'exp'}", f"output.cache_dir={tmp_path / 'cache'}",
                             f"tasks.0.train={csqa / 'train_rand_split.jsonl'}",
                             f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}"])
    exp = pipeline.run(cfg, ("tasks",))
    for name, unit in provenance.units(cfg, exp.dir).items():
        if name != "questions":
            (exp.dir / unit.folder).mkdir(parents=True)
            provenance.record(exp.dir, unit)
    return cfg, exp.dir


def test_the_same_config_reuses_everything(finished):
    cfg, folder = finished
    provenance.check(folder, cfg, stages.NAMES)  # no error


@pytest.mark.parametrize("override, unit, key, first", [
    ({"teacher": {"num_samples": 8}}, "teacher (teacher/samples)", "teacher.num_samples was 4, now 8", "teacher"),
    ({"tasks": {"max_train": 16}}, "student scotd (students/scotd)", "tasks.0.max_train was 48, now 16", "students"),
    ({"students": {"epochs": 2}}, "student scotd (students/scotd)", "students.0.epochs was 4, now 2", "students"),
    ({"eval": {"max_new_tokens": 20}}, "eval teacher (eval/teacher)", "eval.max_new_tokens was 48, now 20",
     "students"),
])
def test_a_changed_setting_is_refused_naming_the_key_and_the_restart(finished, override, unit, key, first):
    cfg, folder = finished
    (section, values), = override.items()
    if section == "tasks":
        cfg = replace(cfg, tasks=(replace(cfg.tasks[0], **values),))
    elif section == "students":
        cfg = replace(cfg, students=(replace(cfg.students[0], **values), *cfg.students[1:]))
    else:
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    with pytest.raises(provenance.StaleWorkError) as err:
        provenance.check(folder, cfg, stages.NAMES, "configs/tiny.yaml")
    message = str(err.value)
    assert f"  {unit}: " in message and key in message, message
    assert f"Redo it: scotd run configs/tiny.yaml ... --restart {first} (removes" in message


def test_engine_sizes_and_new_students_are_not_changes(finished):
    cfg, folder = finished
    more = replace(cfg, teacher=replace(cfg.teacher, batch_size=3, cpu_kvcache_gb=2, max_replicas=2),
                   students=(*cfg.students, replace(cfg.students[0], name="scotd-2", epochs=9)),
                   eval=replace(cfg.eval, batch_size=5))
    provenance.check(folder, more, stages.NAMES)


def test_work_whose_folder_is_gone_is_built_again_not_refused(finished):
    cfg, folder = finished
    import shutil

    shutil.rmtree(folder / "teacher")
    more = replace(cfg, teacher=replace(cfg.teacher, num_samples=8))
    with pytest.raises(provenance.StaleWorkError, match="student scotd .*teacher.num_samples was 4, now 8"):
        provenance.check(folder, more, ("teacher",))  # the students learned from the old samples
    for name in ("students", "eval"):
        shutil.rmtree(folder / name)
    provenance.check(folder, more, ("teacher",))


def test_changed_questions_count_only_when_the_tasks_stage_is_not_rerun(finished):
    cfg, folder = finished
    import shutil

    for name in ("students", "eval"):
        shutil.rmtree(folder / name)
    fewer = replace(cfg, tasks=(replace(cfg.tasks[0], max_eval=8),))
    provenance.check(folder, fewer, stages.NAMES)
    with pytest.raises(provenance.StaleWorkError, match=r"questions \(questions\): tasks\.0\.max_eval was 32, now 8"):
        provenance.check(folder, fewer, ("eval",))


def test_restart_removes_the_stage_and_later_ones_and_their_records(finished):
    cfg, folder = finished
    (folder / "report.md").write_text("old")
    (folder / "report-notes.txt").write_text("a user's own file")  # issue 31: not scotd's, so it stays
    removed = provenance.restart(folder, "students")
    assert set(removed) == {"students", "eval", "report.md"} | ({"ray_train"} & set(removed))
    assert (folder / "report-notes.txt").read_text() == "a user's own file"
    assert (folder / "teacher" / "samples").is_dir() and not (folder / "students").exists()
    recorded = json.loads(layout.provenance(folder).read_text())
    assert set(recorded) == {"questions", "teacher"}
    provenance.check(folder, replace(cfg, students=(replace(cfg.students[0], epochs=2), *cfg.students[1:])),
                     stages.NAMES)


def test_cli_refuses_a_stale_rerun_with_exit_2_before_writing(finished, capsys):
    cfg, folder = finished
    saved = (folder / "config.yaml").read_text()
    args = ["run", str(TINY), "--stages", "tasks", f"output.dir={folder}", f"output.cache_dir={cfg.output.cache_dir}",
            f"tasks.0.train={cfg.tasks[0].train}", f"tasks.0.eval={cfg.tasks[0].eval}"]
    assert main([*args, "teacher.temperature=0.5"]) == 2
    err = capsys.readouterr().err
    assert "config error: " in err and "teacher.temperature was 1.0, now 0.5" in err and "Traceback" not in err
    assert (folder / "config.yaml").read_text() == saved  # config.yaml still says what the work was built from
    assert main([*args, "teacher.temperature=0.5", "--restart", "teacher"]) == 0
    assert not (folder / "teacher").exists() and "temperature: 0.5" in (folder / "config.yaml").read_text()
    assert main([*args, "--restart", "nope"]) == 2
    assert "--restart nope: not a stage" in capsys.readouterr().err
