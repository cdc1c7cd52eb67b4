"""Fixtures of the reliability tests: a pool of worker processes reaped after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Pool


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """Starts worker processes; kills any still running when the test ends."""
    workers = Pool(tmp_path, env=dict(os.environ))
    try:
        yield workers
    finally:
        workers.close()
