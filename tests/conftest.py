"""Shared fixtures; the helpers they use are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY, train_run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny CartPole run through the real entrypoint, shared by read-only tests."""
    return train_run(tmp_path_factory, "run", TINY)
