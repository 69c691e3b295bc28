"""``python -m bus`` as a real program: it forwards, stops cleanly on SIGTERM/SIGINT, refuses bad endpoints."""

from __future__ import annotations

import signal
import socket

import pytest
import zmq

from bus import Publisher, Subscriber
from tests.bus.helpers import BusProgram, Program, eventually, run_async, tick, zmq_context


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_python_m_bus_forwards_and_stops_on_a_signal_with_exit_0(signum: int) -> None:
    bus = BusProgram()
    try:

        async def one_message_through() -> None:
            with zmq_context() as ctx:
                sub = Subscriber(ctx, bus.xpub, ["md."])
                pub = Publisher(ctx, bus.xsub, "feed")
                got: list[object] = []

                async def try_once() -> None:
                    pub.publish("md.tick.TQQQ", tick(1))
                    envelope = await sub.recv(timeout=0.02)
                    if envelope is not None:
                        got.append(envelope)

                await eventually(lambda: bool(got), 5, "a message through the bus", try_once)
                await pub.close()
                await sub.close()

        run_async(one_message_through())

        bus.signal(signum)

        assert bus.wait(timeout=5) == 0
        output = bus.output()
        assert f"{signal.Signals(signum).name} received: stopping" in output
        assert "stopped after forwarding" in output
    finally:
        bus.kill()


def test_python_m_bus_refuses_an_endpoint_in_use_with_exit_2() -> None:
    with zmq_context() as ctx:
        taken = ctx.socket(zmq.ROUTER)
        port = taken.bind_to_random_port("tcp://127.0.0.1")
        program = Program("-m", "bus", "--xsub", f"tcp://127.0.0.1:{port}", "--xpub", "tcp://127.0.0.1:*")
        try:
            assert program.wait(timeout=10) == 2
            assert f"cannot bind the publishers' (bus.xsub) endpoint 'tcp://127.0.0.1:{port}'" in program.output()
        finally:
            program.kill()


def test_python_m_bus_refuses_a_malformed_endpoint_with_exit_2() -> None:
    program = Program("-m", "bus", "--xsub", "tcp://127.0.0.1:*", "--xpub", "not-an-endpoint")
    try:
        assert program.wait(timeout=10) == 2
        assert "'not-an-endpoint'" in program.output()
    finally:
        program.kill()


def test_python_m_bus_uses_the_configured_endpoints(tmp_path) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    config = tmp_path / "gridbot.toml"
    config.write_text(f'[bus]\nxsub = "tcp://127.0.0.1:{ports[0]}"\nxpub = "tcp://127.0.0.1:{ports[1]}"\n')
    program = Program("-m", "bus", "--config", str(config))
    try:
        match = program.wait_for(r"forwarding publishers (\S+) -> subscribers (\S+)")
        assert match.groups() == (f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")
        program.signal(signal.SIGTERM)
        assert program.wait(timeout=5) == 0
    finally:
        program.kill()
