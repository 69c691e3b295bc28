"""The stream's protocol seen by a plain websockets client: greeting, auth rules, errors, paths, faults."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sim.market.prints import NS_PER_SECOND, Print
from sim.stream.server import StreamServer
from tests.sim.stream_helpers import EVENT_TIMEOUT, KEY, SECRET, run, start_stream, until

T0 = 1_748_872_800_000_000_000
AUTH = {"action": "auth", "key": KEY, "secret": SECRET}


async def recv(ws: ClientConnection, timeout: float = EVENT_TIMEOUT) -> list[dict[str, Any]]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, bytes), "Alpaca frames are binary"
    return msgpack.unpackb(raw)  # msgpack Timestamps (ext -1) stay Timestamps, nanoseconds kept


async def request(ws: ClientConnection, msg: Any) -> list[dict[str, Any]]:
    await ws.send(msgpack.packb(msg))
    return await recv(ws)


async def login(server: StreamServer, feed: str = "iex") -> ClientConnection:
    ws = await connect(server.url(feed), compression=None)
    assert await recv(ws) == [{"T": "success", "msg": "connected"}]
    assert await request(ws, AUTH) == [{"T": "success", "msg": "authenticated"}]
    return ws


def test_greeting_auth_and_subscription_ack_follow_alpaca() -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await login(server)
        ack = await request(ws, {"action": "subscribe", "trades": ["TQQQ"], "bars": ["*"]})
        assert ack == [
            {
                "T": "subscription",
                "trades": ["TQQQ"],
                "quotes": [],
                "bars": ["*"],
                "updatedBars": [],
                "dailyBars": [],
                "statuses": [],
                "lulds": [],
                "corrections": ["TQQQ"],
                "cancelErrors": ["TQQQ"],
            }
        ]
        ack = await request(ws, {"action": "unsubscribe", "bars": ["*"]})
        assert ack[0]["bars"] == [] and ack[0]["trades"] == ["TQQQ"]
        server.publish([Print(T0 + 1, Decimal("51.4135"), 7)], 42)
        (trade,) = await recv(ws)
        assert trade == {
            "T": "t",
            "S": "TQQQ",
            "i": 42,
            "x": "V",
            "p": 51.4135,
            "s": 7,
            "c": ["@"],
            "t": msgpack.Timestamp.from_unix_nano(T0 + 1),
            "z": "C",
        }
        await ws.close()
        await server.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("first", "then", "code"),
    [
        (None, {"action": "subscribe", "trades": ["TQQQ"]}, 401),
        (AUTH, AUTH, 403),
        (AUTH, {"action": "subscribe", "trades": "TQQQ"}, 400),
        (AUTH, {"action": "subscribe", "nonsense": ["TQQQ"]}, 400),
        (AUTH, {"action": "dance"}, 400),
        (AUTH, ["not", "a", "map"], 400),
        (AUTH, {"action": "subscribe", "trades": [f"S{i}" for i in range(31)]}, 405),
        (None, {"action": "auth", "key": KEY, "secret": "nope"}, 402),
    ],
)
def test_protocol_errors_carry_alpacas_codes_and_keep_the_connection(
    first: Any, then: Any, code: int
) -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await connect(server.url("iex"), compression=None)
        await recv(ws)
        if first is not None:
            await request(ws, first)
        (error,) = await request(ws, then)
        assert error["T"] == "error" and error["code"] == code and error["msg"]
        # The connection is still usable after the error (except 406/409, tested below).
        await ws.send(b"\xc1")  # not msgpack
        assert (await recv(ws))[0]["code"] == 400
        await ws.close()
        await server.stop()

    run(scenario())


def test_a_text_frame_is_a_syntax_error() -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await connect(server.url("iex"), compression=None)
        await recv(ws)
        await ws.send('{"action":"auth"}')
        assert (await recv(ws))[0]["code"] == 400
        await ws.close()
        await server.stop()

    run(scenario())


def test_a_second_login_with_the_same_key_gets_406_and_is_closed() -> None:
    async def scenario() -> None:
        server = await start_stream()
        first = await login(server)
        second = await connect(server.url("sip"), compression=None)
        await recv(second)
        assert await request(second, AUTH) == [
            {"T": "error", "code": 406, "msg": "connection limit exceeded"}
        ]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(second.recv(), 2)
        await first.close()
        await until(lambda: not server.clients(), what="the first client to go")
        third = await login(server)  # the key is free again once its connection is gone
        await third.close()
        await server.stop()

    run(scenario())


def test_sip_needs_an_entitled_key_else_409_and_closed() -> None:
    async def scenario() -> None:
        server = await start_stream(sip_entitled=False)
        ws = await connect(server.url("sip"), compression=None)
        await recv(ws)
        assert await request(ws, AUTH) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT)
        free = await login(server, "iex")  # iex and delayed_sip stay open to a free plan
        await free.close()
        await server.stop()

    run(scenario())


def test_no_auth_within_the_timeout_gets_404_and_is_closed() -> None:
    async def scenario() -> None:
        server = await start_stream(auth_timeout=0.2)
        ws = await connect(server.url("iex"), compression=None)
        await recv(ws)
        assert await recv(ws) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT)
        await server.stop()

    run(scenario())


def test_an_unknown_path_is_refused_with_http_404() -> None:
    async def scenario() -> None:
        server = await start_stream()
        with pytest.raises(InvalidStatus) as e:
            await connect(f"ws://127.0.0.1:{server.port}/v1beta1/boats")
        assert e.value.response.status_code == 404
        await server.stop()

    run(scenario())


def test_silence_mutes_data_but_keeps_the_connection_then_data_resumes() -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await login(server)
        await request(ws, {"action": "subscribe", "trades": ["TQQQ"]})
        server.silence(0.3)
        server.publish([Print(T0, Decimal("10"), 1)], 1)
        with pytest.raises(TimeoutError):
            await recv(ws, timeout=0.2)
        await asyncio.sleep(0.15)
        server.publish([Print(T0 + NS_PER_SECOND, Decimal("11"), 1)], 2)
        (trade,) = await recv(ws)
        assert trade["i"] == 2  # the print sent during the silence is lost, as on a mute real socket
        assert server.status()["faults"]["silences"] == 1
        await ws.close()
        await server.stop()

    run(scenario())


def test_garbage_sends_frames_no_client_can_parse_and_the_server_carries_on() -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await login(server)
        await request(ws, {"action": "subscribe", "trades": ["TQQQ"]})
        assert server.garbage() == 1
        frames = [await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT) for _ in range(5)]
        assert isinstance(frames[1], str)
        with pytest.raises(ValueError):
            msgpack.unpackb(frames[0])
        server.publish([Print(T0, Decimal("10"), 1)], 1)
        assert (await recv(ws))[0]["i"] == 1
        await ws.close()
        await server.stop()

    run(scenario())


def test_status_lists_the_connected_clients() -> None:
    async def scenario() -> None:
        server = await start_stream()
        ws = await login(server, "delayed_sip")
        await request(ws, {"action": "subscribe", "quotes": ["TQQQ"]})
        (client,) = server.status()["clients"]
        assert client["feed"] == "delayed_sip" and client["authenticated"]
        assert client["subscriptions"] == {"quotes": ["TQQQ"]}
        assert client["peer"].startswith("127.0.0.1:")
        assert server.status()["urls"]["sip"] == f"ws://127.0.0.1:{server.port}/v2/sip"
        await ws.close()
        await server.stop()

    run(scenario())


def test_a_client_that_stops_reading_is_disconnected_as_slow_and_the_stream_carries_on() -> None:
    async def scenario() -> None:
        server = await start_stream(max_buffer=256 * 1024)
        slow = await login(server)
        await request(slow, {"action": "subscribe", "trades": ["TQQQ"], "quotes": ["TQQQ"]})
        sent = 0
        while server.clients() and sent < 400_000:  # the client never reads again
            server.publish([Print(T0 + sent + i, Decimal("10"), 1) for i in range(500)], sent + 1)
            sent += 500
            await asyncio.sleep(0)
        assert not server.clients(), "the slow client was never dropped"
        again = await login(server)  # the server carries on; the key is free again
        await again.close()
        slow.transport.abort()  # it stopped reading, so it would wait for a close frame it cannot see
        await server.stop()

    run(scenario())
