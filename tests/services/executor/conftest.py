"""Fixtures shared by the executor's tests."""

from __future__ import annotations

import pytest

from tests.services.executor.harness import LIBS


@pytest.fixture(params=LIBS)
def lib(request: pytest.FixtureRequest) -> str:
    """Each scenario runs once with ib_insync and once with ib_async (the executor's ``--lib``)."""
    return str(request.param)
