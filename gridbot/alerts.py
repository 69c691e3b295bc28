"""The alert sink every service uses: log it, publish it on the bus, and for a critical one run the alert command.

    alerts = AlertSink.from_config(cfg, "executor", publisher)
    alerts.alert("critical", "broker_lost", "TWS connection lost (1100); not submitting until it is back")

Every alert is logged (critical as ERROR, warning as WARNING, info as INFO) and published as ``Alert`` on topic
``alert`` (the dashboard and ``gridbot tap`` show it). A critical one also runs ``alerts.command`` from the config
(e.g. ``["notify-send", "gridbot"]``) with one line of text appended as its last argument: a desktop notification
or a phone push. The command runs on a thread of its own and is killed (with its process group) after
``alerts.command_timeout`` seconds, so a slow or hung notifier never holds up the service that raised the alert;
its exit status and the tail of its output are logged. The same critical alert (same source and code) runs the
command at most once per ``alerts.repeat_after`` seconds, so a condition that flaps does not flood a phone.

Hooks: ``hook(alert)`` is called with every alert (tests, a dashboard in the same process), and
``on_command_done(outcome)`` with the outcome of every command run. ``gridbot alert TEXT`` sends a test alert
through the whole path so an operator can check the configured command works.

Nothing here imports ZeroMQ: the publisher is anything with ``publish(topic, msg)`` (bus.Publisher is one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gridbot.config import Config, ConfigError
from proto import topics
from proto.messages import Alert, Severity

log = logging.getLogger("gridbot.alerts")

# The text passed to the command is cut to this many characters: notifiers and push services truncate anyway,
# and an argument must stay far below the operating system's limit.
MAX_COMMAND_TEXT = 1000
# Commands running at once, at most: a burst of critical alerts must not fork a process per alert.
MAX_RUNNING_COMMANDS = 4
# Characters of a command's output kept for the log line about its outcome.
OUTPUT_TAIL = 400

_LOG_LEVELS: dict[str, int] = {"critical": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


class Publishes(Protocol):
    def publish(self, topic: str, msg: Alert) -> object: ...


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one run of the alert command."""

    argv: tuple[str, ...]
    # The exit status; None when it could not start or was killed after the timeout.
    returncode: int | None
    timed_out: bool
    output: str
    error: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.error


