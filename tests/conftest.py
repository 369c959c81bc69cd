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


def pytest_report_header(config):
    state = "present" if SHARED.is_dir() else "ABSENT: the real-file tests will be SKIPPED"
    return f"cxrdet real annotation files ({SHARED}): {state}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files beside the checkout. Tests using it skip (with the reason in the
    summary) when it is absent, except under CI, where ../shared is always laid beside the clone: there
    a missing folder fails them instead of letting the real-file checks vanish silently."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {SHARED} is missing: the real-file tests cannot run")
        pytest.skip(f"{SHARED} is not beside this checkout (real-file test skipped)")
    return SHARED
