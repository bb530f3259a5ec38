"""rbee-keeper: start, follow, list and cancel model downloads and fleet pulls, and see and free the fleet's
models, through the queen.

Exit codes: 0 done, 1 download (or pull) failed, 2 usage error or request rejected, 3 download cancelled,
4 queen unreachable, 5 not found, 6 other error from the queen, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from services.keeper.client import DEFAULT_QUEEN_URL, QueenClient, QueenError, QueenUnreachable
from services.keeper.commands import cmd_cancel, cmd_hives, cmd_ls
from services.keeper.context import EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, Context, describe, exit_for
from services.keeper.follow import cmd_download, cmd_watch
from services.keeper.models import cmd_models, cmd_pin, cmd_rm, cmd_unpin
from services.keeper.pull import cmd_cancel_pull, cmd_pull, cmd_pulls, cmd_watch_pull
from shared.limits import SHA256_RE
from shared.models import DownloadStatus

__all__ = ["build_parser", "main", "run"]

STATUSES = tuple(s.value for s in DownloadStatus)


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
        description="Start and follow model downloads and fleet pulls through an rbee queen.",
        epilog="exit codes: 0 done, 1 download or pull failed, 2 usage error or rejected request, 3 cancelled, "
        "4 queen unreachable, 5 not found, 6 other queen error, 130 interrupted",
        parents=[_common_options(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_options(suppress=True)

    follow = argparse.ArgumentParser(add_help=False)
    follow.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="on Ctrl-C cancel the download (or pull) instead of leaving it running",
    )
    follow.add_argument(
        "--reconnect-timeout",
        type=_positive,
        default=60.0,
        metavar="SECS",
        help="give up when the stream cannot be re-established for this long (default 60)",
    )

    p = sub.add_parser("download", parents=[common, follow], help="start a download and follow it to the end")
    p.add_argument(
        "model_ref",
        metavar="MODEL_REF",
        help="hf:org/repo[@rev] (the whole model), hf:org/repo[@rev]::file=path (one file) or an http(s) URL",
    )
    p.add_argument(
        "--hive",
        metavar="ID",
        help="run it on this hive (default: the hive already pulling this model, else the least busy healthy one)",
    )
    p.add_argument("--sha256", type=_sha256, metavar="HEX", help="expected sha256 of the file")
    p.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="a whole model: only files matching this pattern (repeatable; as huggingface_hub's allow_patterns)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="a whole model: leave out files matching this pattern (repeatable; as ignore_patterns)",
    )

    p = sub.add_parser(
        "pull", parents=[common, follow], help="pull a whole model onto many hives at once and follow it to the end"
    )
    p.add_argument("model_ref", metavar="MODEL_REF", help="hf:org/repo[@rev], a whole model")
    p.add_argument(
        "--hives",
        action="append",
        required=True,
        metavar="all|ID,ID",
        help="every hive the queen knows (all), or these hives (separated by commas; repeatable)",
    )
    p.add_argument("--include", action="append", metavar="GLOB", help="only files matching this pattern (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="leave out files matching this (repeatable)")

    ids = "a download's id (dl-…) or a pull's (pull-…)"
    p = sub.add_parser("watch", parents=[common, follow], help="follow a running download or pull")
    p.add_argument("download_id", metavar="ID", help=ids)

    p = sub.add_parser("ls", parents=[common], help="list downloads on every hive")
    p.add_argument("--status", choices=STATUSES, help="only downloads in this status")

    sub.add_parser("pulls", parents=[common], help="list fleet pulls")

    p = sub.add_parser(
        "cancel", parents=[common], help="cancel a download (its partial file is removed), or a pull on every hive"
    )
    p.add_argument("download_id", metavar="ID", help=ids)

    sub.add_parser("hives", parents=[common], help="list hives with health and active downloads")

    sub.add_parser("models", parents=[common], help="the models on every hive (a column per hive) and their disks")
    hives = argparse.ArgumentParser(add_help=False)
    hives.add_argument(
        "--hives", metavar="all|ID,ID", help="these hives, or all (default: every hive that holds the model)"
    )
    p = sub.add_parser("rm", parents=[common, hives], help="remove a model (or one revision) from hives")
    p.add_argument("model", metavar="hf:org/repo")
    p.add_argument("--revision", metavar="COMMIT", help="only this revision (its blobs no other revision uses)")
    p.add_argument("--force", action="store_true", help="remove it even where it is pinned")
    for name, does in (("pin", "pin a model on hives: never evicted"), ("unpin", "unpin a model on hives")):
        p = sub.add_parser(name, parents=[common, hives], help=does)
        p.add_argument("model", metavar="hf:org/repo")
    return parser


_COMMANDS = {
    "download": cmd_download,
    "pull": cmd_pull,
    "watch": cmd_watch,
    "ls": cmd_ls,
    "pulls": cmd_pulls,
    "cancel": cmd_cancel,
    "hives": cmd_hives,
    "models": cmd_models,
    "rm": cmd_rm,
    "pin": cmd_pin,
    "unpin": cmd_unpin,
}
_OF_A_PULL = {"watch": cmd_watch_pull, "cancel": cmd_cancel_pull}  # given a pull's id (pull-…)


def _command(args: argparse.Namespace) -> Callable[[Context], int]:
    if args.command in _OF_A_PULL and str(args.download_id).startswith("pull-"):
        return _OF_A_PULL[args.command]
    return _COMMANDS[args.command]


def run(argv: Sequence[str] | None, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    """The whole CLI with its streams and environment passed in; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(err)
        commands = "download, pull, watch, ls, pulls, cancel, hives, models, rm, pin, unpin"
        err.write(f"rbee-keeper: error: a command is required ({commands})\n")
        return EXIT_USAGE
    queen = args.queen or environ.get("RBEE_QUEEN_URL") or DEFAULT_QUEEN_URL
    if not re.match(r"^https?://[^/\s]+", queen):
        err.write(f"rbee-keeper: error: the queen URL must be http(s)://host[:port], got {queen!r}\n")
        return EXIT_USAGE
    client = QueenClient(queen, token=environ.get("RBEE_API_TOKEN") or None)
    ctx = Context(args, out, err, environ, client)
    try:
        return _command(args)(ctx)
    except QueenUnreachable as exc:
        ctx.error(str(exc))
        return EXIT_UNREACHABLE
    except QueenError as exc:
        ctx.error(describe(exc))
        return exit_for(exc)
    except KeyboardInterrupt:
        ctx.error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, sys.stdout, sys.stderr, os.environ)


if __name__ == "__main__":
    sys.exit(main())
