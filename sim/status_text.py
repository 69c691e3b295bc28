"""The sim's `status` as text an operator reads (``gridbot sim status``); ``--json`` prints the dict itself.

A pure function of the dict :meth:`sim.program.SimProgram.status` returns: one labelled section per line (clock,
market, broker, stream, control, clients, account), continuation lines indented under the label. Keys it does not
know are shown as ``key value`` pairs, so a field added to the status is never silently hidden.
"""

from __future__ import annotations

from typing import Any

LABEL_WIDTH = 9


def render_status(status: dict[str, Any]) -> str:
    """Return ``status`` as aligned text, one section per label."""
    sections: list[tuple[str, list[str]]] = [
        ("clock", [_clock(status.get("clock") or {})]),
        ("market", _market(status.get("market") or {})),
        ("broker", [_broker(status.get("broker") or {})]),
        ("stream", _stream(status.get("stream") or {})),
        ("control", [str(status.get("control", "-"))]),
        ("clients", _clients(status.get("clients") or {})),
    ]
    if "account" in status:
        sections.append(("account", [_account(status["account"] or {})]))
    known = {"clock", "market", "broker", "stream", "control", "clients", "account"}
    sections += [(key, [_pairs(value)]) for key, value in status.items() if key not in known]
    lines = []
    for label, body in sections:
        for i, text in enumerate(body):
            lines.append(f"{label if i == 0 else '':<{LABEL_WIDTH}} {text}".rstrip())
    return "\n".join(lines)


def _clock(clock: dict[str, Any]) -> str:
    text = f"{clock.get('time', '?')} ({clock.get('mode', '?')})"
    if clock.get("resumed_after"):
        text += f", resumed after {clock['resumed_after']}"
    return text


def _market(market: dict[str, Any]) -> list[str]:
    state = "finished" if market.get("finished") else "paused" if market.get("paused") else "running"
    speed = market.get("speed")
    pace = "0 (as fast as possible)" if speed == 0 else f"{speed:g}x real time" if speed is not None else "?"
    first = f"{market.get('source', '?')}: {_progress(market.get('progress') or {})}"
    second = f"{state}, speed {pace}; {market.get('prints', 0)} prints"
    last = market.get("last_print")
    if last:
        second += f", last {last['price']} x {last['size']} at {last['time']}"
    third = []
    if market.get("next_print_time"):
        third.append(f"next print at {market['next_print_time']}")
    if market.get("behind_s"):
        third.append(f"{market['behind_s']} s behind")
    if market.get("broker_errors"):
        third.append(f"{market['broker_errors']} broker errors (see the sim's log)")
    return [first, second] + (["; ".join(third)] if third else [])


def _progress(progress: dict[str, Any]) -> str:
    """Replay and path sources count bars or rows; other sources describe themselves in key-value pairs."""
    for unit, total in (("bar", "bars"), ("row", "rows")):
        if unit in progress and total in progress:
            text = f"{progress.get('file', '?')}, pass {progress.get('pass', '?')}, {unit} {progress[unit]} of "
            text += f"{progress[total]} ({progress.get('percent', '?')}%)"
            when = progress.get("bar_time") or progress.get("last_time")
            if when:
                text += f" at {when}"
            factor = progress.get("price_factor")
            if factor not in (None, "1"):
                text += f", prices x {factor}"
            return text
    return _pairs(progress)


def _broker(broker: dict[str, Any]) -> str:
    return f"{broker.get('host', '?')}:{broker.get('port', '?')}, account {broker.get('account', '?')}"


def _stream(stream: dict[str, Any]) -> list[str]:
    lines = [str(stream.get("url", "-"))]
    others = [url for url in (stream.get("urls") or {}).values() if url != stream.get("url")]
    if others:
        lines.append("also " + ", ".join(others))
    notes = []
    if stream.get("silent_for_s"):
        notes.append(f"silent for {stream['silent_for_s']} s more")
    faults = {k: v for k, v in (stream.get("faults") or {}).items() if v}
    notes.append("faults injected: " + (_pairs(faults) if faults else "none"))
    lines.append("; ".join(notes))
    return lines


def _clients(clients: dict[str, Any]) -> list[str]:
    stream_clients = clients.get("stream") or []
    lines = [f"stream: {len(stream_clients) or 'none'}"]
    for c in stream_clients:
        subs = "; ".join(f"{ch} {','.join(symbols)}" for ch, symbols in (c.get("subscriptions") or {}).items())
        auth = "" if c.get("authenticated") else ", not authenticated"
        lines.append(
            f"  {c.get('peer', '?')} on {c.get('feed', '?')}{auth}, {subs or 'no subscriptions'}, "
            f"{c.get('frames_sent', 0)} frames, {c.get('user_agent') or 'no user agent'}, "
            f"since {c.get('connected_at', '?')}"
        )
    broker_clients = clients.get("broker") or []
    lines.append("broker: " + (f"clientIds {', '.join(map(str, broker_clients))}" if broker_clients else "none"))
    return lines


def _account(account: dict[str, Any]) -> str:
    return (
        f"session {account.get('session', '?')}, {account.get('open_orders', 0)} open orders, "
        f"position {account.get('position', 0)}, cash {account.get('cash', '?')}, "
        f"last price {account.get('last_price') or '-'}"
    )


def _pairs(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)
