"""`gridbot sim status` as text: every section readable, no Python dict text, unknown keys still shown."""

from __future__ import annotations

import copy
from typing import Any

from gridbot.commands.sim import format_result
from sim.status_text import render_status

# The shape SimProgram.status() returns (taken from a running `python -m sim` with one alpaca-py client).
STATUS: dict[str, Any] = {
    "clock": {
        "time": "2025-04-30T14:23:06.000000Z",
        "ts_ns": 1746022986000000000,
        "mode": "driven by the prints",
        "resumed_after": None,
    },
    "market": {
        "source": "replay",
        "progress": {
            "file": "sim/data/TQQQ_1min_sample.csv.gz",
            "pass": 1,
            "bar": 8,
            "bars": 42228,
            "percent": 0.02,
            "bar_time": "2025-04-30T14:23:00.000000Z",
            "price_factor": "1",
        },
        "speed": 60.0,
        "paused": False,
        "finished": False,
        "prints": 72,
        "last_print": {"time": "2025-04-30T14:23:06.000000Z", "price": "51.57", "size": 26266},
        "next_print_time": "2025-04-30T14:23:12.000000Z",
        "behind_s": 0.0,
        "broker_errors": 0,
    },
    "broker": {"host": "127.0.0.1", "port": 41595, "account": "DU1234567"},
    "stream": {
        "url": "ws://127.0.0.1:34891/v2/iex",
        "urls": {
            "iex": "ws://127.0.0.1:34891/v2/iex",
            "sip": "ws://127.0.0.1:34891/v2/sip",
            "delayed_sip": "ws://127.0.0.1:34891/v2/delayed_sip",
        },
        "silent_for_s": 0.0,
        "faults": {"drops": 0, "silences": 0, "garbage": 1},
    },
    "control": "tcp://127.0.0.1:32915",
    "clients": {
        "stream": [
            {
                "peer": "127.0.0.1:50122",
                "feed": "iex",
                "authenticated": True,
                "subscriptions": {"trades": ["TQQQ"]},
                "user_agent": "APCA-PY/0.44.0",
                "connected_at": "2026-11-21T05:37:31+00:00",
                "frames_sent": 12,
                "messages_sent": 40,
                "write_buffer_bytes": 0,
            }
        ],
        "broker": [1, 7],
    },
    "account": {"session": "regular", "open_orders": 2, "position": 100, "cash": "994843.00", "last_price": "51.57"},
}


def test_every_section_is_one_labelled_readable_block() -> None:
    text = render_status(STATUS)

    assert text.splitlines() == [
        "clock     2025-04-30T14:23:06.000000Z (driven by the prints)",
        "market    replay: sim/data/TQQQ_1min_sample.csv.gz, pass 1, bar 8 of 42228 (0.02%) at "
        "2025-04-30T14:23:00.000000Z",
        "          running, speed 60x real time; 72 prints, last 51.57 x 26266 at 2025-04-30T14:23:06.000000Z",
        "          next print at 2025-04-30T14:23:12.000000Z",
        "broker    127.0.0.1:41595, account DU1234567",
        "stream    ws://127.0.0.1:34891/v2/iex",
        "          also ws://127.0.0.1:34891/v2/sip, ws://127.0.0.1:34891/v2/delayed_sip",
        "          faults injected: garbage 1",
        "control   tcp://127.0.0.1:32915",
        "clients   stream: 1",
        "            127.0.0.1:50122 on iex, trades TQQQ, 12 frames, APCA-PY/0.44.0, since 2026-11-21T05:37:31+00:00",
        "          broker: clientIds 1, 7",
        "account   session regular, 2 open orders, position 100, cash 994843.00, last price 51.57",
    ]
    assert "{" not in text and "[" not in text
    assert format_result("status", STATUS) == text  # what `gridbot sim status` prints without --json


def test_a_paused_resumed_path_with_no_clients_says_so() -> None:
    status = copy.deepcopy(STATUS)
    status["clock"]["resumed_after"] = "2025-06-02T14:00:04.000000Z"
    status["market"].update(
        source="path",
        progress={"file": "p.csv", "pass": 2, "row": 5, "rows": 41, "percent": 12.2, "last_time": None},
        paused=True,
        speed=0.0,
        last_print=None,
        next_print_time=None,
        behind_s=1.5,
        broker_errors=3,
    )
    status["stream"].update(silent_for_s=4.2, faults={"drops": 0, "silences": 0, "garbage": 0})
    status["clients"] = {"stream": [], "broker": []}

    lines = render_status(status).splitlines()

    assert lines[0] == "clock     2025-04-30T14:23:06.000000Z (driven by the prints), resumed after " \
        "2025-06-02T14:00:04.000000Z"
    assert lines[1:4] == [
        "market    path: p.csv, pass 2, row 5 of 41 (12.2%)",
        "          paused, speed 0 (as fast as possible); 72 prints",
        "          1.5 s behind; 3 broker errors (see the sim's log)",
    ]
    assert "          silent for 4.2 s more; faults injected: none" in lines
    assert "clients   stream: none" in lines and "          broker: none" in lines


def test_other_sources_and_unknown_keys_show_as_pairs_not_dict_text() -> None:
    status = copy.deepcopy(STATUS)
    status["market"].update(source="manual", progress={"prices_from": "gridbot sim price P [SIZE]"}, finished=True)
    status["extra"] = {"new_field": 3}

    text = render_status(status)

    assert "market    manual: prices_from gridbot sim price P [SIZE]" in text
    assert "          finished, speed 60x real time;" in text
    assert text.splitlines()[-1] == "extra     new_field 3"


def test_a_broker_only_status_keeps_the_flat_form() -> None:
    # `python -m sim.broker` registers its own `status`: a flat dict, already readable as key: value lines.
    flat = {"host": "127.0.0.1", "port": 4002, "clients": [1]}
    assert format_result("status", flat) == "host: 127.0.0.1\nport: 4002\nclients: [1]"
