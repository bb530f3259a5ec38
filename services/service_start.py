"""How a hive or a queen is started as a subprocess and known to be up: one way, for the demo, the
benchmarks and the tests.

`service_argv` is the command line (`python -m <module> --host 127.0.0.1 --port P`); `wait_healthy`
polls `GET /healthz` until it answers 200, asking the caller's `check_alive` before every try so a
process that exits early fails at once, with whatever message (and log) the caller gives it.
`own_network_prefix` runs a command in a network namespace of its own, where its loopback carries
only its own traffic (the bandwidth benchmark and tests measure lo's counters).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable

import httpx

from shared.waiting import wait_until

__all__ = ["HEALTH_POLL", "own_network_prefix", "service_argv", "wait_healthy"]

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


def own_network_prefix() -> tuple[list[str], str]:
    """A command prefix that runs a command in a network namespace of its own with its lo up, and how:
    `unshare -n` as root, `unshare -rn` where user namespaces are allowed. ([], why not) where neither
    `unshare` and `ip` are here nor either way is allowed."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return [], "no unshare(1) or ip(8) here"
    for flags in (["-n"], ["-rn"]):
        probe = subprocess.run([unshare, *flags, ip, "link", "set", "lo", "up"], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return [unshare, *flags, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh"], f"unshare {flags[0]}"
    return [], "unshare -n and unshare -rn are not allowed here"
