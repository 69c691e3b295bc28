"""The whole system under the real supervisord, in a directory of its own, on free loopback ports.

(``with_makefile=True`` lays the directory out for ``make run`` / ``make stop`` as well.)

``System(tmp_path, ...)`` lays out a clean project directory: ``deploy/supervisord.conf`` copied verbatim from the
repository (so ``%(here)s/..`` is the new directory: its own run/, logs and control socket), ``.venv`` linked to
the repository's, and a config file of its own (``GRIDBOT_CONFIG``) with free ports for every endpoint and
``run_dir`` inside the directory: it never touches the default ports, a user's running system or another test.
Then ``start()`` runs ``supervisord -c deploy/supervisord.conf`` there; ``ctl``, ``gridbot`` and ``sim`` drive it;
``stop_all()`` checks that ``supervisorctl stop all`` leaves nothing running; ``close()`` always shuts it down and
kills whatever is left of it (found by its GRIDBOT_CONFIG in /proc), so a failing test never leaks processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sim.control import ControlError, call

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROGRAMS = ("bus", "sim", "statekeeper", "executor", "strategy", "feed")
T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together while chosen, so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1,
               explain: Callable[[], str] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


class System:
    def __init__(self, tmp_path: Path, config: str = "", sim: dict[str, Any] | None = None,
                 with_makefile: bool = False) -> None:
        self.root = tmp_path / "gridbot"
        (self.root / "deploy").mkdir(parents=True)
        (self.root / "run" / "logs").mkdir(parents=True)
        shutil.copy(REPO / "deploy" / "supervisord.conf", self.root / "deploy" / "supervisord.conf")
        if with_makefile:
            self._lay_out_for_make()
        else:
            (self.root / ".venv").symlink_to(REPO / ".venv")
        self.conf = self.root / "deploy" / "supervisord.conf"
        self.run_dir = self.root / "run"
        ports = free_ports(7)
        self.xsub, self.xpub, self.executor_ep, self.statekeeper_ep, self.control = (
            f"tcp://127.0.0.1:{p}" for p in (ports[0], ports[1], ports[2], ports[3], ports[6])
        )
        self.broker_port, self.stream_port = ports[4], ports[5]
        sim_keys = {"broker_port": self.broker_port, "stream_port": self.stream_port, "control": self.control}
        sim_keys.update(sim or {})
        sim_toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sim_keys.items())
        self.config_file = self.root / "gridbot.toml"
        self.config_file.write_text(
            f"""# A system test's own configuration: free ports, its own run directory.
[general]
run_dir = "{self.run_dir}"

[bus]
xsub = "{self.xsub}"
xpub = "{self.xpub}"
executor = "{self.executor_ep}"
statekeeper = "{self.statekeeper_ep}"

[broker]
port = {self.broker_port}
connect_timeout = 5.0
# Reconnect attempts at most 1 s apart: after an outage or a restart trading resumes within about a second.
reconnect_initial = 0.5
reconnect_max = 1.0

[feed]
url = "ws://127.0.0.1:{self.stream_port}/v2/iex"

[sim]
{sim_toml}

