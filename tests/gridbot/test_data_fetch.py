"""`gridbot data fetch` against a local server that speaks Alpaca's REST bars endpoint, pagination included.

The real alpaca-py client (StockHistoricalDataClient, pointed at the server with url_override) does the requests;
the server answers GET /v2/stocks/bars as Alpaca does (alpaca-protocol.md section 4): ``{"bars": {SYMBOL: [...]},
"next_page_token": ...}``, at most ``page_size`` bars a page, filtered by start/end (inclusive).
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from gridbot import config
from gridbot.backtest import bars as barfiles
from gridbot.cli import main

KEY, SECRET = "TESTKEY", "TESTSECRET"


def minute_bars(days: list[str], per_day: int = 120) -> list[dict[str, Any]]:
    """``per_day`` minute bars from 13:30 UTC (09:30 ET in summer) of each day, prices walking by a cent."""
    out = []
    for d in days:
        start = datetime.fromisoformat(f"{d}T13:30:00+00:00")
        for i in range(per_day):
            price = Decimal("50.00") + Decimal(i % 37) / 100
            out.append({
                "t": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "o": float(price), "h": float(price + Decimal("0.05")), "l": float(price - Decimal("0.03")),
                "c": float(price + Decimal("0.01")), "v": 1000 + i, "n": 10, "vw": float(price),
            })
    return out


class FakeAlpaca:
    """GET /v2/stocks/bars with pagination; ``fail`` makes every request answer 500 (an outage)."""

    def __init__(self, bars: list[dict[str, Any]], page_size: int = 50) -> None:
        self.bars = bars
        self.page_size = page_size
        self.requests: list[dict[str, str]] = []
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                fake.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append({"path": url.path, **query})
        if h.headers.get("APCA-API-KEY-ID") != KEY or h.headers.get("APCA-API-SECRET-KEY") != SECRET:
            return self.reply(h, 401, {"message": "unauthorized."})
        if self.fail:
            return self.reply(h, 500, {"message": "internal server error"})
        if url.path != "/v2/stocks/bars" or query.get("symbols") != "TQQQ":
            return self.reply(h, 404, {"message": "not found"})
        start = datetime.fromisoformat(query["start"])
        end = datetime.fromisoformat(query["end"])
        chosen = [b for b in self.bars if start <= datetime.fromisoformat(b["t"].replace("Z", "+00:00")) <= end]
        offset = int(query.get("page_token") or 0)
        size = min(self.page_size, int(query.get("limit", 10000)))
        page = chosen[offset : offset + size]
        token = str(offset + size) if offset + size < len(chosen) else None
        self.reply(h, 200, {"bars": {"TQQQ": page}, "next_page_token": token, "currency": "USD"})

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_dotenv", lambda: {})
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "gridbot.toml"
    path.write_text("")
    return path


@pytest.fixture
def server() -> Iterator[FakeAlpaca]:
    fake = FakeAlpaca(minute_bars(["2025-06-02", "2025-06-03", "2025-06-04", "2025-06-12", "2025-06-13"]))
    yield fake
    fake.close()


def fetch(cfg: Path, server: FakeAlpaca, out: Path, first: str, last: str) -> int:
    return main(["--config", str(cfg), "data", "fetch", "--symbol", "TQQQ", "--from", first, "--to", last,
                 "--timeframe", "1Min", "--out", str(out), "--url", server.url])


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_every_page_is_fetched_into_the_sample_layout(keys: None, cfg: Path, server: FakeAlpaca, tmp_path: Path) -> None:
    out = tmp_path / "tqqq.csv"

    assert fetch(cfg, server, out, "2025-06-02", "2025-06-04") == 0

    got = rows(out)
    assert got[0] == ["Datetime", "Symbol", "Open", "High", "Low", "Close", "Volume"]
    assert len(got) == 1 + 3 * 120
    first = server.bars[0]
    assert got[1] == ["2025-06-02 13:30:00", "TQQQ", "50.0", "50.05", "49.97", "50.01", "1000"]
    assert got[-1][0] == "2025-06-04 15:29:00" and first["t"] == "2025-06-02T13:30:00Z"
    # 360 bars at 50 a page: the client followed next_page_token through 8 pages.
    pages = [r for r in server.requests if r["path"] == "/v2/stocks/bars"]
    assert len(pages) == 8 and [r.get("page_token") for r in pages[1:3]] == ["50", "100"]
    assert {(r["timeframe"], r["feed"], r["adjustment"]) for r in pages} == {("1Min", "sip", "raw")}
    assert pages[0]["start"].startswith("2025-06-02T04:00:00")  # midnight US/Eastern (EDT), in UTC


def test_an_interrupted_download_resumes_after_the_last_saved_bar(
    keys: None, cfg: Path, server: FakeAlpaca, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tqqq.csv"
    # Two chunks of a week: 06-02 .. 06-08 and 06-09 .. 06-13. The second fails.
    original = server.handle

    def fail_on_second_chunk(h: BaseHTTPRequestHandler) -> None:
        server.fail = "start=2025-06-09" in h.path
        original(h)

    server.handle = fail_on_second_chunk  # type: ignore[method-assign]
    assert fetch(cfg, server, out, "2025-06-02", "2025-06-13") == 2
    err = capsys.readouterr().err
    assert "Alpaca refused the bars" in err and "360 bars were saved, run the same command again" in err
    assert len(rows(out)) == 1 + 360

    server.handle = original  # type: ignore[method-assign]
    server.fail = False
    server.requests.clear()
    assert fetch(cfg, server, out, "2025-06-02", "2025-06-13") == 0

    got = rows(out)
    assert len(got) == 1 + 5 * 120
    assert len({r[0] for r in got[1:]}) == 600  # no bar twice
    assert server.requests[0]["start"].startswith("2025-06-04T15:30:00")  # right after the last saved bar

    # Once more: only what follows the last bar is asked for, and nothing is added.
    server.requests.clear()
    before = out.read_text()
    assert fetch(cfg, server, out, "2025-06-02", "2025-06-13") == 0
    assert [r["start"][:19] for r in server.requests] == ["2025-06-13T15:30:00"]
    assert out.read_text() == before and "nothing new" in capsys.readouterr().out


def test_the_fetched_file_is_a_backtest_input(keys: None, cfg: Path, server: FakeAlpaca, tmp_path: Path) -> None:
    out = tmp_path / "tqqq.csv"
    fetch(cfg, server, out, "2025-06-02", "2025-06-04")

    data = barfiles.load(out)

    assert data.timeframe == "1Min" and len(data.bars) == 360
    assert data.bars[0].ts_ns == int(datetime(2025, 6, 2, 13, 30, tzinfo=UTC).timestamp()) * 10**9
    assert main(["--config", str(cfg), "backtest", str(out)]) == 0


def test_without_keys_nothing_is_asked(cfg: Path, server: FakeAlpaca, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(config, "_dotenv", lambda: {})
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)

    assert fetch(cfg, server, tmp_path / "x.csv", "2025-06-02", "2025-06-04") == 2
    assert "set APCA_API_KEY_ID and APCA_API_SECRET_KEY" in capsys.readouterr().err
    assert server.requests == []


def test_wrong_keys_and_a_foreign_file_are_refused_clearly(
    keys: None, cfg: Path, server: FakeAlpaca, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    foreign = tmp_path / "notes.csv"
    foreign.write_text("a,b\n1,2\n")
    assert fetch(cfg, server, foreign, "2025-06-02", "2025-06-04") == 2
    assert "is not a bar file of this layout" in capsys.readouterr().err
    assert foreign.read_text() == "a,b\n1,2\n"

    monkeypatch.setenv("APCA_API_SECRET_KEY", "WRONG")
    assert fetch(cfg, server, tmp_path / "y.csv", "2025-06-02", "2025-06-04") == 2
    assert "unauthorized" in capsys.readouterr().err
