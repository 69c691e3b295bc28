"""The bus itself: a stateless XSUB/XPUB switch between every publisher and every subscriber.

Publishers connect to the XSUB endpoint, subscribers to the XPUB endpoint; subscriptions travel upstream so a
publisher sends only what somebody wants. libzmq's ``zmq_proxy_steerable`` does the forwarding in C on a thread
of its own; the control socket (PAIR over inproc) lets the owning thread ask for statistics and stop it.
"""

from __future__ import annotations

import itertools
import struct
import threading
from dataclasses import dataclass

import zmq

from bus.sockets import DEFAULT_HWM

_control_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    """Messages and bytes through each side since start (multipart frames count one each, as libzmq counts)."""

    from_publishers: int
    from_publishers_bytes: int
    to_publishers: int
    to_publishers_bytes: int
    from_subscribers: int
    from_subscribers_bytes: int
    to_subscribers: int
    to_subscribers_bytes: int


class Forwarder:
    """Bind ``xsub`` and ``xpub`` and forward between them on a background thread until ``stop()``.

    ``tcp://127.0.0.1:*`` binds a free port; ``xsub_endpoint`` / ``xpub_endpoint`` then name the bound ones.
    High-water marks (``hwm`` messages per peer) on both sides: the XPUB drops what a slow subscriber cannot
    take rather than block the switch, and a full XSUB queue makes publishers drop (and count) instead.
    """

    def __init__(self, xsub: str, xpub: str, *, hwm: int = DEFAULT_HWM, ctx: zmq.Context[zmq.Socket[bytes]] | None = None):
        self._own_ctx = ctx is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if ctx is None else ctx
        self._frontend = self._ctx.socket(zmq.XSUB)
        self._backend = self._ctx.socket(zmq.XPUB)
        self._control_address = f"inproc://bus-forwarder-control-{next(_control_ids)}"
        self._control = self._ctx.socket(zmq.PAIR)
        self._proxy_control = self._ctx.socket(zmq.PAIR)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        for sock in (self._frontend, self._backend, self._control, self._proxy_control):
            sock.setsockopt(zmq.LINGER, 0)
        self._frontend.setsockopt(zmq.RCVHWM, hwm)
        self._frontend.setsockopt(zmq.SNDHWM, hwm)
        self._backend.setsockopt(zmq.SNDHWM, hwm)
        self._backend.setsockopt(zmq.RCVHWM, hwm)
        try:
            self.xsub_endpoint = _bind(self._frontend, xsub, "publishers' (bus.xsub)")
            self.xpub_endpoint = _bind(self._backend, xpub, "subscribers' (bus.xpub)")
            self._proxy_control.bind(self._control_address)
            self._control.connect(self._control_address)
        except BaseException:
            self._close_sockets()
            raise

    def start(self) -> None:
        """Start forwarding on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("this forwarder was already started; create a new one")
        self._thread = threading.Thread(target=self._run, name="bus-forwarder", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the forwarding thread to end (it ends on stop() or on a fatal error); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def statistics(self, timeout: float = 1.0) -> ForwarderStats | None:
        """Ask the running switch for its counters; None if it does not answer within ``timeout`` seconds."""
        if not self.running:
            return None
        self._control.send(b"STATISTICS")
        if not self._control.poll(int(timeout * 1000)):
            return None
        frames = self._control.recv_multipart()
        values = [struct.unpack("=Q", frame)[0] for frame in frames]
        return ForwarderStats(*values)

    def stop(self, timeout: float = 5.0) -> ForwarderStats | None:
        """Stop forwarding, close the sockets and return the final counters (None if unavailable)."""
        stats = None
        if self.running:
            stats = self.statistics()
            self._control.send(b"TERMINATE")
            self.wait(timeout)
        self._close_sockets()
        return stats

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._frontend, self._backend, None, self._proxy_control)
        except zmq.ContextTerminated:
            pass
        except BaseException as e:  # reported by the owner, which decides to exit non-zero
            self.error = e

    def _close_sockets(self) -> None:
        for sock in (self._control, self._proxy_control, self._frontend, self._backend):
            if not sock.closed:
                sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()


def _bind(sock: zmq.Socket[bytes], endpoint: str, role: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise OSError(
            f"bus: cannot bind the {role} endpoint {endpoint!r}: {e}; is another bus running, "
            "or is the endpoint wrong (e.g. tcp://127.0.0.1:7920)?"
        ) from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)
