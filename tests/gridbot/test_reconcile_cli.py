"""`gridbot reconcile`: the real console script against a running statekeeper (real sockets, a broker-truth executor)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

from proto.messages import OpenOrderInfo
from tests.services.statekeeper.harness import free_port, statekeeper, write_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GRIDBOT = str(Path(sys.executable).with_name("gridbot"))


async def gridbot(*args: str) -> tuple[int, str, str]:
    env = dict(os.environ)
    env.pop("GRIDBOT_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        GRIDBOT,
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"gridbot {' '.join(args)} did not finish within 30 s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def open_order(key: str, side: str, quantity: int, limit: str, perm_id: int) -> OpenOrderInfo:
    return OpenOrderInfo(
        key=key,
        order_id=perm_id,
        perm_id=perm_id,
        client_id=0,
        symbol="TQQQ",
        side="BUY" if side == "BUY" else "SELL",
        quantity=quantity,
        limit=Decimal(limit),
        tif="GTC",
        outside_rth=True,
        status="Submitted",
    )


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


def test_consistent_then_a_manual_order_halts_with_its_plan_in_text_and_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            config = env.write_config(tmp_path / "gridbot.toml")

            code, out, err = await gridbot("--config", str(config), "reconcile")
            assert (code, out.splitlines()[0]) == (0, "consistent: the state and the broker agree"), err

            env.executor.extra_orders.append(open_order("", "BUY", 100, "50.00", 777))
            code, out, err = await gridbot("--config", str(config), "reconcile")

            assert code == 1, err
            assert out.startswith("NOT consistent: trading is halted")
            assert "  - foreign_order: BUY 100 @ 50.00 permId 777 is not the grid's" in out
            assert "  1. operator: cancel BUY 100 @ 50.00 permId 777 in TWS" in out
            assert env.state.halted

            code, out, err = await gridbot("--config", str(config), "reconcile", "--json")
            report = json.loads(out)
            assert code == 1 and report["consistent"] is False and report["type"] == "ReconcileReport"
            assert [f["kind"] for f in report["findings"] if not f["explained"]] == ["foreign_order"]

    run(scenario())


def test_apply_adopts_the_older_bots_ambiguous_sells_by_price(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            config = env.write_config(tmp_path / "gridbot.toml")
            # The older bot's SELLs (no orderRef) of 2 shares: levels 58-67 of the user's map all have 2 shares.
            env.executor.extra_orders.extend(
                [open_order("", "SELL", 2, "30.10", 801), open_order("", "SELL", 2, "30.40", 802)]
            )
            env.executor.position = 4

            code, out, _ = await gridbot("--config", str(config), "reconcile")
            assert code == 1 and "apply: adopt SELL 2 @ 30.40 permId 802 as level 58" in out

            code, out, err = await gridbot("--config", str(config), "reconcile", "--apply")

            assert code == 0, out + err
            assert out.splitlines()[0] == "consistent: the state and the broker agree (plan applied)"
            assert {(lot.level, lot.sell_perm_id) for lot in env.state.lots} == {(58, 802), (59, 801)}
            assert not env.state.halted

    run(scenario())


def test_a_statekeeper_that_does_not_answer_is_exit_3_naming_it(tmp_path: Path) -> None:
    port = free_port()
    values = {"bus": {"statekeeper": f"tcp://127.0.0.1:{port}"}, "general": {"run_dir": str(tmp_path)}}
    config = write_config(tmp_path / "gridbot.toml", values)

    code, _, err = asyncio.run(gridbot("--config", str(config), "reconcile", "--timeout", "0.5"))

    assert code == 3
    assert f"the statekeeper did not answer ReconcileRequest at tcp://127.0.0.1:{port} within 0.5 s" in err