{config}
"""
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBOT_", "APCA_"))}
        self.env["GRIDBOT_CONFIG"] = str(self.config_file)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.started = False
        self.supervisord: int | None = None

    def _lay_out_for_make(self) -> None:
        """The Makefile and pyproject.toml too, and a .venv of links to the real one with its own install stamp
        (newer than pyproject.toml), so `make run` finds everything installed and installs nothing."""
        venv = self.root / ".venv"
        venv.mkdir()
        for part in ("bin", "lib", "include"):
            (venv / part).symlink_to(REPO / ".venv" / part)
        shutil.copy(REPO / ".venv" / "pyvenv.cfg", venv / "pyvenv.cfg")
        for name in ("Makefile", "pyproject.toml"):
            shutil.copy(REPO / name, self.root / name)
        long_ago = time.time() - 3600
        os.utime(self.root / "pyproject.toml", (long_ago, long_ago))
        (venv / ".installed").touch()

    # ------------------------------------------------------------------------------------------------ running

    def start(self, timeout: float = 30.0) -> None:
        """Start supervisord (it daemonizes) and wait until every program is RUNNING (or sim EXITED on purpose)."""
        result = subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], cwd=self.root, env=self.env,
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, f"supervisord did not start: {result.stdout}{result.stderr}"
        self.started = True
        self.supervisord = wait_until(self.supervisord_pid, 10, "supervisord's pid file")
        wait_until(lambda: all(s == "RUNNING" for s in self.states().values()), timeout,
                   "every program RUNNING", interval=0.2, explain=self.explain)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def states(self) -> dict[str, str]:
        """Program name -> supervisord state (RUNNING, STOPPED, EXITED, BACKOFF, ...)."""
        out = self.ctl("status").stdout
        states = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("gridbot:"):
                states[parts[0].removeprefix("gridbot:")] = parts[1]
        return states

    def pids(self) -> dict[str, int]:
        """Program name -> pid, for the programs running (from `supervisorctl status`: `... RUNNING pid 123, ...`)."""
        pids = {}
        for line in self.ctl("status").stdout.splitlines():
            parts = line.replace(",", " ").split()
            if len(parts) >= 4 and parts[0].startswith("gridbot:") and parts[1] == "RUNNING" and parts[2] == "pid":
                pids[parts[0].removeprefix("gridbot:")] = int(parts[3])
        return pids

    def gridbot(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "gridbot"), *args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def status(self) -> dict[str, Any]:
        result = self.gridbot("status", "--json", "--timeout", "2")
        return dict(json.loads(result.stdout)) if result.stdout.strip().startswith("{") else {}

    def reconcile(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`gridbot reconcile` against this system (exit 0 consistent, 1 not, 3 the statekeeper did not answer)."""
        return self.gridbot("reconcile", "--timeout", "15", timeout=timeout)

    def sim(self, verb: str, *args: Any, timeout: float = 5.0) -> Any:
        return call(self.control, verb, *args, timeout=timeout)

    def sim_or_none(self, verb: str, *args: Any) -> Any:
        try:
            return self.sim(verb, *args, timeout=1.0)
        except ControlError:
            return None

    def log(self, program: str) -> str:
        path = self.run_dir / "logs" / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self) -> str:
        """The programs' states and the tail of each log, for a failure message."""
        parts = [self.ctl("status").stdout]
        for program in PROGRAMS:
            tail = "\n".join(self.log(program).splitlines()[-15:])
            parts.append(f"--- {program}.log (tail)\n{tail}")
        return "\n".join(parts)

    def ready(self) -> dict[str, Any] | None:
        """The status once the system can trade: in sync, not halted, broker connected, every service beating."""
        status = self.status()
        services = status.get("services", {})
        ok = (
            status.get("in_sync") is True
            and status.get("halted") is False
            and status.get("broker", {}).get("connected") is True
            and all(services.get(n, {}).get("alive") for n in ("statekeeper", "executor", "strategy", "feed"))
        )
        return status if ok else None

    # ------------------------------------------------------------------------------------------------ stopping

    def our_processes(self) -> list[int]:
        """Every live process (not a zombie) whose environment carries this system's GRIDBOT_CONFIG."""
        marker = f"GRIDBOT_CONFIG={self.config_file}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found.append(int(entry.name))
        return found

    def supervisord_pid(self) -> int | None:
        try:
            return int((self.run_dir / "supervisord.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_all(self, timeout: float = 60.0) -> None:
        """``supervisorctl stop all``; assert every program stopped and no process of theirs is left."""
        pids = self.pids()
        result = self.ctl("stop", "all", timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        states = self.states()
        assert all(s in ("STOPPED", "EXITED") for s in states.values()), states
        left = [p for p in self.our_processes() if p != self.supervisord]
        assert left == [], f"processes left after stop all: {left} (programs were {pids})"

    def close(self) -> None:
        """Shut supervisord down and kill anything of this system still alive."""
        if self.started:
            self.ctl("shutdown", timeout=60)
            # Its pid file is gone once it begins to stop: wait on the pid read at start.
            pid = self.supervisord
            if pid is not None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.1)
        for pid in self.our_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
