"""The dispatcher: one command in flight per key, no re-sending while the state has not caught up."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

from bus.command_client import CommandTimeout
from core.strategy import Command
from proto.messages import CancelOrder, CommandAccepted, CommandRejected, Message, PlaceOrder
from services.strategy.dispatch import Dispatcher

L0 = PlaceOrder(key="tqgrid1 c1 L0 BUY", symbol="TQQQ", side="BUY", quantity=94, limit=Decimal("100.25"), tif="DAY")
CANCEL_L0 = CancelOrder(key="tqgrid1 c1 L0 BUY")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Executor:
    """Answers each command after ``gate`` opens; records what it was sent."""

    def __init__(self, reply: Message | Exception | None = None) -> None:
        self.received: list[Command] = []
        self.gate = asyncio.Event()
        self.reply = reply if reply is not None else CommandAccepted(key=L0.key, order_id=1, perm_id=11)

    async def __call__(self, cmd: Command) -> Message:
        self.received.append(cmd)
        await self.gate.wait()
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5.0))


async def settle(d: Dispatcher) -> None:
    await asyncio.wait_for(d.drain(1.0), 2.0)


def test_ten_submissions_of_one_key_while_in_flight_send_it_once() -> None:
    async def scenario() -> None:
        executor = Executor()
        d = Dispatcher(executor, settle=5.0)

        for _ in range(10):
            d.submit([L0], state_seq=1)
        await asyncio.sleep(0)
        executor.gate.set()
        await settle(d)

        assert executor.received == [L0]
        assert d.skipped_in_flight == 9

    run(scenario())


def test_an_accepted_place_waits_until_the_state_shows_it_or_the_settle_time() -> None:
    async def scenario() -> None:
        executor = Executor()
        executor.gate.set()
        clock = Clock()
        d = Dispatcher(executor, settle=1.0, settle_accepted=5.0, clock=clock)
        d.submit([L0], state_seq=1)
        await settle(d)

        # Newer states that do not show the order yet do not bring the same command back.
        assert d.submit([L0], state_seq=2) == []
        assert d.submit([L0], state_seq=3) == []
        clock.now += 5.1
        assert d.submit([L0], state_seq=3) == [L0]
        await settle(d)
        # Once the state lists the key, the memory ends: if it is wanted again later (after a cancel), it goes.
        assert d.submit([], state_seq=4, live={L0.key}) == []
        assert d.submit([L0], state_seq=5) == [L0]
        await settle(d)
        assert len(executor.received) == 3

    run(scenario())


def test_an_accepted_cancel_waits_until_the_key_is_gone_from_the_state() -> None:
    async def scenario() -> None:
        executor = Executor()
        executor.gate.set()
        d = Dispatcher(executor, settle=1.0, settle_accepted=60.0)
        d.submit([CANCEL_L0], state_seq=1, live={L0.key})
        await settle(d)

        assert d.submit([CANCEL_L0], state_seq=2, live={L0.key}) == []
        d.submit([], state_seq=3, live=set())
        assert d.submit([CANCEL_L0], state_seq=4, live={L0.key}) == [CANCEL_L0]
        await settle(d)

    run(scenario())


def test_a_cancel_after_a_place_of_the_same_key_is_not_held_back() -> None:
    async def scenario() -> None:
        executor = Executor()
        executor.gate.set()
        d = Dispatcher(executor, settle=5.0)
        d.submit([L0], state_seq=1)
        await settle(d)

        assert d.submit([CANCEL_L0], state_seq=1) == [CANCEL_L0]
        await settle(d)

    run(scenario())


def test_a_timed_out_command_goes_again_at_the_next_decision_under_the_same_key() -> None:
    async def scenario() -> None:
        executor = Executor(reply=CommandTimeout("no reply", "strategy-1", 4))
        executor.gate.set()
        replies: list[Message | None] = []
        d = Dispatcher(executor, settle=5.0, on_reply=lambda cmd, reply: replies.append(reply))
        d.submit([L0], state_seq=1)
        await settle(d)

        assert d.submit([L0], state_seq=1) == [L0]
        await settle(d)
        assert [c.key for c in executor.received] == [L0.key, L0.key]
        assert replies == [None, None]

    run(scenario())


def test_a_rejection_is_reported_and_not_repeated_at_once() -> None:
    async def scenario() -> None:
        rejected = CommandRejected(reason="broker disconnected", key=L0.key)
        executor = Executor(reply=rejected)
        executor.gate.set()
        replies: list[Message | None] = []
        clock = Clock()
        d = Dispatcher(executor, settle=5.0, on_reply=lambda cmd, reply: replies.append(reply), clock=clock)
        d.submit([L0], state_seq=1)
        await settle(d)

        assert replies == [rejected]
        assert d.submit([L0], state_seq=1) == []
        clock.now += 5.1
        assert d.submit([L0], state_seq=1) == [L0]
        await settle(d)

    run(scenario())


def test_a_failing_send_does_not_stop_the_dispatcher() -> None:
    async def scenario() -> None:
        executor = Executor(reply=RuntimeError("boom"))
        executor.gate.set()
        d = Dispatcher(executor, settle=5.0)
        d.submit([L0], state_seq=1)
        await settle(d)

        assert d.in_flight() == set()
        assert d.submit([L0], state_seq=1) == [L0]
        await settle(d)

    run(scenario())
