"""Every message round-trips; bad payloads raise typed errors a receiver can count and survive."""

from __future__ import annotations

import logging
import typing
from decimal import Decimal

import msgspec
import pytest

from proto import codec, envelope, messages
from proto.messages import MESSAGE_TYPES, Message


def _example(tp: typing.Any) -> typing.Any:
    """A non-default example value of a field type, so a round trip proves every field survives."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return 7
    if tp is float:
        return 1.5
    if tp is str:
        return "x y"
    if tp is bool:
        return True
    if tp is Decimal:
        return Decimal("97.0213")
    if origin is typing.Literal:
        return args[-1]
    if origin is list:
        return [_example(args[0])]
    if origin is dict:
        return {_example(args[0]): _example(args[1])}
    if origin in (typing.Union, __import__("types").UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _example(non_none[0])
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _build(tp)
    raise AssertionError(f"no example for {tp!r}")


def _build(cls: type[msgspec.Struct]) -> msgspec.Struct:
    hints = typing.get_type_hints(cls)
    return cls(**{name: _example(hints[name]) for name in cls.__struct_fields__})


ALL = sorted(MESSAGE_TYPES.values(), key=lambda c: c.__name__)


def test_union_covers_every_message_type():
    union_members = set(typing.get_args(messages.AnyMessage))
    assert union_members == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_message_round_trips(cls):
    msg = _build(cls)
    data = codec.encode(msg)
    back = codec.decode(data)
    assert back == msg
    assert type(back) is cls
    assert codec.to_builtins(msg)["type"] == cls.__name__


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_message_is_frozen(cls):
    msg = _build(cls)
    with pytest.raises(AttributeError):
        msg.ts_ns = 1  # type: ignore[misc]


def test_decimal_travels_as_exact_string():
    tick = messages.Tick(symbol="TQQQ", price=Decimal("0.1") + Decimal("0.2"), size=1, exchange_ts_ns=1,
                         receive_ts_ns=2, seq=1)
    raw = msgspec.msgpack.decode(codec.encode(tick))
    assert raw["price"] == "0.3"
    assert codec.decode(codec.encode(tick)).price == Decimal("0.3")


def test_unknown_tag_raises_unknown_message_type():
    data = msgspec.msgpack.encode({"type": "FromTheFuture", "x": 1})
    with pytest.raises(codec.UnknownMessageType) as e:
        codec.decode(data)
    assert e.value.type_name == "FromTheFuture"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1garbage",  # not msgpack
        msgspec.msgpack.encode([1, 2, 3]),  # not an object
        msgspec.msgpack.encode({"type": "Tick", "symbol": "TQQQ"}),  # missing fields
        msgspec.msgpack.encode({"type": "Tick", "symbol": "TQQQ", "price": "abc", "size": 1,
                                "exchange_ts_ns": 1, "receive_ts_ns": 1, "seq": 1}),  # bad decimal
        msgspec.msgpack.encode({"no_type": 1}),
    ],
)
def test_malformed_payload_raises_malformed_message(payload):
    with pytest.raises(codec.MalformedMessage):
        codec.decode(payload)


def test_unknown_fields_from_a_newer_sender_are_ignored():
    raw = msgspec.to_builtins(_build(messages.Heartbeat))
    raw["added_in_v2"] = 42
    assert codec.decode(msgspec.msgpack.encode(raw)) == _build(messages.Heartbeat)


def test_envelope_round_trip_and_errors():
    hdr = envelope.Header(sender="feed", seq=3, schema=envelope.SCHEMA_VERSION, ts_ns=5, incarnation=9)
    msg = _build(messages.Tick)
    env = envelope.unpack(envelope.pack("md.tick.TQQQ", hdr, msg))
    assert (env.topic, env.header, env.msg) == ("md.tick.TQQQ", hdr, msg)
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack([b"md.tick.TQQQ", b"x"])
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack([b"t", b"\xc1", codec.encode(msg)])
    wrong = envelope.Header(sender="old", seq=1, schema=99, ts_ns=0)
    with pytest.raises(envelope.EnvelopeError, match="schema 99"):
        envelope.unpack(envelope.pack("t", wrong, msg))


def test_command_envelope_round_trip():
    hdr = envelope.CommandHeader(sender="strategy", command_id="abc", schema=envelope.SCHEMA_VERSION, ts_ns=1)
    msg = _build(messages.PlaceOrder)
    env = envelope.unpack_command(envelope.pack_command(hdr, msg))
    assert env.header == hdr and env.msg == msg


def test_a_receive_loop_counts_bad_messages_and_carries_on(caplog):
    """The pattern every receiver uses: a DecodeError is counted and logged; the next message is handled."""
    good = codec.encode(_build(messages.Heartbeat))
    stream = [good, b"\xc1", msgspec.msgpack.encode({"type": "Nope"}), good]
    handled: list[Message] = []
    errors = 0
    log = logging.getLogger("test.receiver")
    for data in stream:
        try:
            handled.append(codec.decode(data))
        except codec.DecodeError as e:
            errors += 1
            log.warning("dropped a bad message: %s", e)
    assert len(handled) == 2 and errors == 2
    assert "unknown message type 'Nope'" in caplog.text