class AlertSink:
    """Log, publish and (critical) notify; see the module's docstring. Thread-safe; ``alert`` never blocks."""

    def __init__(
        self,
        source: str,
        publisher: Publishes | None = None,
        command: Sequence[str] = (),
        *,
        command_timeout: float = 10.0,
        repeat_after: float = 300.0,
        hook: Callable[[Alert], None] | None = None,
        on_command_done: Callable[[CommandOutcome], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not source:
            raise ValueError("AlertSink needs a source name (the service's name, e.g. 'executor')")
        if command_timeout <= 0:
            raise ValueError(f"alerts.command_timeout must be positive seconds, was {command_timeout!r}")
        if repeat_after < 0:
            raise ValueError(f"alerts.repeat_after must be 0 or more seconds, was {repeat_after!r}")
        if any(not isinstance(part, str) or not part for part in command):
            raise ValueError(f"alerts.command must be a list of non-empty strings, was {list(command)!r}")
        self.source = source
        self.publisher = publisher
        self.command = tuple(command)
        self.command_timeout = command_timeout
        self.repeat_after = repeat_after
        self.hook = hook
        self.on_command_done = on_command_done
        self._clock = clock
        self._lock = threading.Lock()
        self._last_run: dict[tuple[str, str], float] = {}
        self._threads: set[threading.Thread] = set()
        self.raised = 0
        self.commands_started = 0
        self.commands_skipped = 0

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        source: str,
        publisher: Publishes | None = None,
        *,
        hook: Callable[[Alert], None] | None = None,
        on_command_done: Callable[[CommandOutcome], None] | None = None,
    ) -> AlertSink:
        """The sink for ``source`` with the command, timeout and repeat interval of ``cfg.alerts``."""
        try:
            return cls(
                source,
                publisher,
                cfg.alerts.command,
                command_timeout=cfg.alerts.command_timeout,
                repeat_after=cfg.alerts.repeat_after,
                hook=hook,
                on_command_done=on_command_done,
            )
        except ValueError as e:
            raise ConfigError(f"config file '{cfg.source or 'config/defaults.toml'}': {e}") from None

    def alert(self, severity: Severity, code: str, text: str, *, source: str | None = None) -> Alert:
        """Raise one alert: log it, publish it, run the command if it is critical; return the Alert."""
        if severity not in _LOG_LEVELS:
            raise ValueError(f"alert severity must be one of {sorted(_LOG_LEVELS)}, was {severity!r}")
        msg = Alert(ts_ns=time.time_ns(), severity=severity, source=source or self.source, code=code, text=text)
        self.raised += 1
        log.log(_LOG_LEVELS[severity], "ALERT %s %s/%s: %s", severity, msg.source, code, text)
        if self.publisher is not None:
            try:
                self.publisher.publish(topics.ALERT, msg)
            except Exception:
                # The log line above already carries it; an alert must never take its service down.
                log.exception("could not publish alert %s", code)
        if self.hook is not None:
            try:
                self.hook(msg)
            except Exception:
                log.exception("the alert hook failed on %s", code)
        if severity == "critical" and self.command:
            self._notify(msg)
        return msg

    def critical(self, code: str, text: str) -> Alert:
        return self.alert("critical", code, text)

    def warning(self, code: str, text: str) -> Alert:
        return self.alert("warning", code, text)

    def info(self, code: str, text: str) -> Alert:
        return self.alert("info", code, text)

    @property
    def running(self) -> int:
        """Alert commands still running."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running commands to end (at shutdown, in tests); True if none left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.running == 0

    # ------------------------------------------------------------------------------------------------ command

    def _notify(self, msg: Alert) -> None:
        key = (msg.source, msg.code)
        now = self._clock()
        with self._lock:
            last = self._last_run.get(key)
            if last is not None and now - last < self.repeat_after:
                self.commands_skipped += 1
                log.info("alert command not run for %s/%s: it ran %.0f s ago", msg.source, msg.code, now - last)
                return
            running = sum(t.is_alive() for t in self._threads)
            if running >= MAX_RUNNING_COMMANDS:
                self.commands_skipped += 1
                log.warning(
                    "alert command not run for %s/%s: %d commands still running (alerts.command hangs?)",
                    msg.source,
                    msg.code,
                    running,
                )
                return
            self._last_run[key] = now
            argv = (*self.command, command_text(msg))
            thread = threading.Thread(target=self._run, args=(argv,), name=f"alert-{msg.code}", daemon=True)
            self._threads.add(thread)
            self.commands_started += 1
        thread.start()

    def _run(self, argv: tuple[str, ...]) -> None:
        try:
            outcome = run_command(argv, self.command_timeout)
            if outcome.ok:
                log.info("alert command %s exited 0 in %.2f s", argv[0], outcome.duration_s)
            else:
                log.warning("alert command %s failed: %s", argv[0], describe(outcome))
            if self.on_command_done is not None:
                try:
                    self.on_command_done(outcome)
                except Exception:
                    log.exception("the alert command hook failed")
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())


def command_text(msg: Alert) -> str:
    """The one line handed to the alert command, e.g. ``gridbot CRITICAL executor broker_lost: TWS ...``."""
    text = f"gridbot {msg.severity.upper()} {msg.source} {msg.code}: {msg.text}"
    # NUL cannot travel in an argument; newlines would split a notification oddly.
    text = text.replace("\x00", " ").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= MAX_COMMAND_TEXT else text[: MAX_COMMAND_TEXT - 3] + "..."


def run_command(argv: Sequence[str], timeout: float) -> CommandOutcome:
    """Run ``argv`` with no input, capture its output, kill its process group after ``timeout`` seconds."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group, so a shell script's children die with it on a timeout.
            start_new_session=True,
        )
    except OSError as e:
        return CommandOutcome(tuple(argv), None, False, "", error=f"cannot start {argv[0]!r}: {e}")
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        # The group may have ended between the timeout and the kill.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    output = out.decode(errors="replace")[-OUTPUT_TAIL:] if out else ""
    return CommandOutcome(
        tuple(argv),
        None if timed_out else proc.returncode,
        timed_out,
        output,
        duration_s=time.monotonic() - started,
    )


def describe(outcome: CommandOutcome) -> str:
    """One line saying what went wrong with a command run (or that it went right)."""
    if outcome.error:
        return f"{outcome.error}; check alerts.command in your config"
    if outcome.timed_out:
        return f"killed after {outcome.duration_s:.1f} s (alerts.command_timeout); output: {outcome.output.strip()!r}"
    if outcome.returncode != 0:
        return f"exit status {outcome.returncode}; output: {outcome.output.strip()!r}"
    return f"exit status 0 in {outcome.duration_s:.2f} s"

