"""`gridbot halt` / `resume` through the real CLI to a command server on real sockets: sent, refused, unreachable."""

from __future__ import annotations

import time
from pathlib import Path

from proto.messages import CommandAccepted, CommandRejected, Halt, Message, Resume
from tests.gridbot.peers import Peers, gridbot


async def accepting(msg: Message) -> Message:
    return CommandAccepted(ts_ns=time.time_ns(), detail="persisted")


async def refusing(msg: Message) -> Message:
    return CommandRejected(reason="the state file is read-only")


def test_halt_sends_the_reason_and_reports_acceptance(tmp_path: Path) -> None:
    peers = Peers(statekeeper=accepting)
    try:
        result = gridbot(peers.config_file(tmp_path), "halt", "broker", "maintenance", "tonight")
    finally:
        peers.close()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "halted: broker maintenance tonight (persisted)"
    halts = [m for m in peers.received if isinstance(m, Halt)]
    assert len(halts) == 1
    assert halts[0].reason == "broker maintenance tonight" and halts[0].source == "operator"


def test_halt_without_a_reason_and_resume(tmp_path: Path) -> None:
    peers = Peers(statekeeper=accepting)
    try:
        config = peers.config_file(tmp_path)
        halted = gridbot(config, "halt")
        resumed = gridbot(config, "resume", "checked the position")
    finally:
        peers.close()

    assert halted.returncode == 0 and resumed.returncode == 0, (halted.stderr, resumed.stderr)
    assert resumed.stdout.startswith("resumed")
    kinds = [m for m in peers.received if isinstance(m, Halt | Resume)]
    assert [type(m) for m in kinds] == [Halt, Resume]
    assert kinds[0].reason == "operator halt"  # type: ignore[union-attr]
    assert kinds[1].reason == "checked the position" and kinds[1].source == "operator"  # type: ignore[union-attr]


def test_a_refusal_is_printed_with_exit_1(tmp_path: Path) -> None:
    peers = Peers(statekeeper=refusing)
    try:
        result = gridbot(peers.config_file(tmp_path), "resume")
    finally:
        peers.close()

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "gridbot resume: refused by the statekeeper: the state file is read-only"


def test_no_statekeeper_exits_3_naming_the_endpoint(tmp_path: Path) -> None:
    peers = Peers()
    try:
        config = peers.config_file(tmp_path)
        result = gridbot(config, "halt", "--timeout", "0.5")
    finally:
        peers.close()

    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gridbot halt: the statekeeper did not answer Halt at tcp://127.0.0.1:")
    assert "within 0.5 s" in lines[0]
