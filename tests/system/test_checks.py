"""The system tests' own checks catch what they are meant to catch (they are pure functions of the broker's log)."""

from __future__ import annotations

from typing import Any

from tests.system import checks


def order(ref: str, start: int, end: int | None, filled: int = 0, action: str = "BUY", perm: int = 1,
          fills: tuple[tuple[int, str, str], ...] = ()) -> dict[str, Any]:
    history = [{"ts_ns": start, "status": "Submitted"}]
    if end is not None:
        history.append({"ts_ns": end, "status": "Filled" if filled else "Cancelled"})
    return {"order_ref": ref, "perm_id": perm, "filled": filled, "action": action, "history": history,
            "status": history[-1]["status"],
            "fills": [{"shares": s, "price": p, "commission": c} for s, p, c in fills]}


def test_two_live_orders_in_one_slot_are_caught_even_when_nested() -> None:
    log = [order("tqgrid1 c1 L2 BUY", 0, 100, perm=1), order("tqgrid1 c1 L2 BUY a2", 10, 20, perm=2),
           order("tqgrid1 c1 L2 BUY a3", 30, None, perm=3)]
    problems = checks.duplicates(log)
    assert len(problems) == 2 and all("live at the same time" in p for p in problems)


def test_a_replacement_after_a_cancel_and_a_key_filled_twice() -> None:
    assert checks.duplicates([order("tqgrid1 c1 L2 BUY", 0, 10), order("tqgrid1 c1 L2 BUY", 10, None)]) == []
    twice = [order("tqgrid1 c1 L2 BUY", 0, 10, filled=5, perm=1), order("tqgrid1 c1 L2 BUY", 20, 30, filled=5, perm=2)]
    assert checks.duplicates(twice) == ["key 'tqgrid1 c1 L2 BUY' filled in 2 orders (permIds [1, 2])"]


def test_a_lost_fill_shows_as_a_disagreement() -> None:
    log = [
        order("tqgrid1 c1 L0 BUY", 0, 1, filled=10, fills=((10, "100.00", "1.00"),)),
        order("tqgrid1 c1 L0 SELL 100.00", 1, 5, filled=10, action="SELL", perm=2, fills=((10, "101.00", "1.00"),)),
        order("tqgrid1 c1 L1 BUY", 2, 3, filled=8, perm=3, fills=((8, "99.00", "1.00"),)),
    ]
    status = {
        "lots": [{"buy_key": "tqgrid1 c1 L1 BUY", "quantity": 8, "sold": 0, "sell_key": "k", "sell": "parked"}],
        "realized_pnl": "8.00",  # 1010 - 1000 - 2
        "position": {"broker": 8},
    }
    assert checks.disagreements(status, log) == []
    missed_sell = dict(status, lots=[*status["lots"], {"buy_key": "tqgrid1 c1 L0 BUY", "quantity": 10, "sold": 0,
                                                       "sell_key": "tqgrid1 c1 L0 SELL 100.00", "sell": "live"}],
                       realized_pnl="0")
    problems = checks.disagreements(missed_sell, log)
    assert any(p.startswith("lots ") for p in problems) and any("realized P&L 0" in p for p in problems)
