"""Fixtures shared by the paper broker's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.broker_harness import LIBS, BrokerThread


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    """A paper broker on a thread of its own, with a fresh state directory."""
    b = BrokerThread(tmp_path / "state")
    yield b
    b.stop()


@pytest.fixture(params=LIBS)
def lib(request: pytest.FixtureRequest) -> str:
    """Each scenario runs once with ib_insync and once with ib_async."""
    return str(request.param)
