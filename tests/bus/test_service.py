"""bus.service.run: a service's main in a real subprocess; SIGTERM lets it finish the message in hand, exit 0;
a fatal exception exits 1 with the traceback logged."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

from tests.bus.helpers import Program

SERVICE = textwrap.dedent(
    """
    import asyncio, sys, time
    from bus import service

    async def main():
        n = 0
        try:
            while True:
                await asyncio.sleep(0.01)  # waiting for the next message: a signal cancels here
                n += 1
                print(f"handling message {n}", flush=True)
                time.sleep(0.3)  # the message in hand (no await): a signal waits for it
                print(f"handled message {n}", flush=True)
                if sys.argv[1] == "fatal":
                    raise RuntimeError("the broker said something impossible")
        finally:
            print("cleaned up", flush=True)

    service.run("demo", main)
    """
)


def _service(tmp_path: Path, mode: str) -> Program:
    script = tmp_path / "demo_service.py"
    script.write_text(SERVICE)
    return Program(str(script), mode)


def test_sigterm_finishes_the_message_in_hand_cleans_up_and_exits_0(tmp_path: Path) -> None:
    program = _service(tmp_path, "loop")
    try:
        program.wait_for(r"handling message 1")

        program.signal(signal.SIGTERM)

        assert program.wait(timeout=5) == 0
        output = program.output()
        assert "handled message 1" in output
        assert "handling message 2" not in output
        assert "cleaned up" in output
        assert "SIGTERM received" in output and "demo stopped" in output
    finally:
        program.kill()


def test_sigint_also_stops_with_exit_0(tmp_path: Path) -> None:
    program = _service(tmp_path, "loop")
    try:
        program.wait_for(r"handled message 1")

        program.signal(signal.SIGINT)

        assert program.wait(timeout=5) == 0
        assert "cleaned up" in program.output()
    finally:
        program.kill()


def test_a_fatal_exception_is_logged_and_exits_1(tmp_path: Path) -> None:
    program = _service(tmp_path, "fatal")
    try:
        assert program.wait(timeout=5) == 1
        output = program.output()
        assert "demo: fatal error" in output
        assert "RuntimeError: the broker said something impossible" in output  # the traceback
        assert "cleaned up" in output
    finally:
        program.kill()


# A main whose cancellation is swallowed the way Python 3.11's asyncio.wait_for swallows it: SIGTERM is handled in
# the same loop iteration in which the awaited future completes, so wait_for returns the result instead of raising
# CancelledError, and the loop would carry on for ever. The order is deterministic: os.kill to ourselves makes the
# loop's next select see the signal while fut.set_result is already in the ready queue.
SWALLOWING_SERVICE = textwrap.dedent(
    """
    import asyncio, os, signal
    from bus import service

    async def main():
        loop = asyncio.get_running_loop()
        try:
            fut = loop.create_future()
            os.kill(os.getpid(), signal.SIGTERM)
            loop.call_soon(fut.set_result, "done")
            print("wait_for returned", await asyncio.wait_for(fut, 10), flush=True)
            while True:  # a main loop that no longer knows it was told to stop
                await asyncio.sleep(0.01)
        finally:
            print("cleaned up", flush=True)

    service.run("demo", main, recancel_after=0.3)
    """
)


def test_a_cancellation_swallowed_by_wait_for_is_repeated_until_the_service_stops(tmp_path: Path) -> None:
    script = tmp_path / "swallowing_service.py"
    script.write_text(SWALLOWING_SERVICE)
    program = Program(str(script))
    try:
        assert program.wait(timeout=10) == 0
        output = program.output()
        assert "wait_for returned done" in output  # the first cancellation was indeed swallowed
        assert "still running 0.3 s after SIGTERM" in output
        assert "cleaned up" in output and "demo stopped" in output
    finally:
        program.kill()
