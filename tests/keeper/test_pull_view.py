"""rbee-keeper's view of a fleet pull (pull_view.py) and its renderers, without any server.

The pull's events are made by the queen's own PullFeed (services/queen/pulls/feed.py), so what is folded
here has the shape the queen sends.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from rich.console import Console

from services.keeper.events import StreamEvent, terminal_event_from_pull
from services.keeper.pull_view import PullView, pull_line, pull_message, pull_stats_text, sources_lines
from services.keeper.render import PlainPullRenderer, PullBarRenderer
from services.queen.pulls.feed import PullFeed
from shared.models import EventType, ProgressEvent

MB = 1_000_000
DOWNLOADS = {"hive-a": "dl-a", "hive-b": "dl-b"}
STARTED = {"pull_id": "pull-1", "commit": "c0ffee", "downloads": DOWNLOADS}


def hive_event(event_id: int, hive: str, kind: EventType = EventType.PROGRESS, **data: Any) -> ProgressEvent:
    base = {"download_id": DOWNLOADS[hive], "bytes": 0, "total": 10 * MB, "files_total": 4, "files_done": 0}
    if kind is EventType.PROGRESS:
        base.update(status="downloading", speed_bps=MB, eta_secs=9, model_ref="hf:org/fleet")
    return ProgressEvent(event_id, kind, {**base, **data})


class Queen:
    """The pull's stream as a client gets it: what a PullFeed holds, turned into the keeper's StreamEvents."""

    def __init__(self) -> None:
        self.feed = PullFeed("pull-1", DOWNLOADS, {"orchestrator_id": "q", "model_ref": "hf:org/fleet"})
        self.last = 0

    def send(self, hive: str, event: ProgressEvent) -> list[StreamEvent]:
        self.feed.publish(hive, event)
        events = []
        for e in self.feed.since(self.last):
            raw = json.dumps(e.data)
            events.append(StreamEvent(e.id, e.event.value, json.loads(raw), raw))
            self.last = e.id
        return events


def folded(*sent: tuple[str, ProgressEvent]) -> tuple[PullView, list[StreamEvent]]:
    view = PullView.started(STARTED, "hf:org/fleet")
    queen = Queen()
    events = [e for hive, event in sent for e in queen.send(hive, event)]
    for event in events:
        view.apply(event)
    return view, events


def test_a_pull_folds_every_hive_and_the_totals_from_the_queens_events() -> None:
    view, events = folded(
        ("hive-a", hive_event(3, "hive-a", bytes=4 * MB, files_done=1)),
        ("hive-b", hive_event(2, "hive-b", bytes=1 * MB)),
    )
    assert [e.data["hive_id"] for e in events] == ["hive-a", "hive-b"]
    a, b = view.hives["hive-a"], view.hives["hive-b"]
    assert (a.status, a.bytes, a.total, a.files_done, b.bytes) == ("downloading", 4 * MB, 10 * MB, 1, 1 * MB)
    assert (view.status, view.bytes, view.total, view.percent, view.speed_bps) == (
        "running",
        5 * MB,
        20 * MB,
        25.0,
        2 * MB,
    )
    assert pull_stats_text(view) == " 25.0% • 5.0 MB / 20.0 MB • 2.0 MB/s • ETA 8s • hives 0/2"
    assert pull_line(view) == "total org/fleet running 25.0% 5.0 MB/20.0 MB 2.0 MB/s ETA 8s hives 0/2"


def test_a_hive_that_ends_is_a_progress_event_of_the_pull_and_the_pull_ends_once() -> None:
    view, events = folded(
        ("hive-a", hive_event(3, "hive-a", EventType.COMPLETE, bytes=10 * MB, files_done=4, path="/m")),
        ("hive-b", hive_event(2, "hive-b", bytes=5 * MB)),
        ("hive-b", hive_event(4, "hive-b", EventType.ERROR, bytes=5 * MB, code="CHECKSUM_MISMATCH", error="bad")),
    )
    assert [e.event for e in events] == ["progress", "progress", "progress", "error"]
    a, b = view.hives["hive-a"], view.hives["hive-b"]
    assert (a.status, a.percent_value, a.files_done) == ("complete", 100.0, 4)
    assert (b.status, b.code, b.error) == ("failed", "CHECKSUM_MISMATCH", "bad")
    assert (view.status, view.failed_hives, view.code) == ("failed", ["hive-b"], "CHECKSUM_MISMATCH")
    assert pull_stats_text(view) == " 75.0% • 15.0 MB / 20.0 MB • failed • hives 1/2 • failed: hive-b"
    assert pull_message(view) == [
        "failed: org/fleet on hive-b (1 of 2 hives; pull-1)",
        "  hive-b: CHECKSUM_MISMATCH: bad",
    ]


def body(status: str, **hives: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/pulls/{id}."""
    parts = [
        {"hive_id": h, "download_id": DOWNLOADS[h], "bytes": 0, "total": 10 * MB, "percent": None, "speed_bps": 0}
        | part
        for h, part in hives.items()
    ]
    failed = [p["hive_id"] for p in parts if p["status"] == "failed"]
    done = sum(p["bytes"] for p in parts)
    return {
        "pull_id": "pull-1",
        "model_ref": "hf:org/fleet",
        "commit": "c0ffee",
        "status": status,
        "bytes": done,
        "total": 20 * MB,
        "percent": done * 100 / (20 * MB),
        "speed_bps": 0,
        "hives": parts,
        "failed_hives": failed,
        "unreachable_hives": [],
    }


