"""The slot queue on its own: arrival order, the size limit, positions, leaving while waiting."""

from __future__ import annotations

import asyncio

from services.hive.downloads.slots import SlotQueue


class Positions:
    def __init__(self) -> None:
        self.latest: dict[str, int | None] = {}

    def __call__(self, key: str, position: int | None) -> None:
        self.latest[key] = position


async def settle() -> None:
    for _ in range(5):  # let woken waiters run; no timing involved
        await asyncio.sleep(0)


def test_slots_go_in_arrival_order_and_never_exceed_the_size() -> None:
    async def go() -> list[str]:
        positions = Positions()
        slots = SlotQueue(2, positions)
        order: list[str] = []
        release = {key: asyncio.Event() for key in "abcde"}

        async def holder(key: str) -> None:
            await slots.acquire(key)
            order.append(key)
            assert slots.active <= 2
            await release[key].wait()
            await slots.leave(key, held=True)

        for key in "abcde":
            slots.join(key)
        tasks = [asyncio.create_task(holder(key)) for key in "edcba"]  # started out of order
        await settle()
        assert order == ["a", "b"] and slots.active == 2
        for key in "bacde":
            release[key].set()
            await settle()
        await asyncio.gather(*tasks)
        assert slots.active == 0 and slots.waiting == []
        return order

    assert asyncio.run(go()) == ["a", "b", "c", "d", "e"]


def test_positions_count_only_those_that_will_wait() -> None:
    async def go() -> None:
        positions = Positions()
        slots = SlotQueue(2, positions)
        for key in "abcd":
            slots.join(key)
        assert positions.latest == {"a": None, "b": None, "c": 1, "d": 2}
        await slots.acquire("a")
        assert positions.latest == {"a": None, "b": None, "c": 1, "d": 2}
        await slots.acquire("b")
        assert positions.latest["c"] == 1 and positions.latest["d"] == 2
        await slots.leave("c", held=False)  # cancelled while queued
        assert positions.latest["d"] == 1 and slots.waiting == ["d"]

    asyncio.run(go())


def test_leaving_the_queue_lets_the_next_in_line_take_the_slot() -> None:
    async def go() -> None:
        slots = SlotQueue(1, Positions())
        for key in "abc":
            slots.join(key)
        await slots.acquire("a")
        c = asyncio.create_task(slots.acquire("c"))
        await settle()
        await slots.leave("b", held=False)
        await slots.leave("a", held=True)
        await asyncio.wait_for(c, timeout=5)
        assert slots.active == 1 and slots.waiting == []

    asyncio.run(go())


def test_a_waiter_cancelled_in_acquire_can_leave_cleanly() -> None:
    async def go() -> None:
        slots = SlotQueue(1, Positions())
        slots.join("a")
        slots.join("b")
        await slots.acquire("a")
        b = asyncio.create_task(slots.acquire("b"))
        await settle()
        b.cancel()
        await asyncio.gather(b, return_exceptions=True)
        await slots.leave("b", held=False)
        slots.join("c")
        await slots.leave("a", held=True)
        await asyncio.wait_for(slots.acquire("c"), timeout=5)
        assert slots.active == 1

    asyncio.run(go())
