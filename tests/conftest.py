"""Shared test fixtures: one local Ray cluster per test session, paths to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present (the project's shared benchmark files)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (starting one costs seconds). num_cpus=4 on 2 cores: Ray
    Data and Ray Train together deadlock with num_cpus=2 (see STACK-NOTES)."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
