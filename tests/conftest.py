"""Shared test fixtures. Tests build their own tiny data in tmp_path; nothing needs ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TEST_DATA = Path(__file__).resolve().parent / "data"

# Keep every ultralytics run in the tests off the network and out of the user's home.
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Small real-label subsets committed under tests/data/."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files beside the checkout; tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
