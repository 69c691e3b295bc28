"""`gridbot`: the operator's command line. Each subcommand lives in its own module under gridbot/commands/.

A command module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gridbot.config import ConfigError

# One module per subcommand (or family of subcommands); order is the order of `gridbot --help`.
COMMAND_MODULES = [
    "ladder",
    "sim",
    "tap",
    "status",
    "halt",
    "monitor",
    "reset",
    "alert",
    "history",
    "reconcile",
    "backtest",
    "data",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridbot", description="TQQQ grid-trading system")
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"gridbot.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"gridbot: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
