"""A test's simulated Alpaca stream in its own process: the sim's real StreamServer, driven line by line on stdin.

``python -m tests.services.feed.stream_process [--no-sip] [--port P]`` prints ``{"port": P}`` once listening, then answers
each JSON command line on stdin with one JSON line on stdout:

- ``{"cmd": "prints", "prices": ["97.02", ...], "ts_ns": T, "step_ns": S, "raw": false}``: publish one print per
  price, at T, T+S, ...; with ``"raw": true`` the trades are written straight to the iex clients' sockets, so
  that "NaN" or "-1" reach the wire as the floats a bad venue would send;
- ``{"cmd": "pace", "count": N, "rate": R, "price": "97.00", "ts_ns": T}``: publish N prints at R per second
  (in batches every few milliseconds, as the sim's driver does), then answer with the seconds it took;
- ``{"cmd": "drop"}``, ``{"cmd": "silence", "seconds": S}``, ``{"cmd": "garbage"}``: the stream's faults;
- ``{"cmd": "clients"}``: the connected clients, as the server describes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from decimal import Decimal
from typing import Any

from sim.market.prints import Print
from sim.stream.server import StreamServer
from sim.stream.wire import frame, pack_trade

KEY, SECRET = "TESTKEY", "TESTSECRET"
PACE_BATCH_S = 0.005


class Driver:
    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self.next_id = 1

    def publish(self, prints: list[Print]) -> None:
        self.server.publish(prints, self.next_id)
        self.next_id += len(prints)

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        match cmd["cmd"]:
            case "prints":
                ts, step = int(cmd["ts_ns"]), int(cmd.get("step_ns", 1_000_000))
                prints = [Print(ts + i * step, Decimal(p), int(cmd.get("size", 100))) for i, p in enumerate(cmd["prices"])]
                if cmd.get("raw"):
                    return {"published": self.send_raw_trades(prints)}
                self.publish(prints)
                return {"published": len(prints)}
            case "pace":
                return await self.pace(int(cmd["count"]), float(cmd["rate"]), Decimal(cmd["price"]), int(cmd["ts_ns"]))
            case "drop":
                return {"dropped": self.server.drop()}
            case "silence":
                return {"silent_s": self.server.silence(float(cmd["seconds"]))}
            case "garbage":
                return {"clients": self.server.garbage()}
            case "clients":
                return {"clients": [c.describe() for c in self.server.clients()]}
        return {"error": f"unknown command {cmd['cmd']!r}"}

    def send_raw_trades(self, prints: list[Print]) -> int:
        """Write trades straight to every iex client, bypassing the sim's market model (quotes, bars), which
        rightly refuses impossible prices: this is how a bad venue print (NaN, zero, negative) reaches the wire."""
        channel = self.server.channels["iex"]
        packed = [pack_trade("TQQQ", p, self.next_id + i, "V") for i, p in enumerate(prints)]
        self.next_id += len(prints)
        for client in list(channel.clients):
            channel.send_raw(client, frame(packed), len(packed))
        return len(prints)

    async def pace(self, count: int, rate: float, price: Decimal, ts_ns: int) -> dict[str, Any]:
        start = time.monotonic()
        sent = 0
        cent = Decimal("0.01")
        while sent < count:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                # A gentle zig-zag of a few cents, well inside any jump band.
                batch = [
                    Print(ts_ns + i * 200_000, price + cent * (i % 7), 100 + i % 3) for i in range(sent, due)
                ]
                self.publish(batch)
                sent = due
            await asyncio.sleep(PACE_BATCH_S)
        return {"published": sent, "seconds": time.monotonic() - start}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-sip", action="store_true", help="the key's plan lacks SIP: /v2/sip answers 409")
    parser.add_argument("--port", type=int, default=0, help="the port to listen on (default: a free one)")
    args = parser.parse_args()
    server = StreamServer(time.time_ns, "TQQQ", KEY, SECRET, sip_entitled=not args.no_sip)
    port = await server.start("127.0.0.1", args.port)
    driver = Driver(server)
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        reply = await driver.handle(json.loads(line))
        print(json.dumps(reply), flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
