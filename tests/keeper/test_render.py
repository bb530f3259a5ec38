"""rbee-keeper's formatting helpers and renderers, without any server."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from rich.console import Console

from services.keeper.events import StreamEvent, terminal_event_from_state
from services.keeper.format import (
    Snapshot,
    display_name,
    files_text,
    format_table,
    human_bytes,
    human_duration,
    human_eta,
    human_speed,
    progress_line,
    stats_text,
    terminal_message,
)
from services.keeper.render import BarRenderer, JsonRenderer, PlainRenderer, json_line


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "?"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1536, "1.5 kB"),
        (45_200_000, "45.2 MB"),
        (268_435_456, "268.4 MB"),
        (999_960, "1.0 MB"),  # rounds up into the next unit, never "1000.0 kB"
        (1_100_000_000, "1.1 GB"),
        (3 * 10**15, "3.0 PB"),
        (5 * 10**18, "5000.0 PB"),
    ],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert human_bytes(n) == text


def test_human_speed() -> None:
    assert human_speed(45_200_000) == "45.2 MB/s"
    assert human_speed(0) == "0 B/s"
    assert human_speed(None) == "-"


@pytest.mark.parametrize(
    ("secs", "text"),
    [
        (None, "-"),
        (-1, "-"),
        (0, "0s"),
        (42, "42s"),
        (59.6, "1m00s"),
        (185, "3m05s"),
        (7620, "2h07m"),
        (3 * 86400 + 4 * 3600, "3d04h"),
    ],
)
def test_human_eta(secs: float | None, text: str) -> None:
    assert human_eta(secs) == text


def test_human_duration() -> None:
    assert human_duration(0.84) == "0.8s"
    assert human_duration(12.34) == "12.3s"
    assert human_duration(125) == "2m05s"
    assert human_duration(None) == "-"


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("hf:org/repo::file=model.bin", "model.bin"),
        ("hf:org/repo@v1::file=sub/dir/weights.safetensors", "weights.safetensors"),
        ("https://example.com/a/b/model%20x.gguf?download=1", "model x.gguf"),
        ("https://example.com/", "https://example.com/"),
        ("hf:org/repo", "org/repo"),  # a whole model: its repository
        ("hf:org/repo@v1.0", "org/repo@v1.0"),
        (None, "download"),
        ("", "download"),
    ],
)
def test_display_name(ref: str | None, name: str) -> None:
    assert display_name(ref) == name


def progress(event_id: int, **data: Any) -> StreamEvent:
    payload = {"download_id": "dl-1", **data}
    return StreamEvent(event_id, "progress", payload, json.dumps(payload))


def downloading(nbytes: int, total: int, speed: int, eta: int, **extra: Any) -> StreamEvent:
    return progress(1, bytes=nbytes, total=total, speed_bps=speed, eta_secs=eta, status="downloading", **extra)


def snap(**fields: Any) -> Snapshot:
    base: dict[str, Any] = {"download_id": "dl-1", "model_ref": "hf:o/r::file=m.bin", "hive_id": "hive-a"}
    return Snapshot(**{**base, **fields})


def test_snapshot_folds_events_and_never_goes_backwards() -> None:
    s = Snapshot.from_state({"download_id": "dl-1", "model_ref": "hf:o/r::file=m.bin", "status": "queued"})
    s.apply(progress(1, bytes=500, total=1000, speed_bps=100, eta_secs=5, percent=50.0, status="downloading"))
    assert (s.status, s.bytes, s.total, s.percent_value) == ("downloading", 500, 1000, 50.0)
    s.apply(progress(2, bytes=400, total=1000, status="downloading", hive_id="hive-b"))
    assert s.bytes == 500
    assert s.hive_id == "hive-b"
    s.apply(StreamEvent.synthetic("complete", {"download_id": "dl-1", "bytes": 1000, "total": 1000, "sha256": "ab"}))
    assert (s.status, s.bytes, s.sha256, s.percent_value) == ("complete", 1000, "ab", 100.0)


def test_stats_text_known_and_unknown_total() -> None:
    running = snap(status="downloading", bytes=108_000_000, total=256_000_000, speed_bps=45_200_000, eta_secs=3)
    assert stats_text(running) == " 42.2% • 108.0 MB / 256.0 MB • 45.2 MB/s • ETA 3s • hive-a"
    unknown = snap(status="downloading", bytes=5_000_000, total=None, speed_bps=1_000_000)
    assert stats_text(unknown) == "5.0 MB • 1.0 MB/s • hive-a"
    queued = snap(status="queued", queue_position=2, total=10)
    assert stats_text(queued) == "  0.0% • 0 B / 10 B • queued #2 • hive-a"


def model(**fields: Any) -> Snapshot:
    return snap(**{"model_ref": "hf:org/llama", "files_total": 7, "files_done": 3, **fields})


def test_a_whole_model_folds_and_shows_its_files() -> None:
    s = Snapshot.from_state({"download_id": "dl-1", "model_ref": "hf:org/llama", "files_total": 7, "files_done": 0})
    assert (s.name, files_text(s)) == ("org/llama", "0/7")
    s.apply(progress(1, bytes=10, total=100, status="downloading", files_total=7, files_done=3))
    assert files_text(s) == "3/7"
    s.apply(progress(2, bytes=20, total=100, status="downloading"))  # an event without the fields keeps them
    assert files_text(s) == "3/7"
    assert files_text(snap()) is None  # one file: no count
    running = model(status="downloading", bytes=108_000_000, total=256_000_000, speed_bps=45_200_000, eta_secs=3)
    assert stats_text(running) == " 42.2% • 108.0 MB / 256.0 MB • 45.2 MB/s • ETA 3s • files 3/7 • hive-a"
    assert progress_line(running) == "hive-a org/llama downloading 42.2% 108.0 MB/256.0 MB 45.2 MB/s ETA 3s files 3/7"
    done = model(status="complete", files_done=7, bytes=2_000_000, duration_secs=1.25, path="/m/snapshots/abc")
    assert terminal_message(done) == "complete: org/llama 2.0 MB (7 files) in 1.2s on hive-a -> /m/snapshots/abc"


def test_progress_line_is_plain_ascii() -> None:
    line = progress_line(
        snap(status="downloading", bytes=108_000_000, total=256_000_000, speed_bps=45_200_000, eta_secs=3)
    )
    assert line == "hive-a m.bin downloading 42.2% 108.0 MB/256.0 MB 45.2 MB/s ETA 3s"
    assert line.isascii()
    assert progress_line(snap(status="starting", total=None)) == "hive-a m.bin starting 0 B"


def test_terminal_messages() -> None:
    done = snap(status="complete", bytes=2_000_000, duration_secs=1.25, path="/m/m.bin", sha256="ab12")
    assert terminal_message(done) == "complete: m.bin 2.0 MB in 1.2s on hive-a -> /m/m.bin (sha256 ab12)"
    failed = snap(status="failed", code="NOT_FOUND", error="the file was not found (404)")
    assert terminal_message(failed) == "NOT_FOUND: the file was not found (404)"
    assert terminal_message(snap(status="cancelled", bytes=1500)) == "cancelled: m.bin (dl-1) at 1.5 kB"


def test_terminal_event_from_state() -> None:
    state = {"download_id": "d", "status": "failed", "error": "boom", "error_code": "DOWNLOAD_FAILED"}
    event = terminal_event_from_state({**state, "bytes_downloaded": 3, "total_bytes": None, "hive_id": "h"})
    assert event is not None
    assert (event.event, event.data["code"], event.data["hive_id"], event.id) == ("error", "DOWNLOAD_FAILED", "h", None)
    assert terminal_event_from_state({"download_id": "d", "status": "downloading"}) is None


def test_format_table_aligns_columns() -> None:
    lines = format_table(["ID", "STATUS"], [["dl-1", "complete"], ["dl-22", "failed"]])
    assert lines == ["ID     STATUS", "dl-1   complete", "dl-22  failed"]


def test_plain_renderer_throttles_but_prints_every_status_change() -> None:
    now = [0.0]
    out = io.StringIO()
    renderer = PlainRenderer(out, interval=1.0, clock=lambda: now[0])
    s = snap(status="queued", total=1000)
    renderer.start(s)
    for i, (t, status, nbytes) in enumerate(
        [
            (0.1, "starting", 0),  # status change: printed
            (0.2, "downloading", 10),  # status change: printed
            (0.5, "downloading", 20),  # throttled
            (0.9, "downloading", 30),  # throttled
            (1.3, "downloading", 40),  # a second since the last line: printed
            (1.4, "downloading", 50),  # throttled
        ]
    ):
        now[0] = t
        event = progress(i + 1, bytes=nbytes, total=1000, status=status, speed_bps=10)
        s.apply(event)
        renderer.update(event, s)
    done = StreamEvent.synthetic("complete", {"download_id": "dl-1", "bytes": 1000, "total": 1000})
    s.apply(done)
    renderer.update(done, s)  # the caller prints the terminal message itself
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["queued", "starting", "downloading", "downloading"]
    assert lines[-1].split()[3] == "4.0%"
    assert "\x1b" not in out.getvalue()


def test_json_renderer_writes_payload_verbatim() -> None:
    out = io.StringIO()
    raw = '{"download_id":"dl-1","bytes":5,  "extra":{"b":1,"a":2}}'
    event = StreamEvent(7, "progress", json.loads(raw), raw)
    JsonRenderer(out).update(event, snap())
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line == '{"id":7,"event":"progress","data":' + raw + "}\n"
    assert json.loads(line)["data"]["extra"] == {"b": 1, "a": 2}
    multi = StreamEvent(None, "cancelled", {"download_id": "x"}, '{"download_id":\n"x"}')
    assert json.loads(json_line(multi)) == {"id": None, "event": "cancelled", "data": {"download_id": "x"}}


def render_bar(events: list[StreamEvent], start: Snapshot, width: int = 120) -> str:
    console = Console(record=True, force_terminal=True, width=width, file=io.StringIO(), color_system="truecolor")
    renderer = BarRenderer(console)
    renderer.start(start)
    for event in events:
        start.apply(event)
        renderer.update(event, start)
    renderer.stop()
    return console.export_text()


def test_bar_renderer_shows_name_percent_sizes_speed_eta_and_hive() -> None:
    text = render_bar(
        [downloading(108_000_000, 256_000_000, 45_200_000, 3)], snap(status="starting", total=256_000_000)
    )
    last = text.strip().splitlines()[-1]
    for part in ("m.bin", "42.2%", "108.0 MB / 256.0 MB", "45.2 MB/s", "ETA 3s", "hive-a", "━"):
        assert part in last, (part, last)


def test_bar_renderer_shows_a_models_files_done_and_total() -> None:
    event = downloading(50_000_000, 200_000_000, 10_000_000, 15, files_total=4, files_done=1)
    last = render_bar([event], model(status="starting", total=200_000_000, files_total=4, files_done=0))
    last = last.strip().splitlines()[-1]
    for part in ("org/llama", "25.0%", "50.0 MB / 200.0 MB", "10.0 MB/s", "ETA 15s", "files 1/4", "hive-a"):
        assert part in last, (part, last)


def test_on_80_columns_a_models_stats_go_below_its_bar_whole() -> None:
    event = downloading(60_100_000, 67_100_000, 8_400_000, 1, files_total=6, files_done=4)
    start = model(model_ref="hf:demo-org/demo-model", status="starting", total=67_100_000, files_total=6)
    *_, bar, stats = render_bar([event], start, width=80).strip().splitlines()
    # (a recorded live display runs its frames together: the bar is the end of its line)
    assert re.search(r"demo-org/demo-model [━╸╺]{40,}$", bar), bar  # the name whole, and a real bar
    assert stats == " 89.6% • 60.1 MB / 67.1 MB • 8.4 MB/s • ETA 1s • files 4/6 • hive-a"
    file_event = downloading(60_100_000, 67_100_000, 8_400_000, 1)
    one_line = render_bar([file_event], snap(status="starting", total=67_100_000), width=80).strip().splitlines()[-1]
    assert re.search(r"m\.bin [━╸╺]+ +89\.6% • [^•]+ • [^•]+ • ETA 1s • hive-a$", one_line), one_line  # one line


def test_bar_renderer_indeterminate_when_total_unknown() -> None:
    text = render_bar(
        [progress(1, bytes=5_000_000, total=None, speed_bps=1_000_000, status="downloading")],
        snap(status="starting", total=None),
    )
    last = text.strip().splitlines()[-1]
    assert "5.0 MB • 1.0 MB/s • hive-a" in last
    assert "%" not in last and "ETA" not in last


def test_bar_renderer_fills_up_on_complete() -> None:
    done = StreamEvent.synthetic("complete", {"download_id": "dl-1", "bytes": 1000, "total": 1000})
    text = render_bar([done], snap(status="downloading", total=1000))
    assert "100.0%" in text.strip().splitlines()[-1]


def test_a_capped_download_says_so_beside_its_speed_and_not_once_the_cap_is_gone() -> None:
    s = Snapshot.from_state({"download_id": "dl-1", "model_ref": "hf:o/r::file=m.bin", "hive_id": "hive-a"})
    s.apply(downloading(10_000_000, 100_000_000, 4_900_000, 18, capped_bps=5_000_000, cap_reason="schedule"))
    assert stats_text(s) == " 10.0% • 10.0 MB / 100.0 MB • 4.9 MB/s (capped 5.0 MB/s: schedule) • ETA 18s • hive-a"
    assert progress_line(s).endswith("4.9 MB/s (capped 5.0 MB/s: schedule) ETA 18s")
    s.apply(downloading(20_000_000, 100_000_000, 40_000_000, 2))  # an event without a cap: none holds it now
    assert "capped" not in stats_text(s) and (s.capped_bps, s.cap_reason) == (None, None)
    held = Snapshot.from_state(
        {"download_id": "dl-1", "status": "downloading", "capped_bps": 1000, "cap_reason": "nic"}
    )
    assert "(capped 1.0 kB/s: nic)" in stats_text(held)


def test_bar_renderer_shows_a_capped_download_as_such() -> None:
    event = downloading(50_000_000, 200_000_000, 2_000_000, 75, capped_bps=2_000_000, cap_reason="nic")
    last = render_bar([event], snap(status="starting", total=200_000_000)).strip().splitlines()[-1]
    assert "2.0 MB/s (capped 2.0 MB/s: nic)" in last, last
