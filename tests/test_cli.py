"""The ``scotd`` command line: overrides before or after options, errors as exit codes with the reason."""

import pyarrow.parquet as pq
import pytest

from scotd.cli import main
from tests.conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")


def test_overrides_may_follow_the_stages_option(tmp_path, shared_data, capsys):
    csqa = shared_data / "commonsenseqa"
    code = main(["run", TINY, "--stages", "tasks", f"output.dir={tmp_path}", "tasks.0.max_train=5",
                 f"tasks.0.train={csqa / 'train_rand_split.jsonl'}", f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}"])
    assert code == 0
    assert pq.read_table(tmp_path / "questions" / "train.parquet").num_rows == 5
    assert f"artifacts: {tmp_path}" in capsys.readouterr().out


def test_config_command_prints_overridden_values(capsys):
    assert main(["config", TINY, "teacher.num_samples=7"]) == 0
    assert "num_samples: 7" in capsys.readouterr().out


def test_unknown_option_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", TINY, "--bogus", "tasks"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --bogus tasks" in capsys.readouterr().err


def test_bad_override_key_exits_2_naming_the_key(capsys):
    assert main(["config", TINY, "teacher.num_sample=7"]) == 2
    assert "teacher.num_sample" in capsys.readouterr().err


def test_console_shows_scotd_lines_and_library_warnings_only(capsys):
    import logging
    import re

    from scotd import console

    console.setup()
    logging.getLogger("scotd.pipeline").info("=== stage tasks ===")
    logging.getLogger("ray.data").info("Starting execution of Dataset")
    logging.getLogger("vllm").info("Initializing a V1 LLM engine")
    logging.getLogger("somelib").warning("something to know")
    err = capsys.readouterr().err
    assert re.search(r"^\d\d:\d\d:\d\d === stage tasks ===$", err, re.M), err
    assert "Starting execution" not in err and "Initializing" not in err
    assert re.search(r"^\d\d:\d\d:\d\d WARNING somelib: something to know$", err, re.M), err
    assert console.ray_init_kwargs(False)["log_to_driver"] is False


@pytest.mark.parametrize("args, message", [
    (["run", TINY, "teacher.stop=[unclosed"], "config error: .*override 'teacher.stop=\\[unclosed': the value is not valid YAML"),
    (["config", str(REPO / "configs")], "config error: .*configs: a folder, not a config file"),
    (["run", TINY, "--stages", "tasks", "tasks.0.train=/nope/train.jsonl"],
     "data error: tasks.csqa.train: no source of train questions can be read here:\n  - /nope/train.jsonl: file not found"),
])
def test_user_errors_are_one_message_and_exit_2(tmp_path, capsys, args, message):
    """Issue 19, item 11 and issue 18: a bad override, a folder as config, data that cannot be had."""
    import re

    assert main([*args, f"output.dir={tmp_path}"] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


def test_non_utf8_config_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert main(["config", str(path)]) == 2
    assert "not UTF-8 text (byte 6)" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("tasks.0.train=/nope/train.jsonl", "data error: tasks.csqa.train: no source of train questions can be read here"),
    ("output.dir=/proc/scotd-out", "config error: output.dir: /proc/scotd-out: cannot write there"),
    ("output.dir=file:///proc/scotd-out", "config error: output.dir: file:///proc/scotd-out: cannot write there"),
])
def test_inputs_and_output_are_checked_before_ray_starts(tmp_path, override, message):
    """Issue 19, item 12: a whole run (every stage) with data it cannot read or a folder it cannot write stops with
    one line before the local Ray cluster starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    args = [str(Path(sys.executable).with_name("scotd")), "run", TINY, override]
    if not override.startswith("output.dir"):
        args.append(f"output.dir={tmp_path / 'out'}")
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and message in output, output[-3000:]
    assert "Ray workers' logs" not in output and "Traceback" not in output and "=== stage teacher" not in output


@pytest.mark.parametrize("overrides, message", [
    (["--stages", "teachr"], "config error: --stages: unknown stage(s) ['teachr']"),
    (["output.dir=foo://bar/x"], "config error: output.dir: 'foo://bar/x': not a filesystem pyarrow can open"),
    (["tasks.0.train=", "tasks.0.max_dev=4"], "data error: tasks.csqa.max_dev: an evaluation-only task has no "
                                               "training questions"),
    (["tasks.0.train=offline:foo"], "data error: tasks.csqa.train: 'offline:foo': expected offline:<dataset>:"),
    (["tasks.0.train={data}"], "data error: {data}: a folder, not a data file of format commonsenseqa"),
])
def test_faults_before_any_work_are_one_line_errors(tmp_path, shared_data, capsys, overrides, message):
    """Issue 31, item 10: each of these ended in a traceback with exit 1."""
    csqa = shared_data / "commonsenseqa"
    args = [a.format(data=shared_data) for a in overrides]
    code = main(["run", TINY, "--stages", "tasks", f"output.dir={tmp_path / 'exp'}",
                 f"tasks.0.train={csqa / 'train_rand_split.jsonl'}", f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}",
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and message.format(data=shared_data) in err and "Traceback" not in err, err
