"""The alert sink: log, publish on the real bus, run the configured command (non-blocking, timed out, rate-limited)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq.asyncio

from bus.forwarder import Forwarder
from bus.publisher import Publisher
from bus.subscriber import Subscriber
from gridbot import config
from gridbot.alerts import MAX_COMMAND_TEXT, AlertSink, CommandOutcome, command_text, describe, run_command
from gridbot.config import ConfigError
from proto import topics
from proto.envelope import Envelope
from proto.messages import Alert
from tests.gridbot.peers import Peers, gridbot

# A notifier that writes its arguments to the file named by its first argument.
RECORDER = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


def recorder(path: Path) -> list[str]:
    return [sys.executable, "-c", RECORDER, str(path)]


class Outcomes:
    """Collects the alert commands' outcomes; ``done`` is set by the first."""

    def __init__(self) -> None:
        self.list: list[CommandOutcome] = []
        self.done = threading.Event()

    def __call__(self, outcome: CommandOutcome) -> None:
        self.list.append(outcome)
        self.done.set()


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Alert]] = []

    def publish(self, topic: str, msg: Alert) -> bool:
        self.sent.append((topic, msg))
        return True


def test_a_critical_alert_runs_the_command_with_the_text_as_last_argument(tmp_path: Path) -> None:
    out = tmp_path / "args.json"
    outcomes = Outcomes()
    sink = AlertSink("executor", command=[*recorder(out), "--title", "gridbot"], on_command_done=outcomes)

    sink.alert("critical", "broker_lost", "TWS connection lost (1100)")

    assert outcomes.done.wait(10), "the alert command never finished"
    assert outcomes.list[0].ok, describe(outcomes.list[0])
    args = json.loads(out.read_text())
    assert args[:2] == ["--title", "gridbot"]
    assert args[-1] == "gridbot CRITICAL executor broker_lost: TWS connection lost (1100)"


def test_warning_and_info_alerts_do_not_run_the_command(tmp_path: Path) -> None:
    out = tmp_path / "args.json"
    published = ListPublisher()
    sink = AlertSink("feed", published, recorder(out))

    sink.alert("warning", "bad_prints", "3 prints dropped")
    sink.alert("info", "connected", "stream connected")

    assert sink.wait(5)
    assert sink.commands_started == 0
    assert not out.exists()
    assert [m.severity for _, m in published.sent] == ["warning", "info"]


def test_alert_returns_at_once_while_a_slow_command_runs() -> None:
    sink = AlertSink("statekeeper", command=[sys.executable, "-c", "import time; time.sleep(30)"], command_timeout=1)

    started = time.monotonic()
    sink.alert("critical", "halted", "reconciliation failed")
    elapsed = time.monotonic() - started

    assert elapsed < 0.5, f"alert() blocked for {elapsed:.2f} s"
    assert sink.running == 1
    assert sink.wait(10), "the slow command was not ended by its timeout"


