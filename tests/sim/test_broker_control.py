"""The control endpoint over real ZeroMQ sockets, the broker's verbs, and `gridbot sim` on top of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import zmq

from gridbot import cli
from sim.broker.verbs import register_broker_verbs
from sim.control import ControlError, ControlServer, UsageError, call, check_loopback
from tests.sim.broker_harness import WAIT, BrokerThread, client_module, connect, run, tqqq, until


@pytest.fixture
def control(broker: BrokerThread) -> Iterator[tuple[ControlServer, str]]:
    async def start() -> tuple[ControlServer, str]:
        server = ControlServer("tcp://127.0.0.1:0")
        register_broker_verbs(server, broker.broker)

        async def slow_echo(*words: str) -> list[str]:
            await asyncio.sleep(0.01)
            return list(words)

        def explode() -> None:
            raise RuntimeError("boom")

        server.register("echo", slow_echo, "echo [WORDS...]")
        server.register("explode", explode)
        return server, await server.start()

    server, endpoint = broker.run(start())
    yield server, endpoint
    broker.run(server.stop())


def test_verbs_drive_the_broker(broker: BrokerThread, control: tuple[ControlServer, str]) -> None:
    _, ep = control
    assert call(ep, "time", timeout=WAIT) == "2025-06-02T14:00:00.000+00:00"
    assert call(ep, "time", "2025-06-02T11:00:00-04:00", timeout=WAIT) == "2025-06-02T15:00:00.000+00:00"
    assert call(ep, "price", "97.5", 300, timeout=WAIT)["price"] == "97.50"
    assert broker.call(lambda: broker.broker.engine.last.price if broker.broker.engine.last else None) == \
        pytest.approx(97.5)
    assert call(ep, "reject-next", timeout=WAIT) == 201
    assert broker.call(lambda: broker.broker.engine.reject_next) == 201
    assert call(ep, "connectivity", 1101, timeout=WAIT) == 0
    assert call(ep, "drop", timeout=WAIT) == 0
    assert call(ep, "orders", timeout=WAIT) == []
    assert call(ep, "echo", "a", "b", timeout=WAIT) == ["a", "b"]


def test_orders_and_requests_reports(broker: BrokerThread, control: tuple[ControlServer, str]) -> None:
    _, ep = control

    async def scenario() -> None:
        mod = client_module("ib_insync")
        ib = await connect("ib_insync", broker.port, client_id=5)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        trade = ib.placeOrder(contract, mod.LimitOrder("BUY", 3, 40.0, orderRef="report-me", outsideRth=True))
        await until(lambda: trade.orderStatus.status == "Submitted", "placed")
        ib.disconnect()

    run(scenario())
    [order] = call(ep, "orders", timeout=WAIT)
    assert {k: order[k] for k in ("client_id", "order_ref", "action", "quantity", "type", "limit", "tif",
                                  "outside_rth", "status")} == {
        "client_id": 5, "order_ref": "report-me", "action": "BUY", "quantity": 3, "type": "LMT", "limit": "40.00",
        "tif": "DAY", "outside_rth": True, "status": "Submitted"}
    assert order["history"][0]["time"] == "2025-06-02T14:00:00.000+00:00"
    requests = call(ep, "requests", 5, timeout=WAIT)
    assert requests[0]["request"] == "startApi" and requests[-1]["request"] == "disconnected"
    assert "placeOrder" in [r["request"] for r in requests]


def test_bad_requests_get_errors_and_the_server_survives(control: tuple[ControlServer, str]) -> None:
    _, ep = control
    with pytest.raises(ControlError, match="unknown verb 'fly'; verbs: .*price"):
        call(ep, "fly", timeout=WAIT)
    with pytest.raises(ControlError, match=r"outage: wrong number of arguments \(0\); usage: outage SECONDS"):
        call(ep, "outage", timeout=WAIT)
    with pytest.raises(ControlError, match="price: price 'abc' is not a number; usage: price P"):
        call(ep, "price", "abc", timeout=WAIT)
    with pytest.raises(ControlError, match="time: time 'yesterday' is not ISO 8601"):
        call(ep, "time", "yesterday", timeout=WAIT)
    with pytest.raises(ControlError, match="connectivity: connectivity code must be 1100, 1101 or 1102"):
        call(ep, "connectivity", 1234, timeout=WAIT)
    with pytest.raises(ControlError, match="explode: RuntimeError: boom"):
        call(ep, "explode", timeout=WAIT)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(ep)
    for raw in (b"not json", b'["verb"]', b'{"verb": "price", "args": "1"}'):
        sock.send(raw)
        assert sock.poll(int(WAIT * 1000))
        reply = json.loads(sock.recv())
        assert reply["ok"] is False and reply["error"]
    sock.close()
    assert call(ep, "echo", timeout=WAIT) == []


def test_register_refuses_duplicates_and_usage_errors_name_the_usage() -> None:
    server = ControlServer("tcp://127.0.0.1:0")

    def needs_positive(n: str) -> int:
        if int(n) <= 0:
            raise UsageError(f"n must be positive, was {n}")
        return int(n)

    server.register("n", needs_positive, "n POSITIVE")
    with pytest.raises(ValueError, match="already registered"):
        server.register("n", needs_positive)
    reply = asyncio.run(server.handle({"verb": "n", "args": ["-1"]}))
    assert reply == {"ok": False, "error": "n: n must be positive, was -1; usage: n POSITIVE"}
    assert asyncio.run(server.handle({"verb": "n", "args": ["2"]})) == {"ok": True, "result": 2}


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:7912", "tcp://192.168.1.5:7912", "udp://127.0.0.1:1"])
def test_control_endpoint_must_be_loopback(endpoint: str) -> None:
    with pytest.raises(ValueError, match="sim.control"):
        check_loopback(endpoint)


def test_no_reply_is_reported_naming_the_endpoint() -> None:
    with pytest.raises(ControlError, match="no reply from the sim control endpoint tcp://127.0.0.1:9 within 0.2s"):
        call("tcp://127.0.0.1:9", "status", timeout=0.2)


def test_gridbot_sim_command(control: tuple[ControlServer, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, ep = control
    assert cli.main(["sim", "--control", ep, "price", "97.25"]) == 0
    assert "price: 97.25" in capsys.readouterr().out
    assert cli.main(["sim", "--control", ep, "orders", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["sim", "--control", ep, "orders"]) == 0
    assert capsys.readouterr().out.strip() == "(no orders)"
    assert cli.main(["sim", "--control", ep, "connectivity", "42"]) == 1
    assert "connectivity code must be 1100, 1101 or 1102" in capsys.readouterr().err
    assert cli.main(["sim", "--control", "tcp://127.0.0.1:9", "--timeout", "0.2", "status"]) == 3
    assert "is it running?" in capsys.readouterr().err
