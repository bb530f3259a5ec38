"""A throwaway nginx on a free loopback port: sendfile, Hub-style headers, rate-capped locations, access log."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Proc, free_port, port_open, wait_until

__all__ = ["HUB_COMMIT", "AccessRecord", "Nginx"]

# Sent as X-Repo-Commit so hf_hub_download takes nginx for a Hub endpoint.
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"

_LOG_FORMAT = '$msec $status $connection $body_bytes_sent "$request_uri" "$http_range"'
_LOG_RE = re.compile(r'(\S+) (\d+) (\d+) (\d+) "([^"]*)" "([^"]*)"')


@dataclass(frozen=True)
class AccessRecord:
    msec: float
    status: int
    connection: int
    bytes_sent: int
    uri: str
    range: str


class Nginx:
    """nginx serving `root` at `/`; each `rate_limited` prefix serves the same root capped per connection.

    e.g. ``Nginx(work, root, rate_limited={"/limited/": "20m"})`` also serves ``root/x`` at ``/limited/x``
    at no more than 20 MiB/s per request (nginx's ``m`` is 1024*1024 bytes).
    """

    def __init__(self, binary: str, workdir: Path, root: Path, rate_limited: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.root = root
        self.rate_limited = rate_limited or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = workdir / "nginx.conf"
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        self.proc: Proc | None = None

    def config_text(self) -> str:
        w = self.workdir
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        limited = "".join(
            f"""
        location {prefix} {{
            alias {self.root}/;
            limit_rate {rate};
        }}"""
            for prefix, rate in self.rate_limited.items()
        )
        return f"""{user}worker_processes 2;
daemon off;
master_process on;
pid {w}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 10000;
    log_format bench '{_LOG_FORMAT}';
    access_log {self.access_log} bench;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        add_header X-Repo-Commit {HUB_COMMIT};{limited}
    }}
}}
"""

    def start(self, timeout: float = 15.0) -> Nginx:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        argv = [self.binary, "-p", f"{self.workdir}/", "-c", str(self.conf), "-e", str(self.error_log)]
        self.proc = Proc("nginx", argv, dict(os.environ), self.workdir / "nginx.out").start()

        def up() -> bool:
            assert self.proc is not None
            if not self.proc.alive():
                errors = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
                out = (self.workdir / "nginx.out").read_text(errors="replace")
                raise RuntimeError(f"nginx exited: {out}{errors}")
            return port_open(self.port)

        try:
            wait_until(up, timeout, "nginx to listen")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()  # SIGTERM to the master: fast shutdown, the workers go with it

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def records_since(self, offset: int) -> list[AccessRecord]:
        """Access-log lines written after `offset` (nginx writes each line when its request ends)."""
        if not self.access_log.exists():
            return []
        with self.access_log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            m = _LOG_RE.fullmatch(line.strip())
            if m:
                out.append(AccessRecord(float(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5], m[6]))
        return out

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
