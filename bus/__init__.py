"""The ZeroMQ runtime every service uses: publish and subscribe through the bus, send and serve commands.

- ``Publisher`` / ``Subscriber``: pub/sub through the bus forwarder (``python -m bus``), numbered messages,
  heartbeats, gap and restart detection, peer liveness.
- ``CommandClient`` / ``CommandServer``: DEALER -> ROUTER commands with timeouts, idempotent retries and a reply
  cache; ``CommandTimeout`` when a server never answers.
- ``bus.service.run(name, main)``: the main of every service (logging, SIGTERM, exit codes).

docs/bus.md explains the protocol and how to watch the bus from Python.
"""

from bus import service
from bus.command_client import BadReply, CommandClient, CommandError, CommandTimeout
from bus.command_server import CommandServer
from bus.publisher import Publisher
from bus.subscriber import Subscriber

__all__ = [
    "BadReply",
    "CommandClient",
    "CommandError",
    "CommandServer",
    "CommandTimeout",
    "Publisher",
    "Subscriber",
    "service",
]
