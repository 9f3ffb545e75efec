"""Every `ray job submit` command the project ships must work as written on a cluster.

The commands live in README.md, cluster/README.md, the header comments of cluster/*.yaml and configs/gpu/*.yaml,
and the docstrings of jobs/*.py. A job's driver runs in an uploaded copy of the working dir, so a path relative to
the checkout (a config's ``../shared/data/...``, ``runs/x``) points into that copy and is lost with the job: each
command must name output.dir, and (when it runs the tasks stage) every task's data file, after its overrides, as a
URI or an absolute path. It must also use token auth and ship the checkout (--working-dir / the runtime env).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from scotd.config import load_config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "guide.md", REPO / "cluster" / "README.md", *sorted((REPO / "cluster").glob("*.yaml")),
        *sorted((REPO / "configs" / "gpu").glob("*.yaml")), *sorted((REPO / "configs" / "paper").glob("*.yaml")),
        *sorted((REPO / "jobs").glob("*.py"))]
# Files that carry no `ray job submit` line (KubeRay submits for you: its entrypoint is checked in
# tests/test_cluster_files.py).
WITHOUT_COMMAND = {"kuberay-rayjob.yaml"}


COMMAND = re.compile(r"^(?:\w+=\S*\s+)*ray job submit\b")


def submit_commands(text: str) -> list[str]:
    """`ray job submit` commands in a text: lines that start with one (after a comment marker, and environment
    assignments), continuation lines joined (a doubled backslash, as in a Python docstring, too). Prose that
    mentions the command is not a command."""
    commands, current = [], None
    for line in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", line).strip()
        if current is None and not COMMAND.match(line):
            continue
        continued = re.search(r"\\{1,2}$", line)
        current = f"{current or ''} {line[: continued.start()] if continued else line}".strip()
        if not continued:
            commands.append(current)
            current = None
    return commands


def problems_of(command: str) -> list[str]:
    """What would break when this command is run against a cluster (empty when nothing)."""
    words = shlex.split(command)
    problems = []
    if words[0] != "RAY_AUTH_MODE=token":
        problems.append("no RAY_AUTH_MODE=token before `ray job submit` (the cluster has token auth on)")
    if "--" not in words:
        return [*problems, "no `--` before the entrypoint"]
    options, entry = words[: words.index("--")], words[words.index("--") + 1:]
    if "--working-dir" not in options and "--runtime-env" not in options:
        problems.append("neither --working-dir nor --runtime-env: the checkout would not reach the cluster")
    if entry[:1] != ["python"] or not entry[1:2] or not (REPO / entry[1]).is_file():
        return [*problems, f"entrypoint is not `python jobs/<script>.py`: {entry[:2]}"]
    stages = "tasks" if entry[1] == "jobs/distill.py" else entry[2]
    config, overrides = (entry[2], entry[3:]) if entry[1] == "jobs/distill.py" else (entry[3], entry[4:])
    values = dict(item.split("=", 1) for item in overrides)
    if "output.dir" not in values:
        problems.append("no output.dir: the experiment would land in the job's temporary working dir")
    elif not kept_by_a_job(values["output.dir"]):
        problems.append(f"output.dir={values['output.dir']} is relative: it would land in the job's working dir")
    cfg = load_config(REPO / config, [f"{k}={os.path.expandvars(v)}" for k, v in values.items()])
    if "tasks" in stages.split(","):
        for i, task in enumerate(cfg.tasks):
            for split in ("train", "eval"):
                path = getattr(task, split)
                generated_or_hub = path.startswith(("offline:", "gen:", "hf:")) or task.format == "hf"
                if path and not generated_or_hub and not kept_by_a_job(path):
                    problems.append(f"tasks.{i}.{split}={path} is relative: the driver would look for it inside "
                                    "the uploaded working dir")
    return problems


def kept_by_a_job(location: str) -> bool:
    location = os.path.expandvars(location)
    return "://" in location or location.startswith("/")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_submit_commands_work_on_a_cluster(doc: Path) -> None:
    commands = submit_commands(doc.read_text())
    if doc.name in WITHOUT_COMMAND:
        assert commands == []
        return
    assert commands, f"{doc.name}: no `ray job submit` command found"
    assert {command: problems_of(command) for command in commands} == {command: [] for command in commands}


GOOD = ("RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/distill.py "
        "configs/tiny.yaml output.dir=s3://b/x tasks.0.train=s3://b/train.jsonl tasks.0.eval=/data/dev.jsonl")


@pytest.mark.parametrize(("command", "expected"), [
    pytest.param(GOOD.replace(" output.dir=s3://b/x", ""), "no output.dir", id="no-output-dir"),
    pytest.param(GOOD.replace("output.dir=s3://b/x", "output.dir=runs/x"), "output.dir=runs/x is relative",
                 id="relative-output-dir"),
    pytest.param(GOOD.replace(" tasks.0.train=s3://b/train.jsonl", ""), "tasks.0.train=../shared/data",
                 id="config-data-path-relative"),
    pytest.param(GOOD.replace("RAY_AUTH_MODE=token ", ""), "RAY_AUTH_MODE=token", id="no-token-auth"),
    pytest.param(GOOD.replace("--working-dir . ", ""), "neither --working-dir", id="checkout-not-shipped"),
    pytest.param(GOOD.replace("jobs/distill.py configs/tiny.yaml", "jobs/stage.py tasks configs/tiny.yaml")
                 .replace(" tasks.0.eval=/data/dev.jsonl", ""), "tasks.0.eval=../shared", id="tasks-stage-data"),
])
def test_checker_catches_broken_commands(command: str, expected: str) -> None:
    assert problems_of(GOOD) == []
    assert any(expected in problem for problem in problems_of(command)), problems_of(command)


def test_continuation_lines_are_joined() -> None:
    text = ("#   RAY_AUTH_MODE=token ray job submit --address a \\\n#       -- python jobs/distill.py c.yaml \\\n"
            "#       output.dir=s3://b/x\n#   ray down x\n    RAY_AUTH_MODE=token ray job submit -- x \\\\\n        y\n")
    assert submit_commands(text) == [
        "RAY_AUTH_MODE=token ray job submit --address a -- python jobs/distill.py c.yaml output.dir=s3://b/x",
        "RAY_AUTH_MODE=token ray job submit -- x y"]
