"""The config loader: defaults, a user's file, GRIDBOT_CONFIG, refusals naming the key, live-port guard, secrets."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gridbot import config, logs
from gridbot.config import ConfigError, load

EXAMPLE = config.PROJECT_ROOT / "config" / "gridbot.example.toml"


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the environment nor a config/gridbot.toml in the working tree may leak into these tests."""
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "USER_FILE", tmp_path / "absent" / "gridbot.toml")


def user_file(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def defaults_toml() -> dict[str, Any]:
    with config.DEFAULTS_FILE.open("rb") as f:
        return tomllib.load(f)


# --- loading --------------------------------------------------------------------------------------------------


def test_defaults_load_and_point_at_the_embedded_sim() -> None:
    cfg = load()

    assert cfg.source == ""
    assert cfg.general.mode == "sim"
    assert cfg.general.lot_map == "config/lots.csv"
    assert cfg.broker.port == cfg.sim.broker_port
    assert cfg.broker.port not in config.LIVE_PORTS
    assert cfg.broker.allow_live is False
    assert (
        cfg.strategy.level0_buffer == "0.0025"
        and cfg.strategy.step == "0.01"
        and cfg.strategy.sell_markup == "0.01"
    )
    assert cfg.path(cfg.general.lot_map).is_file()


def test_every_default_key_is_a_config_field() -> None:
    # msgspec would refuse an extra key and a missing field; this names the section when they drift apart.
    cfg = msgspec.to_builtins(load())
    for section, values in defaults_toml().items():
        assert set(values) == set(cfg[section]), section


def test_a_users_file_overrides_one_key_and_keeps_the_rest(tmp_path: Path) -> None:
    path = user_file(tmp_path, "[broker]\nport = 7497\n")

    cfg = load(path)

    assert cfg.broker.port == 7497
    assert cfg.source == str(path)
    expected = msgspec.structs.replace(load(), broker=msgspec.structs.replace(load().broker, port=7497))
    assert msgspec.structs.replace(cfg, source="") == expected


def test_overrides_apply_last(tmp_path: Path) -> None:
    path = user_file(tmp_path, "[broker]\nport = 7497\n")
    cfg = load(path, overrides={"broker": {"port": 4100}, "strategy": {"queued_levels": 2}})
    assert (cfg.broker.port, cfg.strategy.queued_levels) == (4100, 2)


def test_gridbot_config_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = user_file(tmp_path, '[general]\nlog_level = "DEBUG"\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))

    cfg = load()

    assert cfg.general.log_level == "DEBUG"
    assert cfg.source == str(path)


def test_an_explicit_path_beats_gridbot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_VAR, str(user_file(tmp_path, "[broker]\nport = 4002\n", "env.toml")))
    assert load(user_file(tmp_path, "[broker]\nport = 7497\n", "arg.toml")).broker.port == 7497


def test_config_gridbot_toml_is_read_when_there_is_no_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = user_file(tmp_path, "[broker]\nport = 4002\n", "gridbot.toml")
    monkeypatch.setattr(config, "USER_FILE", path)
    assert load().broker.port == 4002


def test_the_example_file_loads_as_paper_tws_with_iex() -> None:
    cfg = load(EXAMPLE)

    assert cfg.general.mode == "paper"
    assert cfg.broker.port == 7497
    assert cfg.broker.allow_live is False
    assert cfg.feed.feed == "iex"
    assert cfg.feed.url == ""  # Alpaca's own stream, not the sim's


def test_the_example_shows_every_section_and_only_real_keys() -> None:
    defaults = defaults_toml()
    text = EXAMPLE.read_text()
    sections = re.findall(r"^\[(\w+)\]$", text, re.MULTILINE)
    assert sorted(sections) == sorted(defaults)
    # Each commented-out "# key = value" line must be a real key of its section with a value of the right type,
    # so uncommenting it can never fail.
    section = ""
    checked = 0
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif section and (m := re.fullmatch(r"# (\w+) = (.+)", line)):
            key, value = m[1], tomllib.loads(f"v = {m[2]}")["v"]
            assert key in defaults[section], f"[{section}] {key}"
            assert type(value) is type(defaults[section][key]), f"[{section}] {key}"
            load(EXAMPLE, overrides={section: {key: value}})
            checked += 1
    assert checked >= 10


# --- refusals -------------------------------------------------------------------------------------------------


def test_an_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = user_file(tmp_path, "[broker]\nprot = 7497\n")
    message = refusal(path=path)
    assert f"config file '{path}'" in message
    assert "unknown key 'broker.prot'" in message
    assert "gridbot.example.toml" in message


def test_an_unknown_section_is_refused_naming_it(tmp_path: Path) -> None:
    assert "unknown key 'brokr'" in refusal(path=user_file(tmp_path, "[brokr]\nport = 7497\n"))


def test_a_wrong_type_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = user_file(tmp_path, '[broker]\nport = "7497"\n')
    message = refusal(path=path)
    assert f"config file '{path}'" in message
    assert "broker.port" in message and "int" in message
    assert "$." not in message


def test_a_bad_choice_is_refused_naming_the_key(tmp_path: Path) -> None:
    message = refusal(path=user_file(tmp_path, '[feed]\nfeed = "IEX"\n'))
    assert "feed.feed" in message


def test_a_section_given_as_a_value_is_refused(tmp_path: Path) -> None:
    assert "'broker' must be a table like [broker]" in refusal(path=user_file(tmp_path, "broker = 7497\n"))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = user_file(tmp_path, "[broker\nport = 7497\n")
    assert f"config file '{path}' is not valid TOML" in refusal(path=path)


def test_a_missing_file_from_gridbot_config_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv(config.ENV_VAR, str(missing))
    message = refusal()
    assert f"'{missing}' does not exist" in message and config.ENV_VAR in message


@pytest.mark.parametrize("port", sorted(config.LIVE_PORTS))
def test_a_real_money_port_needs_allow_live(tmp_path: Path, port: int) -> None:
    path = user_file(tmp_path, f"[broker]\nport = {port}\n")
    message = refusal(path=path)
    assert f"broker.port {port} is a real-money port" in message
    assert "allow_live = true" in message

    allowed = user_file(tmp_path, f"[broker]\nport = {port}\nallow_live = true\n", "live.toml")
    assert load(allowed).broker.port == port


def test_live_mode_needs_allow_live(tmp_path: Path) -> None:
    message = refusal(path=user_file(tmp_path, '[general]\nmode = "live"\n'))
    assert "general.mode = 'live' needs broker.allow_live = true" in message


def test_max_live_sells_is_within_ibs_limit(tmp_path: Path) -> None:
    assert "strategy.max_live_sells must be 1..20" in refusal(overrides={"strategy": {"max_live_sells": 21}})


# --- secrets --------------------------------------------------------------------------------------------------

KEY_ID = "PKTESTKEYID0123456789"
SECRET = "s3cr3t-Never-Print-Me-0123456789abcdef"


def test_secrets_from_the_environment_never_appear_in_repr_or_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    cfg = load(EXAMPLE)

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    log = logs.setup("test-config", "DEBUG")
    try:
        log.info("config %r", cfg)
        log.debug("config %s from %s", msgspec.json.encode(cfg).decode(), cfg.source)
        logging.getLogger("gridbot.config").info("loaded %s", cfg)
        printed = capsys.readouterr().out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    assert config.alpaca_keys() == (KEY_ID, SECRET)  # the keys are there to be found...
    assert "config Config(" in printed  # ...and the config really was logged
    for text in (repr(cfg), str(cfg), msgspec.json.encode(cfg).decode(), printed):
        assert SECRET not in text
        assert KEY_ID not in text


def test_keys_come_from_dotenv_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    assert config.alpaca_keys() is None

    (tmp_path / ".env").write_text(
        f"# keys\nexport APCA_API_KEY_ID='{KEY_ID}'\nAPCA_API_SECRET_KEY=\"{SECRET}\"\n"
    )
    assert config.alpaca_keys() == (KEY_ID, SECRET)

    monkeypatch.setenv("APCA_API_SECRET_KEY", "from-env")
    assert config.alpaca_keys() == (KEY_ID, "from-env")
