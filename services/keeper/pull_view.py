"""What rbee-keeper knows of one fleet pull, folded from the queen's answers and the pull's stream, and
the text it shows for it. Pure: no I/O (the renderers in `services/keeper/render.py` print it).

The pull's stream (`GET /v1/pulls/{id}/stream`) sends `progress` events of one hive each: that hive's
own payload, `status` that hive's status (`complete`, `failed` and `cancelled` too: a hive's end is a
`progress` event of the pull), the pull's totals under `pull`. Then one terminal event for the whole
pull: `complete`, `error` (naming the failed hives) or `cancelled`. Each hive is a `Snapshot`, as one
download is for `rbee-keeper download`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.keeper.events import StreamEvent
from services.keeper.format import (
    Snapshot,
    display_name,
    human_bytes,
    human_eta,
    human_speed,
    percent_of,
    size_text,
)
from shared.models import STATUS_OF_TERMINAL_EVENT, TERMINAL_EVENT_OF, EventType

__all__ = ["PullView", "pull_line", "pull_message", "pull_stats_text", "sources_lines"]

UNKNOWN = "unknown"  # the status of a hive's part the queen could not ask about


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class PullView:
    pull_id: str
    model_ref: str | None = None
    commit: str | None = None
    hives: dict[str, Snapshot] = field(default_factory=dict)  # in the pull's order
    status: str = "running"  # running, complete, failed or cancelled
    bytes: int = 0
    total: int | None = None
    percent: float | None = None
    speed_bps: int = 0
    failed_hives: list[str] = field(default_factory=list)
    error: str | None = None  # the pull's error event: every failed hive's code and message
    code: str | None = None
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # hive -> bytes by where they came from

    @classmethod
    def started(cls, body: Mapping[str, Any], model_ref: str) -> PullView:
        """From the answer to POST /v1/pulls: every hive's download, nothing moved yet."""
        downloads: Mapping[str, Any] = body.get("downloads") or {}
        hives = {
            str(h): Snapshot(download_id=str(d), model_ref=model_ref, hive_id=str(h)) for h, d in downloads.items()
        }
        return cls(str(body.get("pull_id")), model_ref, body.get("commit"), hives)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PullView:
        """From GET /v1/pulls/{id} (or one pull of GET /v1/pulls)."""
        model_ref = body.get("model_ref")
        view = cls(str(body.get("pull_id")), model_ref, body.get("commit"))
        for part in body.get("hives") or ():
            hive_id = str(part.get("hive_id"))
            view.hives[hive_id] = Snapshot(
                download_id=str(part.get("download_id")),
                model_ref=model_ref,
                hive_id=hive_id,
                status=str(part.get("status") or "queued"),
                bytes=_int(part.get("bytes")) or 0,
                total=_int(part.get("total")),
                speed_bps=_int(part.get("speed_bps")),
                eta_secs=_int(part.get("eta_secs")),
                percent=part.get("percent"),
                error=part.get("error"),
                code=part.get("error_code"),
                files_total=_int(part.get("files_total")),
                files_done=_int(part.get("files_done")),
            )
            if isinstance(part.get("sources"), dict) and part["sources"]:
                view.sources[hive_id] = {str(k): int(v) for k, v in part["sources"].items() if _int(v) is not None}
        view._totals(body)
        if view.status == "failed":
            failed = [view.hives[h] for h in view.failed_hives if h in view.hives]
            view.code = failed[0].code if failed else None
            view.error = "; ".join(f"{s.hive_id}: {s.code}: {s.error}" for s in failed) or None
        return view

    @property
    def name(self) -> str:
        return display_name(self.model_ref)

    @property
    def ended(self) -> bool:
        return self.status != "running"

    def apply(self, event: StreamEvent) -> None:
        """Fold one event of the pull's stream in."""
        data = event.data
        if isinstance(data.get("pull"), dict):
            self._totals(data["pull"])
        if event.is_terminal:
            self.status = STATUS_OF_TERMINAL_EVENT[event.event]
            self.speed_bps = 0
            self.error, self.code = data.get("error"), data.get("code")
            return
        hive_id = data.get("hive_id")
        if not isinstance(hive_id, str):
            return
        snap = self.hives.get(hive_id)
        if snap is None:  # (a hive the keeper was not told of: the pull's own view wins)
            snap = self.hives[hive_id] = Snapshot(str(data.get("download_id")), self.model_ref, hive_id)
        kind = TERMINAL_EVENT_OF.get(str(data.get("status")), EventType.PROGRESS)
        snap.apply(StreamEvent(event.id, kind, data, event.raw))

    def _totals(self, totals: Mapping[str, Any]) -> None:
        self.status = str(totals.get("status") or self.status)
        self.bytes = max(self.bytes, _int(totals.get("bytes")) or 0)
        self.total = _int(totals.get("total")) if totals.get("total") is not None else self.total
        self.percent = totals.get("percent")
        self.speed_bps = _int(totals.get("speed_bps")) or 0
        self.failed_hives = [str(h) for h in totals.get("failed_hives") or ()]

    @property
    def percent_value(self) -> float | None:
        return percent_of(self.percent, self.bytes, self.total)

    @property
    def model_bytes(self) -> int | None:
        """One copy of the model: what each hive takes (every hive pulls the same files)."""
        return max((s.total for s in self.hives.values() if s.total is not None), default=None)

    def count(self, status: str) -> int:
        return sum(1 for s in self.hives.values() if s.status == status)

    @property
    def hives_done(self) -> str:
        """`1/4`: the hives done of the pull's hives."""
        return f"{self.count('complete')}/{len(self.hives)}"


