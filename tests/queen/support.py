"""What the queen's tests share: a scripted fake hive on a real socket, and a queen in front of fake hives."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from services.queen.main import create_app
from services.queen.settings import QueenSettings
from tests.support import ServerThread, free_port

__all__ = ["AUTH", "TOKEN", "FakeHive", "Seen", "Step", "ev", "queen_for"]


Step = tuple[Any, ...]


def ev(
    event_id: int, kind: str = "progress", download_id: str = "dl-78000000000000000000000000000000", **data: Any
) -> Step:
    return ("event", event_id, kind, {"download_id": download_id, **data})


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class FakeHive:
    """A hive on a real socket whose streams follow scripts: one script per connection to a path
    (the last one repeats). Steps: ("event", id, type, data), ("raw", text), ("wait", Event),
    ("status", code, json-or-None) as the whole answer, ("drop",) = cut without ending the chunked
    body, ("die",) = cut and refuse every later connection, ("end",) = end cleanly, ("hold",)."""

    hive_id: str = "hive-f"
    port: int = field(default_factory=free_port)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    streams: dict[str, list[list[Step]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._refuse = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._sock.settimeout(0.02)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _accept(self) -> None:
        with self._sock:
            while not self._stop.is_set() and not self._refuse.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            request_line = reader.readline().decode()
            headers: dict[str, str] = {}
            while (line := reader.readline().decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            path = request_line.split(" ")[1].split("?")[0] if request_line else ""
            self.seen.append(Seen(path, headers))
            try:
                self._answer(conn, path)
            except OSError:
                pass

    def _answer(self, conn: socket.socket, path: str) -> None:
        if path == "/healthz":
            return _json(conn, 200, {"status": "ok", "hive_id": self.hive_id, "active_downloads": 0})
        if path == "/v2/downloads":
            return _json(conn, 200, {"hive_id": self.hive_id, "downloads": list(self.states.values())})
        scripts = self.streams.get(path)
        if scripts is None and path == "/v2/downloads/stream":
            scripts = [[("hold",)]]
        if scripts is None:
            state = self.states.get(path.removeprefix("/v2/downloads/"))
            if state is None:
                return _json(conn, 404, {"error": {"code": "NOT_FOUND", "message": "unknown"}})
            return _json(conn, 200, state)
        script = scripts[min(len(self.requests(path)) - 1, len(scripts) - 1)]
        if script[0][0] == "status":
            return _json(conn, script[0][1], script[0][2])
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for step in script:
            if step[0] == "event":
                _chunk(conn, f"id: {step[1]}\nevent: {step[2]}\ndata: {json.dumps(step[3])}\n\n")
            elif step[0] == "raw":
                _chunk(conn, step[1])
            elif step[0] == "wait":
                while not step[1].wait(0.05) and not self._stop.is_set():
                    pass
            elif step[0] in ("drop", "die"):
                if step[0] == "die":
                    self._refuse.set()
                conn.shutdown(socket.SHUT_RDWR)
                return None
            elif step[0] == "end":
                conn.sendall(b"0\r\n\r\n")
                return None
            elif step[0] == "hold":
                while not self._stop.wait(0.05):
                    pass
        return None


def _chunk(conn: socket.socket, text: str) -> None:
    data = text.encode()
    conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _json(conn: socket.socket, status: int, body: dict[str, Any] | None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
    conn.sendall(head.encode() + b"connection: close\r\n\r\n" + data)


TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def queen_for(*hives: FakeHive, **overrides: Any) -> ServerThread:
    fields: dict[str, Any] = {
        "orchestrator_id": "queen-t",
        "hives": {h.hive_id: h.url for h in hives},
        "api_token": TOKEN,
        "health_interval": 0.2,
        "relay_backoff_initial": 0.05,
        "relay_backoff_max": 0.2,
        "unreachable_budget": 5.0,
        "keepalive_secs": 1.0,
        **overrides,
    }
    settings = QueenSettings(**fields)
    return ServerThread(create_app(settings)).start()
