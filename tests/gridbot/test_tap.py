"""`gridbot tap` as a real process, subscribed over real ZeroMQ to a bus stand-in: an XPUB socket the test binds,
so the test sees tap's subscriptions arrive before it publishes (no slow-joiner guesswork) and sends exactly the
frames a bus forwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import zmq

from proto.envelope import SCHEMA_VERSION, Header, pack
from proto.messages import Alert, FeedStatus, Heartbeat, Message, Tick

ROOT = Path(__file__).resolve().parents[2]
NS = 1_748_872_800_123_456_789
# A new Python process may take many seconds to start on a 2-core CI machine running other tests too; these waits
# cost time only when what they wait for never comes.
START_TIMEOUT = 30.0


class FakeBus:
    """An XPUB socket on a random loopback port: receives subscriptions, sends published frames."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Pass on every subscriber's subscriptions, not only the first of each prefix: the test counts them.
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.subscriptions: list[bytes] = []
        self.seq: dict[str, int] = {}

    def wait_subscribed(self, prefix: str, subscribers: int = 1, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.subscriptions.count(prefix.encode()) < subscribers:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"tap never subscribed to {prefix!r} (got {self.subscriptions})"
            if self.sock.poll(int(remaining * 1000)):
                frame = self.sock.recv()
                if frame[:1] == b"\x01":
                    self.subscriptions.append(frame[1:])

    def publish(self, topic: str, msg: Message, sender: str = "feed") -> None:
        self.seq[topic] = self.seq.get(topic, 0) + 1
        self.sock.send_multipart(pack(topic, Header(sender, self.seq[topic], SCHEMA_VERSION, NS, 42), msg))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def bus() -> Iterator[FakeBus]:
    b = FakeBus()
    yield b
    b.close()


def start_tap(bus: FakeBus, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("GRIDBOT_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "gridbot.cli", "tap", "--bus", bus.endpoint, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def finish(proc: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> tuple[int, list[str], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"gridbot tap did not exit; stdout {out!r} stderr {err!r}") from None
    return proc.returncode, out.splitlines(), err


def tick(seq: int, price: str) -> Tick:
    return Tick(ts_ns=NS + 9, symbol="TQQQ", price=Decimal(price), size=94, exchange_ts_ns=NS,
                receive_ts_ns=NS + 5, seq=seq)


STATUS = FeedStatus(ts_ns=NS, connected=True, stale=False, reason="", feed="iex", last_print_age_s=0.25,
                    prints=2, dropped=1)
ALERT = Alert(ts_ns=NS, severity="warning", source="feed", code="bad_prints", text="dropped 1 bad print")


def test_json_lines_carry_topic_sender_seq_type_and_fields_and_count_ends_it(bus: FakeBus) -> None:
    proc = start_tap(bus, "--count", "4", "--json")
    bus.wait_subscribed("")
    bus.publish("md.tick.TQQQ", tick(1, "97.02"))
    bus.publish("md.status", STATUS)
    bus.publish("alert", ALERT)
    bus.publish("md.tick.TQQQ", tick(2, "97.0213"))
    bus.publish("md.tick.TQQQ", tick(3, "97.05"))  # beyond --count: not shown
    code, lines, err = finish(proc)

    assert code == 0, err
    rows = [json.loads(line) for line in lines]
    assert [(r["topic"], r["sender"], r["seq"], r["type"]) for r in rows] == [
        ("md.tick.TQQQ", "feed", 1, "Tick"),
        ("md.status", "feed", 1, "FeedStatus"),
        ("alert", "feed", 1, "Alert"),
        ("md.tick.TQQQ", "feed", 2, "Tick"),
    ]
    assert rows[0]["msg"] == {
        "ts_ns": NS + 9, "symbol": "TQQQ", "price": "97.02", "size": 94,
        "exchange_ts_ns": NS, "receive_ts_ns": NS + 5, "seq": 1,
    }
    assert rows[3]["msg"]["price"] == "97.0213"  # a decimal string, never a rounded float
    assert rows[1]["msg"]["stale"] is False and rows[1]["msg"]["last_print_age_s"] == 0.25
    assert rows[2]["msg"]["text"] == "dropped 1 bad print"


def test_topic_prefixes_filter_and_lines_are_readable(bus: FakeBus) -> None:
    proc = start_tap(bus, "--topic", "md.tick", "--topic", "alert", "--count", "3")
    bus.wait_subscribed("md.tick")
    bus.wait_subscribed("alert")
    bus.publish("md.status", STATUS)
    bus.publish("md.tick.TQQQ", tick(1, "97.02"))
    bus.publish("md.status", STATUS)
    bus.publish("alert", ALERT)
    bus.publish("md.tick.TQQQ", tick(2, "97.03"))
    code, lines, err = finish(proc)

    assert code == 0, err
    assert len(lines) == 3
    assert " md.tick.TQQQ feed#1 Tick symbol=TQQQ price=97.02 size=94 " in lines[0]
    assert " alert feed#1 Alert severity=warning source=feed code=bad_prints text=\"dropped 1 bad print\"" in lines[1]
    assert " md.tick.TQQQ feed#2 Tick " in lines[2] and "price=97.03" in lines[2]
    assert all("FeedStatus" not in line for line in lines)


def test_heartbeats_are_hidden_unless_asked_for(bus: FakeBus) -> None:
    beat = Heartbeat(ts_ns=NS, service="feed", pid=123, started_ts_ns=42)
    hidden = start_tap(bus, "--count", "1", "--json")
    shown = start_tap(bus, "--count", "1", "--json", "--heartbeats")
    bus.wait_subscribed("", subscribers=2)
    bus.publish("hb.feed", beat)
    bus.publish("md.tick.TQQQ", tick(1, "97.02"))
    code_hidden, lines_hidden, _ = finish(hidden)
    code_shown, lines_shown, _ = finish(shown)

    assert (code_hidden, code_shown) == (0, 0)
    assert json.loads(lines_hidden[0])["type"] == "Tick"
    assert json.loads(lines_shown[0])["type"] == "Heartbeat"


def test_bad_frames_are_reported_on_stderr_and_skipped(bus: FakeBus) -> None:
    proc = start_tap(bus, "--count", "1", "--json")
    bus.wait_subscribed("")
    bus.sock.send_multipart([b"md.tick.TQQQ", b"not a header", b"\xc1"])
    bus.sock.send_multipart([b"md.tick.TQQQ"])
    bus.publish("md.tick.TQQQ", tick(1, "97.02"))
    code, lines, err = finish(proc)

    assert code == 0
    assert [json.loads(line)["msg"]["seq"] for line in lines] == [1]
    assert "skipped a bad bus message" in err


def test_silence_with_a_timeout_exits_1_naming_the_endpoint(bus: FakeBus) -> None:
    proc = start_tap(bus, "--timeout", "0.5")
    bus.wait_subscribed("")  # timed from here: tap is up and listening (its start-up time is the machine's)
    listening = time.monotonic()
    code, lines, err = finish(proc)
    assert code == 1 and lines == []
    assert bus.endpoint in err and "no message within 0.5 s" in err
    assert time.monotonic() - listening < 5


@pytest.mark.parametrize(
    "args, text",
    [
        (["--count", "0"], "--count must be at least 1"),
        (["--timeout", "-1"], "--timeout must be a positive number"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(bus: FakeBus, args: list[str], text: str) -> None:
    code, _, err = finish(start_tap(bus, *args))
    assert code == 2 and text in err


def test_a_malformed_endpoint_exits_2_with_a_reason() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridbot.cli", "tap", "--bus", "not-an-endpoint", "--timeout", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    code, _, err = finish(proc)
    assert code == 2 and "not-an-endpoint" in err


def _wait_for_line(path: Path, proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """The first line of the log file ``path`` that contains ``marker``, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for line in path.read_text().splitlines():
            if marker in line:
                return line
        if proc.poll() is not None:
            raise AssertionError(f"{path.name}: exited (code {proc.returncode}) before {marker!r}:\n{path.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name}: no {marker!r} within {timeout} s:\n{path.read_text()}")
        time.sleep(0.02)


def test_done_when_sim_replays_the_shipped_session_the_feed_publishes_it_and_tap_shows_it(tmp_path: Path) -> None:
    """The issue's "Done when": `python -m sim` with the default replay, `python -m services.feed` pointed at it,
    `gridbot tap --count 5 --json` shows its prints. Only the addresses differ from the defaults (free ports)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("GRIDBOT_CONFIG", None)
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, config: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        extra = ["--config", str(config)] if config else []
        log = tmp_path / f"{args[0]}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", *args[:1], *extra, *args[1:]], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc, log

    try:
        bus, bus_log = start("bus", "--xsub", "tcp://127.0.0.1:*", "--xpub", "tcp://127.0.0.1:*")
        line = _wait_for_line(bus_log, bus, "forwarding publishers", START_TIMEOUT)
        xsub, xpub = line.split("publishers ")[1].split(" -> subscribers ")
        xpub = xpub.strip()
        sim, sim_log = start("sim", "--broker-port", "0", "--stream-port", "0", "--control", "tcp://127.0.0.1:0",
                             "--state-dir", str(tmp_path / "sim"))
        ready = json.loads(_wait_for_line(sim_log, sim, "SIM_READY", START_TIMEOUT).split("SIM_READY ", 1)[1])
        config = tmp_path / "gridbot.toml"
        config.write_text(f'[general]\nrun_dir = "{tmp_path}"\n[bus]\nxsub = "{xsub}"\nxpub = "{xpub}"\n'
                          f'[feed]\nurl = "{ready["stream"]}"\n')
        start("services.feed", config=config)
        tap = subprocess.run(
            [sys.executable, "-m", "gridbot.cli", "--config", str(config), "tap", "--topic", "md.tick",
             "--count", "5", "--json", "--timeout", "45"],  # the feed's start-up is inside this wait
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
    finally:
        for proc in reversed(procs):
            proc.terminate()
        codes = [proc.wait(START_TIMEOUT) for proc in reversed(procs)]

    assert tap.returncode == 0, tap.stderr
    rows = [json.loads(line) for line in tap.stdout.splitlines()]
    assert len(rows) == 5
    ticks = [r["msg"] for r in rows]
    assert all(r["type"] == "Tick" and r["sender"] == "feed" for r in rows)
    assert [t["seq"] for t in ticks] == list(range(ticks[0]["seq"], ticks[0]["seq"] + 5))
    # The shipped sample is real TQQQ from 2025-04-30 to 2025-07-03, prices as traded then (about $40-$90).
    assert all(Decimal("30") < Decimal(t["price"]) < Decimal("120") and t["size"] > 0 for t in ticks)
    first, last = 1_745_971_200_000_000_000, 1_751_587_200_000_000_000  # 2025-04-30 / 2025-07-04 UTC
    assert all(first <= t["exchange_ts_ns"] < last for t in ticks)
    assert codes == [0, 0, 0], "feed, sim and bus all stop cleanly on SIGTERM"
