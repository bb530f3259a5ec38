"""rbee-keeper: start, follow, list and cancel model downloads through the queen.

Exit codes: 0 done, 1 download failed, 2 usage error or request rejected, 3 download cancelled,
4 queen unreachable, 5 not found, 6 other error from the queen, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from services.keeper.client import (
    DEFAULT_QUEEN_URL,
    QueenClient,
    QueenError,
    QueenUnreachable,
    ReconnectPolicy,
)
from services.keeper.render import (
    BarRenderer,
    JsonRenderer,
    PlainRenderer,
    Renderer,
    Snapshot,
    display_name,
    format_table,
    human_bytes,
    human_speed,
    terminal_message,
)
from shared.limits import SHA256_RE

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_UNREACHABLE = 4
EXIT_NOT_FOUND = 5
EXIT_ERROR = 6
EXIT_INTERRUPTED = 130

STATUSES = ("queued", "starting", "downloading", "complete", "failed", "cancelled")
_TERMINAL_EXIT = {"complete": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


def _sha256(text: str) -> str:
    if not SHA256_RE.fullmatch(text):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text.lower()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (defaults only on the top-level parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--queen", metavar="URL", default=default, help=f"queen URL (RBEE_QUEEN_URL, {DEFAULT_QUEEN_URL})"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="no colours or bar: one line per update (automatic when stdout is not a terminal or NO_COLOR is set)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine output: stream events as JSON lines; other commands print the queen's JSON",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbee-keeper",
        description="Start and follow model downloads through an rbee queen.",
        epilog="exit codes: 0 done, 1 download failed, 2 usage error or rejected request, 3 cancelled, "
        "4 queen unreachable, 5 not found, 6 other queen error, 130 interrupted",
        parents=[_common_options(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_options(suppress=True)

    follow = argparse.ArgumentParser(add_help=False)
    follow.add_argument(
        "--cancel-on-interrupt", action="store_true", help="on Ctrl-C cancel the download instead of leaving it running"
    )
    follow.add_argument(
        "--reconnect-timeout",
        type=_positive,
        default=60.0,
        metavar="SECS",
        help="give up when the stream cannot be re-established for this long (default 60)",
    )

    p = sub.add_parser("download", parents=[common, follow], help="start a download and follow it to the end")
    p.add_argument("model_ref", metavar="MODEL_REF", help="hf:org/repo[@rev]::file=path or an http(s) URL")
    p.add_argument("--hive", metavar="ID", help="run it on this hive (default: the least busy healthy one)")
    p.add_argument("--sha256", type=_sha256, metavar="HEX", help="expected sha256 of the file")

    p = sub.add_parser("watch", parents=[common, follow], help="follow a running download")
    p.add_argument("download_id", metavar="ID")

    p = sub.add_parser("ls", parents=[common], help="list downloads on every hive")
    p.add_argument("--status", choices=STATUSES, help="only downloads in this status")

    p = sub.add_parser("cancel", parents=[common], help="cancel a download (its partial file is removed)")
    p.add_argument("download_id", metavar="ID")

    sub.add_parser("hives", parents=[common], help="list hives with health and active downloads")
    return parser


@dataclass
class _Context:
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


def _exit_for(exc: QueenError) -> int:
    if exc.status == 404:
        return EXIT_NOT_FOUND
    if exc.status in (400, 422):
        return EXIT_USAGE
    return EXIT_ERROR


def _describe(exc: QueenError) -> str:
    text = f"{exc.code}: {exc.message}"
    if exc.status == 401:
        text += " (set RBEE_API_TOKEN to the queen's token)"
    return text


# --------------------------------------------------------------------------- following a download


def _make_renderer(ctx: _Context) -> Renderer:
    if ctx.mode == "json":
        return JsonRenderer(ctx.out, ctx.err)
    if ctx.mode == "plain":
        return PlainRenderer(ctx.out)
    return BarRenderer(ctx.console())


def _follow(ctx: _Context, snap: Snapshot) -> int:
    renderer = _make_renderer(ctx)
    policy = ReconnectPolicy(budget=ctx.args.reconnect_timeout)
    renderer.start(snap)
    try:
        for event in ctx.client.follow(snap.download_id, policy, on_reconnect=renderer.note):
            snap.apply(event)
            renderer.update(event, snap)
            if event.is_terminal:
                break
    except KeyboardInterrupt:
        renderer.stop()
        return _interrupted(ctx, snap)
    finally:
        renderer.stop()
    message = terminal_message(snap)
    if snap.status == "complete":
        ctx.say(message)
    else:
        ctx.err.write(message + "\n")
        ctx.err.flush()
    return _TERMINAL_EXIT.get(snap.status, EXIT_ERROR)


def _interrupted(ctx: _Context, snap: Snapshot) -> int:
    did = snap.download_id
    if ctx.args.cancel_on_interrupt:
        try:
            ctx.client.cancel(did)
        except (QueenError, QueenUnreachable) as exc:
            ctx.error(f"interrupted; could not cancel download {did}: {exc}")
            return EXIT_INTERRUPTED
        ctx.error(f"interrupted; cancelled download {did}")
        return EXIT_INTERRUPTED
    where = f" on {snap.hive_id}" if snap.hive_id else ""
    ctx.err.write(
        f"\nrbee-keeper: interrupted; download {did} keeps running{where}.\n"
        f"  follow it again: {ctx.hint_command('watch', did)}\n"
        f"  cancel it:       {ctx.hint_command('cancel', did)}\n"
    )
    ctx.err.flush()
    return EXIT_INTERRUPTED


def cmd_download(ctx: _Context) -> int:
    args = ctx.args
    state, created = ctx.client.start_download(args.model_ref, args.hive, args.sha256)
    snap = Snapshot.from_state(state)
    if ctx.mode != "json":
        verb = "started" if created else "joined the running download of"
        ctx.say(f"{verb} {snap.name} on {snap.hive_id or '?'} (id {snap.download_id})")
    return _follow(ctx, snap)


def cmd_watch(ctx: _Context) -> int:
    snap = Snapshot.from_state(ctx.client.download(ctx.args.download_id))
    if not snap.download_id:
        snap.download_id = ctx.args.download_id
    return _follow(ctx, snap)


# --------------------------------------------------------------------------- one-shot commands


def _progress_cell(snap: Snapshot) -> str:
    pct = snap.percent_value
    size = f"{human_bytes(snap.bytes)}/{human_bytes(snap.total)}" if snap.total is not None else human_bytes(snap.bytes)
    return f"{pct:.1f}% {size}" if pct is not None else size


def _print_table(ctx: _Context, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if ctx.mode == "rich":
        table = Table(title=title, title_justify="left")
        for header in headers:  # only the long free-text columns may wrap
            table.add_column(header, overflow="fold", no_wrap=header not in ("MODEL", "URL"))
        for row in rows:
            table.add_row(*row)
        ctx.console().print(table)
        return
    for line in format_table(headers, rows):
        ctx.out.write(line + "\n")
    ctx.out.flush()


def _hive_name(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("hive_id") or item.get("id") or item)
    return str(item)


def cmd_ls(ctx: _Context) -> int:
    status = ctx.args.status
    body = ctx.client.downloads(status)
    downloads = [d for d in body.get("downloads", []) if status is None or d.get("status") == status]
    unreachable = [_hive_name(h) for h in body.get("unreachable_hives", [])]
    if ctx.mode == "json":
        ctx.out.write(json.dumps({**body, "downloads": downloads}) + "\n")
    else:
        rows = []
        for state in downloads:
            snap = Snapshot.from_state(state)
            speed = human_speed(snap.speed_bps or 0) if snap.status == "downloading" else "-"
            rows.append(
                [snap.download_id, snap.hive_id or "-", snap.model_ref or "-", snap.status, _progress_cell(snap), speed]
            )
        headers = ["ID", "HIVE", "MODEL", "STATUS", "PROGRESS", "SPEED"]
        if rows:
            _print_table(ctx, "downloads", headers, rows)
        else:
            ctx.say("no downloads" + (f" with status {status}" if status else ""))
    for hive in unreachable:
        ctx.error(f"warning: hive {hive} is unreachable; its downloads are not listed")
    return EXIT_OK


def cmd_cancel(ctx: _Context) -> int:
    did = ctx.args.download_id
    try:
        state = ctx.client.cancel(did)
    except QueenError as exc:
        finished = exc.body.get("error", {}).get("state") if exc.status == 409 else None
        if isinstance(finished, dict):
            ctx.error(f"download {did} already finished ({finished.get('status', '?')}); nothing to cancel")
            return EXIT_ERROR
        raise
    if ctx.mode == "json":
        ctx.out.write(json.dumps(state) + "\n")
    else:
        snap = Snapshot.from_state(state)
        ctx.say(f"cancelled {did} ({display_name(snap.model_ref)} on {snap.hive_id or '?'})")
    return EXIT_OK


def _health(hive: dict[str, Any]) -> str:
    if isinstance(hive.get("health"), str):
        return str(hive["health"])
    if isinstance(hive.get("healthy"), bool):
        return "healthy" if hive["healthy"] else "unhealthy"
    return "?"


def cmd_hives(ctx: _Context) -> int:
    hives = ctx.client.hives()
    if ctx.mode == "json":
        ctx.out.write(json.dumps({"hives": hives}) + "\n")
        return EXIT_OK
    if not hives:
        ctx.say("no hives registered")
        return EXIT_OK
    rows = []
    for hive in hives:
        active = hive.get("active_downloads", hive.get("active", "-"))
        health = _health(hive)
        if health != "healthy" and hive.get("last_error"):
            health += f" ({hive['last_error']})"
        rows.append([_hive_name(hive), str(hive.get("url", "-")), health, str(active)])
    _print_table(ctx, "hives", ["ID", "URL", "HEALTH", "ACTIVE"], rows)
    return EXIT_OK


_COMMANDS = {"download": cmd_download, "watch": cmd_watch, "ls": cmd_ls, "cancel": cmd_cancel, "hives": cmd_hives}


def run(argv: Sequence[str] | None, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    """The whole CLI with its streams and environment passed in; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(err)
        err.write("rbee-keeper: error: a command is required (download, watch, ls, cancel, hives)\n")
        return EXIT_USAGE
    queen = args.queen or environ.get("RBEE_QUEEN_URL") or DEFAULT_QUEEN_URL
    if not re.match(r"^https?://[^/\s]+", queen):
        err.write(f"rbee-keeper: error: the queen URL must be http(s)://host[:port], got {queen!r}\n")
        return EXIT_USAGE
    client = QueenClient(queen, token=environ.get("RBEE_API_TOKEN") or None)
    ctx = _Context(args, out, err, environ, client)
    try:
        return _COMMANDS[args.command](ctx)
    except QueenUnreachable as exc:
        ctx.error(str(exc))
        return EXIT_UNREACHABLE
    except QueenError as exc:
        ctx.error(_describe(exc))
        return _exit_for(exc)
    except KeyboardInterrupt:
        ctx.error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, sys.stdout, sys.stderr, os.environ)


if __name__ == "__main__":
    sys.exit(main())
