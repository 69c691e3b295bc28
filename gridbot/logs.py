"""One logging setup for every program: readable lines on stdout (supervisord keeps a file per program)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"


def setup(program: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger once for ``program`` and return the program's logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Client libraries are chatty at INFO (every farm-status message); keep their warnings.
    for noisy in ("ib_insync", "ib_async", "websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(program)