def _eta(view: PullView) -> str | None:
    if view.total is None or view.speed_bps <= 0:
        return None
    return f"ETA {human_eta(max(0, view.total - view.bytes) / view.speed_bps)}"


def _failed(view: PullView) -> str | None:
    return f"failed: {', '.join(view.failed_hives)}" if view.failed_hives else None


def pull_stats_text(view: PullView) -> str:
    """Beside the total bar: `42.0% • 1.1 GB / 2.7 GB • 80.0 MB/s • ETA 20s • hives 1/4`; once ended its
    status instead of speed and ETA; the failed hives, if any."""
    parts: list[str] = []
    if (pct := view.percent_value) is not None:
        parts.append(f"{pct:5.1f}%")
    parts.append(size_text(view, " / "))
    if view.ended:
        parts.append(view.status)
    else:
        parts.append(human_speed(view.speed_bps))
        parts.extend(eta for eta in (_eta(view),) if eta)
    parts.append(f"hives {view.hives_done}")
    parts.extend(failed for failed in (_failed(view),) if failed)
    return " • ".join(parts)


def pull_line(view: PullView) -> str:
    """The total as one log-friendly line: `total org/repo running 42.0% 1.1 GB/2.7 GB 80.0 MB/s ETA 20s hives 1/4`."""
    parts = ["total", view.name, view.status]
    if (pct := view.percent_value) is not None:
        parts.append(f"{pct:.1f}%")
    parts.append(size_text(view, "/"))
    if not view.ended:
        parts.append(human_speed(view.speed_bps))
        parts.extend(eta for eta in (_eta(view),) if eta)
    parts.append(f"hives {view.hives_done}")
    parts.extend(failed for failed in (_failed(view),) if failed)
    return " ".join(parts)


def pull_message(view: PullView) -> list[str]:
    """The lines printed when a pull ends: how it ended, and every failed hive's code and message."""
    where = f"{len(view.hives)} hive{'s' if len(view.hives) != 1 else ''}"
    if view.status == "complete":
        commit = f" at commit {view.commit}" if view.commit else ""
        return [f"complete: {view.name} {human_bytes(view.model_bytes)} onto {where}{commit} ({view.pull_id})"]
    if view.status == "failed":
        failed = [view.hives[h] for h in view.failed_hives if h in view.hives]
        lines = [
            f"failed: {view.name} on {', '.join(view.failed_hives) or '?'} ({len(failed)} of {where}; {view.pull_id})"
        ]
        lines.extend(
            f"  {s.hive_id}: {s.code or 'DOWNLOAD_FAILED'}: {s.error or 'the download failed'}" for s in failed
        )
        if not failed and view.error:
            lines.append(f"  {view.error}")
        return lines
    if view.status == "cancelled":
        return [f"cancelled: {view.name} ({view.pull_id}) at {size_text(view, ' of ')}"]
    return [f"{view.status}: {view.name} ({view.pull_id})"]


def sources_lines(view: PullView, hive_of_url: Mapping[str, str]) -> list[str]:
    """Where each hive's bytes came from (GET /v1/pulls/{id}'s `sources`), peers named by hive id, and
    what the hub gave in all against one copy of the model: `  hive-b  9.4 MB: hive-a 6.1 MB, hub 3.3 MB`."""
    if not view.sources:
        return []
    width = max(len(h) for h in view.hives)
    lines = []
    for hive_id, sources in view.sources.items():
        ranked = sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{hive_of_url.get(src, src)} {human_bytes(n)}" for src, n in ranked if n)
        lines.append(f"  {hive_id.ljust(width)}  {human_bytes(sum(sources.values()))}: {shown or 'nothing'}")
    hub = sum(s.get("hub", 0) for s in view.sources.values())
    copy = view.model_bytes
    ratio = f" ({hub / copy:.2f}x one copy of the model)" if copy else ""
    unasked = [h for h, s in view.hives.items() if s.status == UNKNOWN]
    missing = f"; {', '.join(unasked)} could not be asked" if unasked else ""
    lines.append(f"  from the hub: {human_bytes(hub)}{ratio}{missing}")
    return lines
