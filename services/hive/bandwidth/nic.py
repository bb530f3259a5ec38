"""The room the hive leaves other traffic on a shared interface (HIVE_NIC; README, "Bandwidth").

`NicController` is the math, pure: fed the interface's byte counters and the hive's own ones, it
learns what the rest of the node moves in each direction and answers the caps that leave the
budget to it. Its rules:
- other traffic = the interface's bytes - the hive's own in the same interval (downloads in, peer
  uploads out); on loopback every byte is counted as received *and* sent, so the hive's own traffic
  is taken off both directions there;
- that rate is smoothed (an exponential average with a time constant of half a second: quick
  enough that serving gets its room within a second or two; the same both ways, since an average
  quicker to rise than to fall sits above the mean of a noisy flow and leaves the budget unused),
  and the cap is budget - other, never below the floor;
- a cap drops at once but rises by at most `rise_per_sec` a second, so it does not oscillate;
- counters that go backwards (an interface reset) or a zero interval are skipped.
`read_counters` and `link_speed` are the thin readers of /proc/net/dev and /sys/class/net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Caps", "Counters", "NicController", "NicError", "link_speed", "read_counters"]


class NicError(OSError):
    """The interface or its counters cannot be read."""


@dataclass(frozen=True, slots=True)
class Counters:
    """One sample: when (monotonic seconds), the interface's rx/tx bytes, the hive's own in/out bytes."""

    t: float
    rx: int
    tx: int
    own_in: int
    own_out: int


@dataclass(frozen=True, slots=True)
class Caps:
    download: int  # bytes/s the hive may receive now
    upload: int  # bytes/s it may send now
    other_rx: float  # the smoothed rate of everything else on the interface, bytes/s
    other_tx: float


class NicController:
    def __init__(
        self,
        budget: int,
        floor: int,
        loopback: bool = False,
        tau: float = 0.5,
        rise_per_sec: float | None = None,
    ) -> None:
        """`budget` and `floor` bytes/s per direction; `tau` the smoothing's time constant (seconds);
        `rise_per_sec` how fast a cap may grow (bytes/s per second; default half the budget: from
        the floor to all of it in 2 s)."""
        self.budget = budget
        self.floor = min(floor, budget)
        self.loopback = loopback
        self.tau = tau
        self.rise_per_sec = budget / 2 if rise_per_sec is None else rise_per_sec
        self._last: Counters | None = None
        self.other_rx = 0.0
        self.other_tx = 0.0
        self.caps = Caps(budget, budget, 0.0, 0.0)

    def sample(self, now: Counters) -> Caps:
        """Take one sample of the counters; the caps as of now."""
        last, self._last = self._last, now
        if last is None:
            return self.caps
        dt = now.t - last.t
        d_rx, d_tx = now.rx - last.rx, now.tx - last.tx
        d_in, d_out = now.own_in - last.own_in, now.own_out - last.own_out
        if dt <= 0 or min(d_rx, d_tx, d_in, d_out) < 0:
            return self.caps
        own_rx = d_in + (d_out if self.loopback else 0)
        own_tx = d_out + (d_in if self.loopback else 0)
        self.other_rx = self._smooth(self.other_rx, max(0, d_rx - own_rx) / dt, dt)
        self.other_tx = self._smooth(self.other_tx, max(0, d_tx - own_tx) / dt, dt)
        self.caps = Caps(
            self._limit(self.caps.download, self.other_rx, dt),
            self._limit(self.caps.upload, self.other_tx, dt),
            self.other_rx,
            self.other_tx,
        )
        return self.caps

    def _smooth(self, average: float, rate: float, dt: float) -> float:
        alpha = 1.0 - math.exp(-dt / self.tau) if self.tau > 0 else 1.0
        return average + alpha * (rate - average)

    def _limit(self, current: int, other: float, dt: float) -> int:
        target = max(self.floor, int(self.budget - other))
        if target <= current:
            return target
        return min(target, int(current + self.rise_per_sec * dt))


def read_counters(nic: str, proc_net_dev: Path = Path("/proc/net/dev")) -> tuple[int, int]:
    """The interface's (rx bytes, tx bytes) since boot, from /proc/net/dev."""
    try:
        text = proc_net_dev.read_text()
    except OSError as e:
        raise NicError(f"cannot read {proc_net_dev}: {e.strerror or e}") from e
    for line in text.splitlines()[2:]:
        name, colon, fields = line.partition(":")
        if colon and name.strip() == nic:
            values = fields.split()
            if len(values) < 9 or not (values[0].isdigit() and values[8].isdigit()):
                raise NicError(f"cannot parse the counters of {nic!r} in {proc_net_dev}")
            return int(values[0]), int(values[8])
    raise NicError(f"no interface {nic!r} in {proc_net_dev}")


def link_speed(nic: str, sys_class_net: Path = Path("/sys/class/net")) -> int | None:
    """The link's speed in bytes/s (the kernel gives Mb/s), or None where it gives none (lo, virtual
    interfaces, a link that is down)."""
    try:
        text = (sys_class_net / nic / "speed").read_text().strip()
    except OSError:
        return None
    return int(text) * 125_000 if text.isdigit() and int(text) > 0 else None
