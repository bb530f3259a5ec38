"""`python -m services.demo` (`make demo`): arguments, signals and exit codes around `run.Demo`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import services.demo
from services.demo.procs import DemoError, suppress_interrupts
from services.demo.run import Demo
from services.modelserver.files import parse_size

__all__ = ["main"]


class _Terminated(Exception):
    """SIGTERM: unwind through the `finally` that stops the children."""


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.demo", description=(services.demo.__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=environ.get("RBEE_DEMO_SIZE", "32M"),
        help="size of each of the model's two shards, K/M/G = 1024 multiples (RBEE_DEMO_SIZE, default 32M)",
    )
    parser.add_argument(
        "--rate",
        type=_size,
        default=environ.get("RBEE_DEMO_RATE", "8M"),
        help="each hive's bandwidth limit in bytes/s, so the bar is visible (RBEE_DEMO_RATE, default 8M: about 8 s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(environ.get("RBEE_DEMO_DIR", "demo-run")),
        help="generated files, hive model dirs and logs (RBEE_DEMO_DIR, default ./demo-run)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, os.environ)

    def say(message: str) -> None:
        print(f"[demo] {message}", flush=True)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    demo = Demo(args.workdir.resolve(), args.size, args.rate, dict(os.environ), say)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return demo.run()
    except (DemoError, TimeoutError) as exc:
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; shutting down")
        return 130
    except _Terminated:
        say("terminated; shutting down")
        return 143
    finally:
        with suppress_interrupts():
            demo.procs.shutdown()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
