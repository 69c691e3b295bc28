"""The simulated exchange's control endpoint: a ZeroMQ REP socket on loopback, JSON requests, a verb registry.

Request ``{"verb": "price", "args": ["97.50"]}`` -> reply ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Parts of the sim register their verbs (handlers may be async and return anything
JSON can hold); ``gridbot sim <verb>`` and the tests talk to it through :func:`call`. A bad request gets an error
naming the verb and its usage; the server never dies on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

log = logging.getLogger("sim.control")

Handler = Callable[..., Any | Awaitable[Any]]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ControlError(Exception):
    """The control endpoint answered ok=false, or did not answer; the message says which and why."""


class UsageError(ValueError):
    """Raise from a handler when its arguments are wrong: the reply adds the verb's usage."""


@dataclass(frozen=True)
class Verb:
    name: str
    handler: Handler
    usage: str
    help: str


def check_loopback(endpoint: str) -> None:
    """Refuse a TCP endpoint off the loopback interface: the control endpoint has no authentication."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"control endpoint {endpoint!r} must look like tcp://127.0.0.1:PORT (config key sim.control)")
    host = urlsplit(endpoint).hostname or ""
    if host not in LOOPBACK_HOSTS and f"[{host}]" not in LOOPBACK_HOSTS:
        raise ValueError(
            f"control endpoint {endpoint!r} is not on the loopback interface; use tcp://127.0.0.1:PORT "
            "(config key sim.control)"
        )


class ControlServer:
    """Serve registered verbs on one REP socket inside the running asyncio loop."""

    def __init__(self, endpoint: str) -> None:
        check_loopback(endpoint)
        self.requested_endpoint = endpoint
        self.endpoint = endpoint
        self._verbs: dict[str, Verb] = {}
        self._ctx: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.register("help", self._help, usage="help", help="list the verbs and their usage")

    def register(self, verb: str, handler: Handler, usage: str = "", help: str = "") -> None:
        """Add a verb. ``usage`` is shown on bad arguments, e.g. ``price P [SIZE]``."""
        if verb in self._verbs:
            raise ValueError(f"control verb {verb!r} is already registered")
        self._verbs[verb] = Verb(verb, handler, usage or verb, help)

    @property
    def verbs(self) -> list[str]:
        return sorted(self._verbs)

    def _help(self) -> dict[str, str]:
        return {v.name: f"{v.usage}: {v.help}" if v.help else v.usage for v in sorted(self._verbs.values(),
                                                                                      key=lambda v: v.name)}

    async def start(self) -> str:
        """Bind and serve; return the bound endpoint (a ``:0`` port becomes the real one)."""
        self._ctx = zmq.asyncio.Context()
        self._socket = self._ctx.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        bind_to = self.requested_endpoint
        if bind_to.startswith("tcp://") and bind_to.endswith(":0"):
            bind_to = bind_to[:-2] + ":*"
        self._socket.bind(bind_to)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        log.info("control endpoint on %s", self.endpoint)
        return self.endpoint

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def _serve(self) -> None:
        assert self._socket is not None
        while True:
            raw = await self._socket.recv()
            reply = await self.handle_raw(raw)
            await self._socket.send(reply)

    async def handle_raw(self, raw: bytes) -> bytes:
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _dump({"ok": False, "error": f"request is not JSON ({e}); send {{\"verb\": ..., \"args\": [...]}}"})
        return _dump(await self.handle(request))

    async def handle(self, request: Any) -> dict[str, Any]:
        """Answer one decoded request (also usable in-process, without the socket)."""
        if not isinstance(request, dict) or not isinstance(request.get("verb"), str):
            return {"ok": False, "error": 'request must be an object {"verb": "...", "args": [...]}'}
        name = request["verb"]
        args = request.get("args", [])
        if not isinstance(args, list):
            return {"ok": False, "error": f"{name}: 'args' must be a list"}
        verb = self._verbs.get(name)
        if verb is None:
            return {"ok": False, "error": f"unknown verb {name!r}; verbs: {', '.join(self.verbs)}"}
        try:
            inspect.signature(verb.handler).bind(*args)
        except TypeError:
            return {"ok": False, "error": f"{name}: wrong number of arguments ({len(args)}); usage: {verb.usage}"}
        try:
            result = verb.handler(*args)
            if inspect.isawaitable(result):
                result = await result
            json.dumps(result)
        except (UsageError, ValueError) as e:
            return {"ok": False, "error": f"{name}: {e}; usage: {verb.usage}"}
        except Exception as e:  # the control server outlives any one verb
            log.exception("control verb %s failed", name)
            return {"ok": False, "error": f"{name}: {type(e).__name__}: {e}"}
        return {"ok": True, "result": result}


def _dump(reply: dict[str, Any]) -> bytes:
    try:
        return json.dumps(reply).encode()
    except (TypeError, ValueError) as e:
        return json.dumps({"ok": False, "error": f"result is not JSON: {e}"}).encode()


def call(endpoint: str, verb: str, *args: Any, timeout: float = 5.0) -> Any:
    """Send one verb to a control endpoint and return its result; raise ControlError on ok=false or no reply."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"verb": verb, "args": list(args)}).encode())
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise ControlError(f"no reply from the sim control endpoint {endpoint} within {timeout:g}s; is it running?")
        reply = json.loads(sock.recv())
    finally:
        sock.close(linger=0)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("result")


async def call_async(endpoint: str, verb: str, *args: Any, timeout: float = 5.0) -> Any:
    """:func:`call` without blocking the running event loop (runs it in a worker thread)."""
    return await asyncio.to_thread(call, endpoint, verb, *args, timeout=timeout)
