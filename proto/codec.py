"""Encode and decode messages (msgpack), with typed errors a receiver counts and logs without dying.

One Encoder and one typed Decoder, built once and reused (msgspec's asyncio-kv example).
"""

from __future__ import annotations

from typing import Any

import msgspec

from proto.messages import MESSAGE_TYPES, AnyMessage, Message


class DecodeError(Exception):
    """A received message could not be decoded; the receiver counts it, logs it and carries on."""


class UnknownMessageType(DecodeError):
    """The payload names a message type this program does not know (a newer sender, or garbage)."""

    def __init__(self, type_name: object) -> None:
        super().__init__(f"unknown message type {type_name!r}; upgrade this program or check the sender")
        self.type_name = type_name


class MalformedMessage(DecodeError):
    """The payload is not a valid message (bad msgpack, missing field, wrong field type)."""


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(AnyMessage)
_raw_decoder = msgspec.msgpack.Decoder()


def encode(msg: Message) -> bytes:
    """Serialise a message to msgpack bytes."""
    return _encoder.encode(msg)


def decode(data: bytes) -> Message:
    """Deserialise msgpack bytes to a message; raise UnknownMessageType or MalformedMessage."""
    try:
        msg: Message = _decoder.decode(data)
        return msg
    except msgspec.ValidationError as e:
        raise _classify(data, e) from None
    except msgspec.DecodeError as e:
        raise MalformedMessage(f"not a msgpack message: {e}") from None


def _classify(data: bytes, error: msgspec.ValidationError) -> DecodeError:
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError:
        return MalformedMessage(str(error))
    if isinstance(raw, dict):
        type_name = raw.get("type")
        if type_name is not None and type_name not in MESSAGE_TYPES:
            return UnknownMessageType(type_name)
        return MalformedMessage(f"{type_name or 'message without a type'}: {error}")
    return MalformedMessage(f"payload is a {type(raw).__name__}, not a message object")


def to_builtins(msg: Message) -> dict[str, Any]:
    """Return the message as plain JSON-able data (Decimals as strings), with its ``type``."""
    data: dict[str, Any] = msgspec.to_builtins(msg)
    return data


def to_json(msg: Message) -> bytes:
    return msgspec.json.encode(msg)
