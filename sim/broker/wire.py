"""TWS API framing: the handshake, length-prefixed NUL-separated messages, and how values become fields.

Every message after the client's ``API\\0`` greeting is ``>I`` length + payload; a payload is fields each ended by
NUL, the first field the message id. See ../shared/docs/tws-protocol.md section 2.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from decimal import Decimal

# What TWS sends for "no value": the clients parse these back to their unset defaults.
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE = "1.7976931348623157E308"

GREETING = b"API\0"
# A client message longer than this is garbage, not an order (TWS's own limit is 0xFFFFFF).
MAX_MESSAGE_BYTES = 0xFFFFFF


class ProtocolError(Exception):
    """The peer broke the framing; the connection cannot continue."""


def field(value: object) -> str:
    """Render one value the way TWS does: bools as 0/1, None as empty, Decimals and ints as plain text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if "\0" in text:
        raise ValueError(f"a field may not contain NUL: {text!r}")
    return text


def encode(fields: Iterable[object]) -> bytes:
    """Frame one message: each field NUL-terminated, the whole prefixed with its length."""
    payload = "".join(field(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def handshake_reply(server_version: int, connection_time: str) -> bytes:
    """The server's first message: exactly two fields, the chosen version and the connection time."""
    return encode([server_version, connection_time])


def parse_version_range(text: str) -> tuple[int, int]:
    """Parse the client's ``v157..176[ options]`` into (min, max)."""
    spec = text.split(" ", 1)[0]
    if not spec.startswith("v"):
        raise ProtocolError(f"handshake: expected 'vMIN..MAX', got {text!r}")
    low, sep, high = spec[1:].partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise ProtocolError(f"handshake: bad version range {text!r}") from None
    return lo, hi


class FrameReader:
    """Split a byte stream into message payloads (the handshake greeting first, then length-prefixed frames)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._greeted = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete payloads now available (the greeting's version text first)."""
        self._buffer += data
        out: list[bytes] = []
        if not self._greeted:
            if len(self._buffer) < len(GREETING):
                if not GREETING.startswith(self._buffer):
                    raise ProtocolError(f"handshake: expected {GREETING!r}, got {self._buffer[:16]!r}")
                return out
            if not self._buffer.startswith(GREETING):
                raise ProtocolError(f"handshake: expected {GREETING!r}, got {self._buffer[:16]!r}")
            self._buffer = self._buffer[len(GREETING) :]
            self._greeted = True
        while len(self._buffer) >= 4:
            (size,) = struct.unpack(">I", self._buffer[:4])
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
            if len(self._buffer) < 4 + size:
                break
            out.append(self._buffer[4 : 4 + size])
            self._buffer = self._buffer[4 + size :]
        return out


def split_fields(payload: bytes) -> list[str]:
    """Split a payload into its fields (the trailing NUL leaves one empty element, dropped as the clients do)."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def decimal_text(value: Decimal | None) -> str:
    """A price as TWS prints it in order messages (UNSET when there is none)."""
    return UNSET_DOUBLE if value is None else format(value, "f")
