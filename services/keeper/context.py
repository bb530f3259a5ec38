"""What every keeper command gets: its arguments, streams, environment and queen client; exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console

from services.keeper.client import QueenClient, QueenError
from shared.models import DownloadStatus

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "TERMINAL_EXIT",
    "Context",
    "describe",
    "exit_for",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_UNREACHABLE = 4
EXIT_NOT_FOUND = 5
EXIT_ERROR = 6
EXIT_INTERRUPTED = 130
TERMINAL_EXIT: dict[str, int] = {
    DownloadStatus.COMPLETE: EXIT_OK,
    DownloadStatus.FAILED: EXIT_FAILED,
    DownloadStatus.CANCELLED: EXIT_CANCELLED,
}


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO
    environ: Mapping[str, str]
    client: QueenClient

    @property
    def mode(self) -> str:
        if self.args.json:
            return "json"
        no_color = bool(self.environ.get("NO_COLOR"))
        dumb = self.environ.get("TERM") == "dumb"
        if self.args.plain or no_color or dumb or not _isatty(self.out):
            return "plain"
        return "rich"

    def console(self) -> Console:
        return Console(file=self.out, highlight=False)

    def error(self, message: str) -> None:
        self.err.write(f"rbee-keeper: {message}\n")
        self.err.flush()

    def say(self, message: str) -> None:
        """A human remark: stdout normally, stderr under --json so stdout stays machine-readable."""
        stream = self.err if self.mode == "json" else self.out
        stream.write(message + "\n")
        stream.flush()

    def hint_command(self, command: str, download_id: str) -> str:
        queen = f" --queen {self.args.queen}" if self.args.queen else ""
        return f"rbee-keeper{queen} {command} {download_id}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def exit_for(exc: QueenError) -> int:
    if exc.status == 404:
        return EXIT_NOT_FOUND
    if exc.status in (400, 422):
        return EXIT_USAGE
    return EXIT_ERROR


def describe(exc: QueenError) -> str:
    text = f"{exc.code}: {exc.message}"
    if exc.status == 401:
        text += " (set RBEE_API_TOKEN to the queen's token)"
    return text
