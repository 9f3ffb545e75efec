"""Static check of the whole repository: undefined names, unused imports, syntax errors (ruff's F and E9 rules).
A name that only fails when a late stage runs (a missing import in the eval stage) fails here in a second."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_ruff_finds_no_undefined_names_or_unused_imports():
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--select", "F,E9", "--output-format", "concise", "--no-cache",
                             "scotd", "jobs", "benchmarks", "tests"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
