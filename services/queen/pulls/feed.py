"""PullFeed: one pull's stream as its clients see it. Pure Python (asyncio only to wake readers).

The feed holds the latest event of every hive of the pull and, once every hive has ended, the
pull's one terminal event; nothing per client. A client remembers the last id it was sent and takes
whatever is newer, in id order, so a slow reader skips to the newest state of each hive and never
holds memory (README, "Fleet pulls", the stream).

Ids survive a queen restart without a database: an event's id is the sum over the pull's hives of
the last event id relayed from each hive's download (those ids strictly increase and persist on the
hives), so it strictly increases with every event; the terminal event is that sum + 1 once every
hive has ended, the same number whichever queen computes it. Nothing goes out until every hive has
given its current state (or `prime` is called when the wait runs out); then the current states go
out in the order the hives made them, each with one more id than the one before and the last with
the sum. A client resuming at id L after a restart thus gets no id it had, and the hives whose
downloads moved since (they add at least their number to the sum, and made the newest states) are
among the ones it gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from services.queen.pulls.plan import UNKNOWN, HiveProgress, PullTotals, totals_of
from shared.models import TERMINAL_EVENT_OF, EventType, ProgressEvent

__all__ = ["PullFeed"]


class PullFeed:
    def __init__(self, pull_id: str, downloads: Mapping[str, str], extra: Mapping[str, Any] | None = None) -> None:
        """`downloads`: hive_id -> download_id; `extra` is added to every payload (orchestrator_id, commit)."""
        self.pull_id = pull_id
        self.downloads = dict(downloads)
        self.extra = dict(extra or {})
        self.primed = False
        self.terminal: ProgressEvent | None = None
        self._last_ids = dict.fromkeys(self.downloads, 0)
        self._hive_events: dict[str, ProgressEvent] = {}  # each hive's latest event as the hive sent it
        self._progress: dict[str, HiveProgress] = {}
        self._sent: dict[str, ProgressEvent] = {}  # each hive's latest event as the feed's clients get it
        self._changed = asyncio.Event()

    # -- what the hives send ---------------------------------------------------------------

    def publish(self, hive_id: str, event: ProgressEvent) -> None:
        """A hive's event of its download (relayed); older ones and any after it ended are dropped."""
        if hive_id not in self._last_ids or event.download_id != self.downloads[hive_id] or self.terminal is not None:
            return
        current = self._progress.get(hive_id)
        if event.id <= self._last_ids[hive_id] or (current is not None and current.ended):
            return
        self._last_ids[hive_id] = event.id
        self._hive_events[hive_id] = event
        self._progress[hive_id] = HiveProgress.from_event(hive_id, event)
        if not self.primed:
            if len(self._hive_events) == len(self.downloads):
                self.prime()
            return
        self._send(hive_id, self.sum())
        self._finish_if_ended()
        self._changed.set()

    def prime(self) -> None:
        """Start sending: every hive's current state now, even if some have given none yet."""
        if self.primed:
            return
        self.primed = True
        ready = sorted(self._hive_events, key=lambda h: (str(self._hive_events[h].data.get("emitted_at") or ""), h))
        top = self.sum()
        for offset, hive_id in enumerate(ready):
            self._send(hive_id, top - (len(ready) - 1 - offset))
        self._finish_if_ended()
        self._changed.set()

    def sum(self) -> int:
        return sum(self._last_ids.values())

    def last_id(self, hive_id: str) -> int:
        """The last event id relayed from this hive's download (0: none yet)."""
        return self._last_ids.get(hive_id, 0)

    def hive_progress(self, hive_id: str) -> HiveProgress | None:
        return self._progress.get(hive_id)

    # -- what clients get ------------------------------------------------------------------

    def since(self, last_id: int) -> list[ProgressEvent]:
        """Everything newer than `last_id`, in id order (nothing before the feed is primed)."""
        if not self.primed:
            return []
        events = [e for e in self._sent.values() if e.id > last_id]
        events.sort(key=lambda e: e.id)
        if self.terminal is not None and self.terminal.id > last_id:
            events.append(self.terminal)
        return events

    async def wait_after(self, last_id: int) -> None:
        """Return once there is something newer than `last_id` for a client."""
        while not self._newer_than(last_id):
            self._changed.clear()
            await self._changed.wait()

    def _newer_than(self, last_id: int) -> bool:
        if not self.primed:
            return False
        if self.terminal is not None and self.terminal.id > last_id:
            return True
        return any(e.id > last_id for e in self._sent.values())

    def ended_for(self, last_id: int | None) -> bool:
        """True when a client that had `last_id` has had the terminal event (a reconnect then gets 204)."""
        return last_id is not None and self.terminal is not None and last_id >= self.terminal.id

    def totals(self) -> PullTotals:
        parts = [self._progress.get(h) or HiveProgress(h, d, UNKNOWN) for h, d in sorted(self.downloads.items())]
        return totals_of(parts, unknown_fails=False)  # a hive not heard from yet has not ended

    # -- internals -------------------------------------------------------------------------

    def _send(self, hive_id: str, event_id: int) -> None:
        event = self._hive_events[hive_id]
        progress = self._progress[hive_id]
        data = {
            **event.data,
            **self.extra,
            "pull_id": self.pull_id,
            "hive_id": hive_id,
            "status": progress.status,
            "pull": self.totals().to_dict(),
        }
        self._sent[hive_id] = ProgressEvent(event_id, EventType.PROGRESS, data)

    def _finish_if_ended(self) -> None:
        if self.terminal is not None or len(self._progress) < len(self.downloads):
            return
        totals = self.totals()
        if totals.status == "running":
            return
        data: dict[str, Any] = {
            **self.extra,
            "pull_id": self.pull_id,
            "bytes": totals.bytes,
            "total": totals.total,
            "pull": totals.to_dict(),
            "hives": {h: p.status for h, p in sorted(self._progress.items())},
        }
        if totals.failed:
            data["code"] = totals.failed[0].code
            data["error"] = "; ".join(f"{h.hive_id}: {h.code}: {h.error}" for h in totals.failed)
        self.terminal = ProgressEvent(self.sum() + 1, TERMINAL_EVENT_OF[totals.status], data)
