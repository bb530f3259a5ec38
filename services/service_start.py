"""How a hive or a queen is started as a subprocess and known to be up: one way, for the demo, the
benchmarks and the tests.

`service_argv` is the command line (`python -m <module> --host 127.0.0.1 --port P`); `wait_healthy`
polls `GET /healthz` until it answers 200, asking the caller's `check_alive` before every try so a
process that exits early fails at once, with whatever message (and log) the caller gives it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx

from shared.waiting import wait_until

__all__ = ["HEALTH_POLL", "service_argv", "wait_healthy"]

HEALTH_POLL = 0.1  # seconds between two GET /healthz


def service_argv(module: str, port: int) -> list[str]:
    """The command that runs `module` (e.g. "services.hive.main") on 127.0.0.1:`port` with this interpreter."""
    return [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]


def wait_healthy(url: str, check_alive: Callable[[], None], timeout: float, what: str) -> None:
    """Poll `{url}/healthz` until it answers 200; TimeoutError (naming `what`) after `timeout` seconds.

    `check_alive` runs before each try and raises when the process has exited.
    """

    def healthy() -> bool:
        check_alive()
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout, what, HEALTH_POLL)