def test_the_end_of_a_pull_from_its_state_is_shaped_like_the_streams_own() -> None:
    ended = body(
        "failed",
        **{
            "hive-a": {"status": "complete", "bytes": 10 * MB},
            "hive-b": {"status": "failed", "bytes": 3, "error": "gone", "error_code": "HIVE_UNREACHABLE"},
        },
    )
    event = terminal_event_from_pull(ended)
    assert event is not None and event.event == "error" and event.id is None
    assert event.data["hives"] == {"hive-a": "complete", "hive-b": "failed"}
    assert event.data["pull"]["failed_hives"] == ["hive-b"] and event.data["code"] == "HIVE_UNREACHABLE"
    assert event.data["error"] == "hive-b: HIVE_UNREACHABLE: gone"
    view = PullView.started(STARTED, "hf:org/fleet")
    view.apply(event)
    assert (view.status, view.failed_hives, view.bytes) == ("failed", ["hive-b"], 10 * MB + 3)
    assert terminal_event_from_pull(body("running", **{"hive-a": {"status": "downloading"}})) is None


def test_where_the_bytes_came_from_names_peers_by_hive_and_the_hub_against_one_copy() -> None:
    hub_url, peer_url = "hub", "http://10.0.0.1:9200"
    view = PullView.from_body(
        body(
            "complete",
            **{
                "hive-a": {"status": "complete", "bytes": 10 * MB, "sources": {hub_url: 10 * MB}},
                "hive-b": {"status": "complete", "bytes": 10 * MB, "sources": {peer_url: 7 * MB, "hub": 3 * MB}},
            },
        )
    )
    assert sources_lines(view, {peer_url: "hive-a"}) == [
        "  hive-a  10.0 MB: hub 10.0 MB",
        "  hive-b  10.0 MB: hive-a 7.0 MB, hub 3.0 MB",
        "  from the hub: 13.0 MB (1.30x one copy of the model)",
    ]
    assert pull_message(view) == ["complete: org/fleet 10.0 MB onto 2 hives at commit c0ffee (pull-1)"]


def test_plain_pull_lines_at_most_once_a_second_and_every_hive_status_change() -> None:
    now = [0.0]
    out = io.StringIO()
    renderer = PlainPullRenderer(out, interval=1.0, clock=lambda: now[0])
    view = PullView.started(STARTED, "hf:org/fleet")
    renderer.start(view)  # every hive, queued, and the total
    queen = Queen()
    for t, hive, event in [
        (0.1, "hive-a", hive_event(1, "hive-a", bytes=MB)),  # not primed yet: nothing goes out
        (0.2, "hive-b", hive_event(1, "hive-b", bytes=MB)),  # both go out: status changes, printed
        (0.5, "hive-a", hive_event(2, "hive-a", bytes=2 * MB)),  # throttled
        (1.3, "hive-b", hive_event(2, "hive-b", bytes=3 * MB)),  # a round: both hives and the total
        (1.4, "hive-a", hive_event(3, "hive-a", EventType.COMPLETE, bytes=10 * MB)),  # a status change: at once
    ]:
        now[0] = t
        for e in queen.send(hive, event):
            view.apply(e)
            renderer.update(e, view)
    lines = out.getvalue().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["hive-a", "org/fleet", "queued"],
        ["hive-b", "org/fleet", "queued"],
        ["total", "org/fleet", "running"],
        ["hive-a", "org/fleet", "downloading"],
        ["hive-b", "org/fleet", "downloading"],
        ["hive-a", "org/fleet", "downloading"],
        ["hive-b", "org/fleet", "downloading"],
        ["total", "org/fleet", "running"],
        ["hive-a", "org/fleet", "complete"],
    ]
    assert lines[7] == "total org/fleet running 25.0% 5.0 MB/20.0 MB 2.0 MB/s ETA 8s hives 0/2"


def test_pull_bars_one_per_hive_then_the_total_and_on_80_columns_each_with_its_figures_below() -> None:
    def render(width: int) -> list[str]:
        console = Console(record=True, force_terminal=True, width=width, file=io.StringIO(), color_system="truecolor")
        renderer = PullBarRenderer(console)
        view = PullView.started(STARTED, "hf:org/fleet")
        renderer.start(view)
        queen = Queen()
        for hive, event in [
            ("hive-a", hive_event(1, "hive-a", bytes=4 * MB, files_done=1)),
            ("hive-b", hive_event(1, "hive-b", bytes=MB)),
        ]:
            for e in queen.send(hive, event):
                view.apply(e)
                renderer.update(e, view)
        renderer.stop()
        # (a recorded live display runs its frames together: the last frame is the last lines)
        return console.export_text().strip().splitlines()

    a, b, total = render(140)[-3:]
    assert re.search(r"hive-a [━╸╺]+ +40\.0% • 4\.0 MB / 10\.0 MB • 1\.0 MB/s • ETA 9s • files 1/4$", a), a
    assert re.search(r"hive-b [━╸╺]+ +10\.0% • 1\.0 MB / 10\.0 MB • ", b), b
    assert re.search(r"total  [━╸╺]+ +25\.0% • 5\.0 MB / 20\.0 MB • 2\.0 MB/s • ETA 8s • hives 0/2$", total), total
    *_, a_bar, a_stats, b_bar, b_stats, total_bar, total_stats = render(80)
    assert re.search(r"hive-a [━╸╺]{40,}$", a_bar) and re.search(r"total  [━╸╺]{40,}$", total_bar), (a_bar, total_bar)
    assert b_bar.startswith("hive-b ")
    assert a_stats == " 40.0% • 4.0 MB / 10.0 MB • 1.0 MB/s • ETA 9s • files 1/4"
    assert b_stats.startswith(" 10.0% • ")
    assert total_stats == " 25.0% • 5.0 MB / 20.0 MB • 2.0 MB/s • ETA 8s • hives 0/2"
