"""One call on many hives at once, each within a deadline: what every hive answered, or why it did not.

A hive that gives no answer in time counts as unreachable (503 HIVE_UNREACHABLE), like one that
refused or failed (the ApiError it gave); nothing waits on one slow hive. Anything but an ApiError
is a bug and is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from services.queen.hives.client import HiveUnreachable
from services.queen.hives.registry import Health, HiveInfo, HiveRegistry
from shared.errors import ApiError

__all__ = ["ask_every_hive", "fan_out"]

T = TypeVar("T")


async def fan_out(
    hives: Iterable[HiveInfo], call: Callable[[HiveInfo], Awaitable[T]], deadline: float | None
) -> dict[str, T | ApiError]:
    """`call` on every hive at once, each within `deadline` (None: the client's own timeouts): each
    hive's answer, or the ApiError it gave (HIVE_UNREACHABLE when it gave none in time)."""

    async def one(hive: HiveInfo) -> T:
        if deadline is None:
            return await call(hive)
        try:
            async with asyncio.timeout(deadline):
                return await call(hive)
        except TimeoutError:
            raise HiveUnreachable(hive.hive_id, f"no answer within {deadline:g}s") from None

    asked = list(hives)
    results = await asyncio.gather(*(one(h) for h in asked), return_exceptions=True)
    answers: dict[str, T | ApiError] = {}
    for hive, result in zip(asked, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, ApiError):
            raise result
        answers[hive.hive_id] = result
    return answers


async def ask_every_hive(
    registry: HiveRegistry, call: Callable[[HiveInfo], Awaitable[T]], deadline: float
) -> tuple[list[tuple[HiveInfo, T]], list[str]]:
    """`call` on every registered hive (`fan_out`): the answers, and the hives that gave none (failed,
    too slow, or already known to be down, which are not asked at all; those first)."""
    known = registry.all()
    asked = [h for h in known if h.health is not Health.UNHEALTHY]
    unreachable = [h.hive_id for h in known if h.health is Health.UNHEALTHY]
    results = await fan_out(asked, call, deadline)
    answers: list[tuple[HiveInfo, T]] = []
    for hive in asked:
        result = results[hive.hive_id]
        if isinstance(result, ApiError):
            unreachable.append(hive.hive_id)
        else:
            answers.append((hive, result))
    return answers, unreachable
