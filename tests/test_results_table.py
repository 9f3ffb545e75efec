"""benchmarks/RESULTS.md opens with the Current figures table that tools read (one row per measure, fixed columns and
measure names), and the repository names no package registry or model hub host and no machine path in its docs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

try:
    from conftest import REPO
except ImportError:  # run without the suite's conftest
    REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "RESULTS.md"
COLUMNS = ["measure", "value", "machine", "date", "command"]
REQUIRED = [
    "sampling stage / bare vLLM",
    "bare vLLM / transformers generate",
    "student path / plain loop (CPU)",
    "student path / plain loop (GPU)",
    "student MFU (GPU)",
    "demo wall time",
    "demo SCoTD - label-only (points)",
    "test suite wall time",
]
# Package-registry and model-hub hosts, and machine paths, as patterns (dots as [.], slashes as [/]) so that this
# file does not name them either; scotd takes packages only through pip and its configured index.
HOSTS = [r"pypi[.]org", r"files[.]pythonhosted[.]org", r"huggingface[.]co", r"hf[.]co", r"download[.]pytorch[.]org"]
HOST = re.compile(r"(?<![\w-])(?:" + "|".join(HOSTS) + r")(?![\w-])", re.IGNORECASE)
PATHS = [r"[/]work[/]", r"[/]tmp[/]"]
MACHINE_PATH = re.compile(r"(?<![\w.~$-])(?:" + "|".join(PATHS) + ")")
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()


def cells(line: str) -> list[str]:
    """The cells of one Markdown table row (an escaped `\\|` stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def current_figures(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table in the `## Current figures` section."""
    section = text.split("\n## Current figures\n", 1)[1].split("\n## ", 1)[0]
    table, started = [], False
    for line in section.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            started = True
        elif started:
            break
    assert len(table) >= 3, "the Current figures section has no table"
    header, rule, *rows = table
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in cells(rule)), f"not a header rule: {rule}"
    return cells(header), [cells(r) for r in rows]


def test_current_figures_is_the_first_section_after_a_short_intro():
    text = RESULTS.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Benchmark results"
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first] == "## Current figures"
    intro = [line for line in lines[1:first] if line.strip()]
    assert len(intro) <= 2, f"intro before the table is {len(intro)} lines"


def test_current_figures_table_has_the_columns_and_every_required_measure_once():
    header, rows = current_figures(RESULTS.read_text())
    assert header == COLUMNS
    assert all(len(r) == len(COLUMNS) for r in rows), [r for r in rows if len(r) != len(COLUMNS)]
    measures = [r[0] for r in rows]
    assert {m: measures.count(m) for m in REQUIRED} == {m: 1 for m in REQUIRED}
    assert len(measures) == len(set(measures)), "a measure has more than one row"
    assert [r[0] for r in rows if not r[1]] == [], "value cells must not be empty (write `not measured`)"


def git_grep(*args: str) -> list[str]:
    """`git grep -n -I` in the repository's tracked files; [] when nothing matches."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "grep", "-n", "-I", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.splitlines()


def test_no_registry_host_in_tracked_files():
    candidates = git_grep("-i", "-E", *[a for h in HOSTS for a in ("-e", h)], "--", ".", f":!{THIS}")
    hits = [line for line in candidates if HOST.search(line.split(":", 2)[2])]
    assert hits == []


def test_no_machine_path_in_the_docs():
    candidates = git_grep("-E", *[a for p in PATHS for a in ("-e", p)], "--", "README.md", "docs", "benchmarks")
    hits = [line for line in candidates if MACHINE_PATH.search(line.split(":", 2)[2])]
    assert hits == []
