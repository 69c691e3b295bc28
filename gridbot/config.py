"""Configuration: tracked defaults, overlaid by the user's TOML file, validated by key.

Lookup order: ``$GRIDBOT_CONFIG`` if set, else ``config/gridbot.toml`` if present (the user's file, untracked),
else only the tracked defaults (``config/defaults.toml``: the embedded simulated exchange). A user's file holds only
the keys it changes. Unknown keys and wrong types are refused with the key's dotted name.

Secrets never live here: Alpaca keys come from the environment (``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``,
optionally from a ``.env`` file at the project root) through :func:`alpaca_keys`, and are never logged.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PROJECT_ROOT / "config" / "defaults.toml"
USER_FILE = PROJECT_ROOT / "config" / "gridbot.toml"
ENV_VAR = "GRIDBOT_CONFIG"

# Ports a real-money TWS (7496) or IB Gateway (4001) listens on.
LIVE_PORTS = frozenset({7496, 4001})


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message names the file and the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class General(_Section, frozen=True):
    symbol: str
    mode: Literal["sim", "paper", "live"]
    run_dir: str
    lot_map: str
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Bus(_Section, frozen=True):
    xsub: str
    xpub: str
    executor: str
    statekeeper: str
    heartbeat_interval: float
    heartbeat_misses: int
    command_timeout: float
    command_retries: int


class Broker(_Section, frozen=True):
    host: str
    port: int
    client_id: int
    allow_live: bool
    connect_timeout: float
    reconnect_initial: float
    reconnect_max: float
    max_messages_per_second: int
    immediate_order_timeout: float
    ack_timeout: float
    max_live_buys: int
    probe_interval: float


class Feed(_Section, frozen=True):
    feed: Literal["iex", "sip", "delayed_sip"]
    url: str
    data_timeout: float
    stale_after: float
    jump_band: float
    status_interval: float
    jump_confirm: int
    queue_limit: int


class Sim(_Section, frozen=True):
    broker_port: int
    stream_port: int
    control: str
    source: Literal["replay", "path", "walk", "manual"]
    file: str
    speed: float
    start: str
    loop: bool
    seed: int
    prints_per_bar: int
    max_wait: float
    walk_price: str
    walk_volatility: float
    walk_interval: float
    sip_entitled: bool
    account: str
    starting_cash: float
    partial_fills: bool
    api_key: str
    api_secret: str


class Strategy(_Section, frozen=True):
    max_tick_age: float
    max_live_sells: int
    level0_buffer: str
    step: str
    sell_markup: str
    queued_levels: int


class Statekeeper(_Section, frozen=True):
    state_file: str
    journal: str
    external_shares: int
    reconcile_retry: float


class Alerts(_Section, frozen=True):
    command: list[str]
    command_timeout: float
    repeat_after: float


class Backtest(_Section, frozen=True):
    minute_prints: int
    hour_prints: int
    day_prints: int
    extremes: Literal["auto", "rule", "seeded"]
    seed: int
    splits: str


class Config(_Section, frozen=True):
    general: General
    bus: Bus
    broker: Broker
    feed: Feed
    sim: Sim
    strategy: Strategy
    statekeeper: Statekeeper
    alerts: Alerts
    backtest: Backtest
    # Where the user's overrides came from ("" = defaults only); for messages, not a key in the files.
    source: str = ""

    def path(self, relative: str) -> Path:
        """Resolve a path from the config against the project root (absolute paths pass through)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def run_dir(self) -> Path:
        return self.path(self.general.run_dir)

    def run_path(self, relative: str) -> Path:
        """Resolve a path relative to the run directory."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.run_dir / p


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist; create it or unset {ENV_VAR}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file '{path}' is not valid TOML: {e}") from None


def _merge(base: dict[str, Any], override: dict[str, Any], path: Path, prefix: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"config file '{path}': unknown key '{dotted}'; see config/gridbot.example.toml")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config file '{path}': '{dotted}' must be a table like [{dotted}]")
            merged[key] = _merge(base[key], value, path, dotted + ".")
        else:
            merged[key] = value
    return merged


def _user_file() -> Path | None:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return USER_FILE if USER_FILE.exists() else None


def load(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load the configuration: defaults, then the user's file (``path`` or the lookup order), then ``overrides``.

    ``overrides`` is a nested dict like ``{"broker": {"port": 4100}}``, used by tests and command-line flags.
    """
    data = _read_toml(DEFAULTS_FILE)
    user = Path(path) if path is not None else _user_file()
    if user is not None:
        data = _merge(data, _read_toml(user), user)
    if overrides:
        data = _merge(data, overrides, Path("<overrides>"))
    data["source"] = str(user) if user is not None else ""
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        where = user if user is not None else DEFAULTS_FILE
        # msgspec names the key as `$.section.key`; make it the dotted name a user writes.
        raise ConfigError(f"config file '{where}': {str(e).replace('$.', '')}") from None
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    where = cfg.source or str(DEFAULTS_FILE)
    if cfg.broker.port in LIVE_PORTS and not cfg.broker.allow_live:
        raise ConfigError(
            f"config file '{where}': broker.port {cfg.broker.port} is a real-money port; "
            "set broker.allow_live = true to trade real money, or use 7497 (TWS paper) / 4002 (Gateway paper)"
        )
    if cfg.general.mode == "live" and not cfg.broker.allow_live:
        raise ConfigError(f"config file '{where}': general.mode = 'live' needs broker.allow_live = true")
    if not 1 <= cfg.strategy.max_live_sells <= 20:
        raise ConfigError(f"config file '{where}': strategy.max_live_sells must be 1..20 (IB allows 20 per side)")
    if cfg.bus.heartbeat_interval <= 0:
        raise ConfigError(f"config file '{where}': bus.heartbeat_interval must be positive")


def _dotenv() -> dict[str, str]:
    env_file = PROJECT_ROOT / ".env"
    values: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def alpaca_keys() -> tuple[str, str] | None:
    """Return (key id, secret) from the environment or ``.env``; None when unset. Never log the result."""
    dot = _dotenv()
    key = os.environ.get("APCA_API_KEY_ID") or dot.get("APCA_API_KEY_ID")
    secret = os.environ.get("APCA_API_SECRET_KEY") or dot.get("APCA_API_SECRET_KEY")
    if key and secret:
        return key, secret
    return None