def test_a_hung_command_is_killed_after_the_timeout_with_its_children(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    # A shell that starts a long sleeper and waits: killing only the shell would leave the sleeper running.
    script = f"sleep 30 & echo $! > {child_pid_file}; wait"
    outcomes = Outcomes()
    sink = AlertSink("executor", command=["sh", "-c", script], command_timeout=0.5, on_command_done=outcomes)

    sink.alert("critical", "stuck", "a hung notifier")

    assert outcomes.done.wait(10)
    outcome = outcomes.list[0]
    assert outcome.timed_out and outcome.returncode is None and not outcome.ok
    assert 0.4 < outcome.duration_s < 5
    assert "killed after" in describe(outcome)
    child = int(child_pid_file.read_text())
    assert _gone(child, timeout=5), f"the notifier's child {child} survived the timeout"


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        try:
            # A zombie (state Z) waiting for its parent to reap it is gone for our purpose.
            if stat.read_text().split(") ", 1)[1].startswith("Z"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def test_a_missing_command_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes()
    sink = AlertSink("feed", command=["/nonexistent/notify-me"], on_command_done=outcomes)

    with caplog.at_level(logging.WARNING, logger="gridbot.alerts"):
        sink.alert("critical", "feed_fatal", "409 insufficient subscription")
        assert outcomes.done.wait(10)
        assert sink.wait(5)

    assert "cannot start '/nonexistent/notify-me'" in outcomes.list[0].error
    assert "check alerts.command" in caplog.text


def test_a_failing_command_logs_its_status_and_output(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes()
    command = [sys.executable, "-c", "import sys; print('push service said no'); sys.exit(3)"]
    sink = AlertSink("feed", command=command, on_command_done=outcomes)

    with caplog.at_level(logging.WARNING, logger="gridbot.alerts"):
        sink.alert("critical", "x", "y")
        assert outcomes.done.wait(10) and sink.wait(5)

    assert outcomes.list[0].returncode == 3
    assert "exit status 3" in caplog.text and "push service said no" in caplog.text


def test_the_same_critical_alert_runs_the_command_once_per_repeat_interval(tmp_path: Path) -> None:
    now = [1000.0]
    published = ListPublisher()
    sink = AlertSink(
        "executor", published, [sys.executable, "-c", "pass"], repeat_after=300, clock=lambda: now[0]
    )

    sink.alert("critical", "broker_lost", "first")
    sink.alert("critical", "broker_lost", "again, 10 s later")
    sink.alert("critical", "order_stuck", "another code")
    now[0] += 301
    sink.alert("critical", "broker_lost", "after the interval")

    assert sink.wait(10)
    assert sink.commands_started == 3
    assert sink.commands_skipped == 1
    # Every one of them is still published.
    assert len(published.sent) == 4


def test_severity_is_logged_at_its_level(caplog: pytest.LogCaptureFixture) -> None:
    sink = AlertSink("strategy")
    with caplog.at_level(logging.INFO, logger="gridbot.alerts"):
        sink.critical("a", "critical text")
        sink.warning("b", "warning text")
        sink.info("c", "info text")
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels == {
        "ALERT critical strategy/a": logging.ERROR,
        "ALERT warning strategy/b": logging.WARNING,
        "ALERT info strategy/c": logging.INFO,
    }


def test_the_hook_sees_every_alert_and_a_failing_hook_or_publisher_is_survived() -> None:
    seen: list[Alert] = []

    class Broken:
        def publish(self, topic: str, msg: Alert) -> bool:
            raise RuntimeError("socket closed")

    sink = AlertSink("executor", Broken(), hook=seen.append)
    alert = sink.alert("warning", "w", "text")

    assert seen == [alert]
    assert alert.source == "executor" and alert.code == "w" and alert.ts_ns > 0

    def bad_hook(msg: Alert) -> None:
        raise ValueError("hook bug")

    AlertSink("executor", hook=bad_hook).alert("info", "i", "still fine")


def test_bad_input_is_refused_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="alerts.command_timeout"):
        AlertSink("x", command_timeout=0)
    with pytest.raises(ValueError, match="alerts.repeat_after"):
        AlertSink("x", repeat_after=-1)
    with pytest.raises(ValueError, match="alerts.command"):
        AlertSink("x", command=["notify-send", ""])
    with pytest.raises(ValueError, match="severity"):
        AlertSink("x").alert("urgent", "c", "t")  # type: ignore[arg-type]


def test_from_config_reads_the_alerts_section(tmp_path: Path) -> None:
    cfg = config.load(overrides={"alerts": {"command": ["notify-send", "gridbot"], "command_timeout": 2.5}})
    sink = AlertSink.from_config(cfg, "feed")
    assert sink.command == ("notify-send", "gridbot")
    assert sink.command_timeout == 2.5
    assert sink.repeat_after == cfg.alerts.repeat_after

    bad = config.load(overrides={"alerts": {"command_timeout": -1.0}})
    with pytest.raises(ConfigError, match="alerts.command_timeout"):
        AlertSink.from_config(bad, "feed")


def test_command_text_is_one_line_and_bounded() -> None:
    long = Alert(severity="critical", source="s", code="c", text="line one\nline two\x00" + "x" * 5000)
    text = command_text(long)
    assert "\n" not in text and "\x00" not in text
    assert len(text) == MAX_COMMAND_TEXT and text.endswith("...")


def test_run_command_captures_output() -> None:
    outcome = run_command([sys.executable, "-c", "print('hello')"], timeout=10)
    assert outcome.ok and outcome.output.strip() == "hello"


def test_alerts_reach_a_subscriber_through_the_real_bus() -> None:
    forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    forwarder.start()
    try:
        received = asyncio.run(asyncio.wait_for(_publish_and_receive(forwarder), 10))
    finally:
        forwarder.stop()
    assert received.topic == topics.ALERT
    assert received.header.sender == "executor"
    assert isinstance(received.msg, Alert)
    assert (received.msg.severity, received.msg.code, received.msg.text) == ("critical", "broker_lost", "gone")


async def _publish_and_receive(forwarder: Forwarder) -> Envelope:
    ctx = zmq.asyncio.Context()
    publisher = Publisher(ctx, forwarder.xsub_endpoint, "executor", heartbeat_interval=0.05)
    subscriber = Subscriber(ctx, forwarder.xpub_endpoint, [topics.ALERT])
    try:
        await publisher.start()
        # The subscription has reached the publisher once its own heartbeats come through.
        while not subscriber.peer_alive("executor"):
            await subscriber.recv(timeout=0.05)
        AlertSink("executor", publisher).alert("critical", "broker_lost", "gone")
        while True:
            envelope = await subscriber.recv(timeout=5)
            assert envelope is not None, "no alert arrived within 5 s"
            if envelope.topic == topics.ALERT:
                return envelope
    finally:
        await subscriber.close()
        await publisher.close()
        ctx.term()


# --- `gridbot alert`: the operator's test of the whole path -------------------------------------------------------


def test_gridbot_alert_runs_the_command_and_goes_out_on_the_bus(tmp_path: Path) -> None:
    out = tmp_path / "args.json"
    peers = Peers()
    try:
        command = json.dumps(recorder(out))
        config_file = peers.config_file(tmp_path, extra=f"[alerts]\ncommand = {command}\n")
        result = gridbot(config_file, "alert", "hello", "phone")
    finally:
        peers.close()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "bus: the alert went out on topic 'alert'" in result.stdout
    assert "exit status 0" in result.stdout
    assert json.loads(out.read_text()) == ["gridbot CRITICAL operator test: hello phone"]


def test_gridbot_alert_reports_a_failing_command_with_exit_1(tmp_path: Path) -> None:
    peers = Peers()
    try:
        config_file = peers.config_file(tmp_path, extra='[alerts]\ncommand = ["/nonexistent/notifier"]\n')
        result = gridbot(config_file, "alert")
    finally:
        peers.close()

    assert result.returncode == 1
    assert "cannot start '/nonexistent/notifier'" in result.stdout and "check alerts.command" in result.stdout
