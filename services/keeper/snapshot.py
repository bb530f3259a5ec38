"""What the keeper knows of one download, folded from the queen's state JSON and its stream events (the
Snapshot), and the name and percent it is shown with. Pure: no I/O here; how it is printed is
`services/keeper/format.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from services.keeper.events import StreamEvent

__all__ = ["Snapshot", "display_name", "percent_of"]


def display_name(model_ref: str | None) -> str:
    """The file a model ref names: `hf:org/repo::file=dir/model.bin` and `https://h/a/model.bin` -> `model.bin`;
    a whole model is its repository: `hf:org/repo@rev` -> `org/repo@rev`."""
    if not model_ref:
        return "download"
    if model_ref.startswith("hf:") and "::file=" not in model_ref:
        return model_ref[3:] or model_ref
    if model_ref.startswith("hf:"):
        path = model_ref.split("::file=", 1)[1]
    elif model_ref.startswith(("http://", "https://")):
        path = unquote(urlsplit(model_ref).path)
    else:
        path = model_ref
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or model_ref


def percent_of(percent: float | None, done: int, total: int | None) -> float | None:
    """The percent the queen sent, else bytes of a known total; None while the total is unknown."""
    if percent is not None:
        return float(percent)
    if total:
        return min(100.0, done * 100.0 / total)
    return None


@dataclass
class Snapshot:
    """What the keeper knows about one download, folded from the queen's state JSON and stream events."""

    download_id: str
    model_ref: str | None = None
    hive_id: str | None = None
    status: str = "queued"
    bytes: int = 0
    total: int | None = None
    speed_bps: int | None = None
    eta_secs: int | None = None
    percent: float | None = None
    queue_position: int | None = None
    error: str | None = None
    code: str | None = None
    sha256: str | None = None
    path: str | None = None
    duration_secs: float | None = None
    files_total: int | None = None  # a whole model: its files, and how many are in place
    files_done: int | None = None
    capped_bps: int | None = None  # while a bandwidth cap holds it: the cap, and which (README, "Bandwidth")
    cap_reason: str | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Snapshot:
        return cls(
            download_id=str(state.get("download_id", "")),
            model_ref=state.get("model_ref"),
            hive_id=state.get("hive_id"),
            status=str(state.get("status") or "queued"),
            bytes=int(state.get("bytes_downloaded") or 0),
            total=state.get("total_bytes"),
            speed_bps=state.get("speed_bps"),
            eta_secs=state.get("eta_secs"),
            percent=state.get("percent"),
            queue_position=state.get("queue_position"),
            error=state.get("error"),
            code=state.get("error_code"),
            sha256=state.get("sha256"),
            path=state.get("path"),
            files_total=state.get("files_total"),
            files_done=state.get("files_done"),
            capped_bps=state.get("capped_bps"),
            cap_reason=state.get("cap_reason"),
        )

    @property
    def name(self) -> str:
        return display_name(self.model_ref)

    def apply(self, event: StreamEvent) -> None:
        """Fold one stream event in. `bytes` never goes backwards."""
        data = event.data
        self.bytes = max(self.bytes, int(data.get("bytes") or 0))
        if data.get("total") is not None:
            self.total = int(data["total"])
        for key in ("hive_id", "model_ref"):
            if data.get(key):
                setattr(self, key, data[key])
        if isinstance(data.get("files_total"), int):
            self.files_total = data["files_total"]
            self.files_done = max(self.files_done or 0, int(data.get("files_done") or 0))
        if event.event == "progress":
            self.status = str(data.get("status") or self.status)
            self.speed_bps = data.get("speed_bps")
            self.eta_secs = data.get("eta_secs")
            self.percent = data.get("percent")
            self.queue_position = data.get("queue_position")
            self.capped_bps, self.cap_reason = data.get("capped_bps"), data.get("cap_reason")
        elif event.event == "complete":
            self.status = "complete"
            self.sha256 = data.get("sha256")
            self.path = data.get("path")
            self.duration_secs = data.get("duration_secs")
            self.speed_bps, self.eta_secs = 0, None
            self.percent = 100.0 if self.total is not None else None
        elif event.event == "error":
            self.status = "failed"
            self.error = data.get("error")
            self.code = data.get("code")
        elif event.event == "cancelled":
            self.status = "cancelled"

    @property
    def percent_value(self) -> float | None:
        return percent_of(self.percent, self.bytes, self.total)
