"""The frames around every message.

Published (PUB -> bus XSUB -> bus XPUB -> SUB), three frames::

    [topic, header, payload]

- ``topic``: UTF-8 dotted name (``md.tick.TQQQ``, ``order.event``, ...; see proto.topics). ZeroMQ filters
  subscriptions on its prefix, so it travels in a frame of its own.
- ``header``: msgpack ``Header``: ``sender`` (the service name), ``seq`` (per sender and topic, 1, 2, 3 ... with no
  gaps: a subscriber that sees a jump knows it lost messages and resynchronises; counted per topic because
  subscribers filter by topic prefix, see docs/bus.md), ``schema`` (SCHEMA_VERSION of the
  sender; a receiver refuses a version it does not know), ``ts_ns`` (send time, UTC ns), ``incarnation`` (the
  sender's start time: a restarted sender begins again at seq 1, which is not a gap).
- ``payload``: msgpack of one tagged message (proto.messages).

Commands (DEALER -> ROUTER; the ROUTER sees an identity frame first), two frames each way::

    request: [command_header, payload]      reply: [command_header, payload]

``CommandHeader.command_id`` names the request; a retry re-sends the same id (and the same payload) and the server
answers a repeat from its cache instead of executing it twice; the reply echoes the id.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from proto.codec import DecodeError, MalformedMessage, decode, encode
from proto.messages import Message

SCHEMA_VERSION = 1


class Header(msgspec.Struct, frozen=True, array_like=True):
    sender: str
    seq: int
    schema: int
    ts_ns: int
    incarnation: int = 0


class CommandHeader(msgspec.Struct, frozen=True, array_like=True):
    sender: str
    command_id: str
    schema: int
    ts_ns: int
    attempt: int = 1


class EnvelopeError(MalformedMessage):
    """The frames around a message are wrong (count, header, schema version)."""


_header_decoder = msgspec.msgpack.Decoder(Header)
_command_header_decoder = msgspec.msgpack.Decoder(CommandHeader)
_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Envelope:
    topic: str
    header: Header
    msg: Message


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    header: CommandHeader
    msg: Message


def pack(topic: str, header: Header, msg: Message) -> list[bytes]:
    """Frames for a published message."""
    return [topic.encode(), _encoder.encode(header), encode(msg)]


def unpack(frames: list[bytes]) -> Envelope:
    """Parse a published message's frames; raise a DecodeError subclass on anything wrong."""
    if len(frames) != 3:
        raise EnvelopeError(f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic_b, header_b, payload = frames
    try:
        topic = topic_b.decode()
        header = _header_decoder.decode(header_b)
    except (UnicodeDecodeError, msgspec.DecodeError) as e:
        raise EnvelopeError(f"bad topic or header: {e}") from None
    _check_schema(header.schema, header.sender)
    return Envelope(topic, header, decode(payload))


def pack_command(header: CommandHeader, msg: Message) -> list[bytes]:
    return [_encoder.encode(header), encode(msg)]


def unpack_command(frames: list[bytes]) -> CommandEnvelope:
    """Parse a command or reply (without the ROUTER's identity frame)."""
    if len(frames) != 2:
        raise EnvelopeError(f"expected 2 frames [command_header, payload], got {len(frames)}")
    try:
        header = _command_header_decoder.decode(frames[0])
    except msgspec.DecodeError as e:
        raise EnvelopeError(f"bad command header: {e}") from None
    _check_schema(header.schema, header.sender)
    return CommandEnvelope(header, decode(frames[1]))


def _check_schema(schema: int, sender: str) -> None:
    if schema != SCHEMA_VERSION:
        raise EnvelopeError(
            f"sender {sender!r} speaks schema {schema}, this program {SCHEMA_VERSION}; run one version everywhere"
        )


__all__ = [
    "SCHEMA_VERSION",
    "CommandEnvelope",
    "CommandHeader",
    "DecodeError",
    "Envelope",
    "EnvelopeError",
    "Header",
    "pack",
    "pack_command",
    "unpack",
    "unpack_command",
]
