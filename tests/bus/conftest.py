from __future__ import annotations

from collections.abc import Iterator

import pytest

from bus.forwarder import Forwarder
from tests.bus.helpers import BusProgram


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    """The bus's switch on a thread of this process, on free loopback ports."""
    fw = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    fw.start()
    yield fw
    fw.stop()


@pytest.fixture
def bus_program() -> Iterator[BusProgram]:
    """``python -m bus`` in a subprocess, on free loopback ports."""
    program = BusProgram()
    yield program
    program.kill()
