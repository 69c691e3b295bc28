"""The main of every service: logging, signal handling and exit codes in one place.

    def main() -> None:
        cfg = load()
        bus.service.run("feed", lambda: serve(cfg), log_level=cfg.general.log_level)

``run`` sets up logging (gridbot.logs), runs ``main()`` (a coroutine function) on a fresh asyncio loop, and on
SIGTERM or SIGINT cancels its task: the service's ``await`` points raise CancelledError, so a service that awaits
only between messages (``await sub.recv(...)``) finishes the message in hand, runs its ``finally`` clean-up and
ends. Exit status: 0 when main returns or is stopped by a signal, 1 when it raises (logged with its traceback),
which makes supervisord restart it.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives in the loop iteration in which its future
completes (it returns the result instead; fixed in 3.12), and a service's loop would then run on until SIGKILL. So
a main still running ``recancel_after`` seconds after the signal is cancelled again, and again at that interval:
long enough for an honest clean-up (the strategy drains its commands in flight for 2 s), shorter than the 5 s
supervisord waits for the quickest programs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from gridbot import logs

EXIT_OK = 0
EXIT_FATAL = 1
# Seconds after a SIGTERM/SIGINT at which a main that is still running is cancelled again (see the docstring).
RECANCEL_AFTER_S = 3.0


def run(
    name: str,
    main: Callable[[], Coroutine[Any, Any, Any]],
    *,
    log_level: str = "INFO",
    recancel_after: float = RECANCEL_AFTER_S,
) -> NoReturn:
    """Run ``main()`` as the program ``name`` and exit with its status (see the module's docstring)."""
    log = logs.setup(name, log_level)
    try:
        code = asyncio.run(_supervise(name, main, log, recancel_after))
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        code = EXIT_OK
    logging.shutdown()
    sys.exit(code)


async def _supervise(
    name: str, main: Callable[[], Coroutine[Any, Any, Any]], log: logging.Logger, recancel_after: float
) -> int:
    task = asyncio.create_task(main(), name=f"{name}-main")
    signalled: list[str] = []
    loop = asyncio.get_running_loop()

    def recancel(signame: str, waited: float) -> None:
        if task.done():
            return
        log.warning("%s still running %.3g s after %s: cancelling it again (a library may have swallowed the "
                    "cancellation)", name, waited, signame)
        task.cancel()
        loop.call_later(recancel_after, recancel, signame, waited + recancel_after)

    def stop(signum: signal.Signals) -> None:
        if signalled:
            log.warning("%s again: still finishing", signum.name)
        else:
            log.info("%s received: finishing the message in hand, then stopping", signum.name)
            loop.call_later(recancel_after, recancel, signum.name, recancel_after)
        signalled.append(signum.name)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    log.info("%s started", name)
    try:
        await task
    except asyncio.CancelledError:
        if not signalled:
            log.error("%s: the main task was cancelled without a signal", name)
            return EXIT_FATAL
    except Exception:
        log.exception("%s: fatal error", name)
        return EXIT_FATAL
    log.info("%s stopped", name)
    return EXIT_OK
