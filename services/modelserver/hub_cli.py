"""``python -m services.modelserver.hub_cli``: run the test hub (and its CDN) for the demo or by hand.

Builds one repo from generated files (deterministic bytes, written under ``--root`` and served from
disk) and small text files given inline (``--text config.json='{...}'``), prints one JSON line
``{"url", "cdn", "repo", "commit", "files": {path: sha256}}`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

from services.modelserver.files import parse_size
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Content, Generated
from services.modelserver.threaded import serve_until_signalled


def _file_spec(text: str) -> tuple[str, int]:
    path, sep, size = text.rpartition(":")
    if not sep or not path or path.startswith("/") or ".." in path.split("/"):
        raise argparse.ArgumentTypeError(f"expected path/in/repo:SIZE, got {text!r}")
    try:
        return path, parse_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _text_spec(text: str) -> tuple[str, bytes]:
    path, sep, content = text.partition("=")
    if not sep or not path or path.startswith("/") or ".." in path.split("/"):
        raise argparse.ArgumentTypeError(f"expected path/in/repo=TEXT, got {text!r}")
    return path, content.encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rbee-testhub", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="where generated files are written")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--repo", default="org/model")
    parser.add_argument("--file", nargs="+", action="extend", type=_file_spec, default=[], metavar="PATH:SIZE")
    parser.add_argument("--text", action="append", type=_text_spec, default=[], metavar="PATH=TEXT")
    args = parser.parse_args(argv)
    hub = Hub(args.root, host=args.host, port=args.port)
    hub.add_repo(args.repo)
    content: dict[str, Content] = {p: Generated(size, zlib.crc32(p.encode())) for p, size in args.file}
    content.update(args.text)
    commit = hub.commit(args.repo, content)
    files = {p: hub.file(args.repo, p).sha256 for p in content}
    serve_until_signalled(
        hub, lambda: {"url": hub.url, "cdn": hub.cdn.url, "repo": args.repo, "commit": commit, "files": files}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
