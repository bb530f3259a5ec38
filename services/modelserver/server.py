"""A local, Range-capable, Hugging Face-like model file server for tests, the demo and benchmarks.

Stdlib only. `ModelServer` serves files under a root directory over HTTP/1.1 with keep-alive:

- ``GET|HEAD /{org}/{repo}/resolve/{rev}/{path...}`` serves ``root/{org}/{repo}/{path}`` (rev names no
  other content) with ``X-Repo-Commit``, as a hub does: ``rev`` itself when it is a 40-hex commit, else
  a commit made up from the repo and ``rev`` (`made_up_commit`), so a hive can place the file in
  its Hugging Face cache; with ``etag="sha256"`` the ETag is the digest the cache names the blob by,
  with ``etag="xet"`` 64 hex digits that are not the sha256 (as the hub's CDN's Xet hash is).
  A resolve at that made-up commit is the same file, and counts (faults, records) as one at ``rev``;
- any other ``GET|HEAD /{path}`` serves ``root/{path}``.

It answers single byte ranges (206/416), honours If-Range, and can misbehave on purpose per path
(see `Fault`): dropped or stalled connections, short bodies, error statuses, redirects, auth, rate caps
and validators that change. Every request is recorded (`RequestRecord`).
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from services.modelserver.answer import Answer, text_answer
from services.modelserver.faults import Fault, Faults, auth_ok
from services.modelserver.files import MIB, generate_file, parse_size, sha256_file
from services.modelserver.handler import ModelHandler
from services.modelserver.ranges import RangeNotSatisfiable, parse_range, select_range
from services.modelserver.threaded import RequestRecord, ThreadedServer, serve_until_signalled

__all__ = [
    "CHANGED_MTIME_SHIFT",
    "ETAG_MODES",
    "MIB",
    "Fault",
    "ModelServer",
    "RangeNotSatisfiable",
    "RequestRecord",
    "generate_file",
    "made_up_commit",
    "main",
    "parse_range",
    "parse_size",
    "sha256_file",
]

CHANGED_MTIME_SHIFT = 3600.0  # seconds added to Last-Modified once a path's validators "change"
ETAG_MODES = ("sha256", "xet", "mtime", "none")


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    size: int
    mtime_ns: int


def made_up_commit(repo_id: str, revision: str) -> str:
    """The commit this server says `revision` of `repo_id` names: the revision when it is one."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def _changed(etag: str) -> str:
    """A different validator of the same shape: '"abc"' -> '"abc-changed"'."""
    return etag[:-1] + '-changed"' if etag.endswith('"') else etag + "-changed"


class ModelServer(ThreadedServer[RequestRecord]):
    """Serve `root` over HTTP on a background daemon thread. Use as a context manager or start()/stop()."""

    handler = ModelHandler
    thread_name = "modelserver"

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_bps: int | None = None,
        etag: str = "sha256",
    ) -> None:
        if etag not in ETAG_MODES:
            raise ValueError(f"etag must be one of {ETAG_MODES}, not {etag!r}")
        super().__init__(host, port)
        self.root = Path(root)
        self.rate_bps = rate_bps
        self.etag = etag
        self._faults = Faults()
        self._sha_cache: dict[Path, tuple[int, int, str]] = {}
        self._made_up: dict[tuple[str, str], str] = {}  # (repo, made-up commit) -> the revision it names

    # -- faults

    def set_fault(self, path: str, fault: Fault) -> None:
        """Misbehave on `path` (as in the URL, e.g. "/org/repo/resolve/main/model.bin"); resets its counters."""
        self._faults.set(path, fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- files

    def add_file(self, rel: str, size: int, seed: int = 0) -> str:
        """Generate `root/rel` with deterministic content; return its sha256 hex."""
        path = self.root / rel
        sha = generate_file(path, size, seed)
        st = path.stat()
        with self._lock:
            self._sha_cache[path.resolve()] = (st.st_size, st.st_mtime_ns, sha)
        return sha

    def sha256_of(self, rel: str) -> str:
        """The sha256 hex of `root/rel` (cached by size and mtime)."""
        path = (self.root / rel).resolve()
        st = path.stat()
        return self._sha256(_FileInfo(path, st.st_size, st.st_mtime_ns))

    def hub_url(self, org_repo: str, filename: str, rev: str = "main") -> str:
        return f"{self.url}/{org_repo}/resolve/{rev}/{filename}"

    # -- what to answer

    def _quiet_error(self, exc: BaseException | None) -> bool:
        """A client gone is not reported; other socket errors only while stopping."""
        return isinstance(exc, ConnectionError | TimeoutError) or (isinstance(exc, OSError) and self._stopping.is_set())

    def _lookup(self, url_path: str) -> _FileInfo | None:
        """Map a URL path to a regular file inside root, or None."""
        parts = [p for p in url_path.split("/") if p]
        if not parts or ".." in parts or any("\x00" in p for p in parts):
            return None
        if len(parts) >= 5 and parts[2] == "resolve":
            parts = parts[:2] + parts[4:]
        try:
            root = self.root.resolve()
            path = root.joinpath(*parts).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                return None
            st = path.stat()
        except (OSError, ValueError):
            return None
        return _FileInfo(path, st.st_size, st.st_mtime_ns)

    def _sha256(self, info: _FileInfo) -> str:
        with self._lock:
            cached = self._sha_cache.get(info.path)
        if cached is not None and cached[:2] == (info.size, info.mtime_ns):
            return cached[2]
        sha = sha256_file(info.path)
        with self._lock:
            self._sha_cache[info.path] = (info.size, info.mtime_ns, sha)
        return sha

    def _validators(self, info: _FileInfo, changed: bool) -> tuple[str | None, str]:
        """(ETag or None, Last-Modified) for a file, altered when the path's validators have `changed`."""
        mtime = info.mtime_ns / 1e9 + (CHANGED_MTIME_SHIFT if changed else 0.0)
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        etag: str | None = None
        if self.etag == "sha256":
            etag = f'"{self._sha256(info)}"'
        elif self.etag == "xet":  # 64 hex, but not the sha256
            etag = f'"{hashlib.sha256(self._sha256(info).encode()).hexdigest()}"'
        elif self.etag == "mtime":
            etag = f'W/"{info.size}-{info.mtime_ns}"'
        if etag is not None and changed:
            etag = _changed(etag)
        return etag, last_modified

    def _canonical(self, url_path: str) -> tuple[str, str | None]:
        """(the path faults and records are kept under, the commit to answer): a resolve at the commit
        this server made up for a revision counts as a resolve at that revision, so a fault set on
        `.../resolve/main/x` also holds for the hive's `.../resolve/{commit}/x`."""
        parts = url_path.split("/")
        if len(parts) < 6 or parts[3] != "resolve":
            return url_path, None
        repo_id, revision = f"{parts[1]}/{parts[2]}", parts[4]  # (the handler has unquoted the path)
        with self._lock:
            named = self._made_up.get((repo_id, revision))
            if named is None:
                self._made_up[(repo_id, made_up_commit(repo_id, revision))] = revision
        if named is not None:
            parts[4] = named
            return "/".join(parts), made_up_commit(repo_id, named)
        return url_path, made_up_commit(repo_id, revision)

    def answer(self, method: str, url_path: str, headers: dict[str, str]) -> tuple[str, Answer]:
        """(the path the request counts under, what to answer it), for the handler (`Answering`)."""
        url_path, commit = self._canonical(url_path)
        answer = self._answer_for(method, url_path, headers, headers.get("authorization"))
        if commit is not None and (answer.status < 400 or answer.status == 416):  # (416: an empty file)
            answer.headers["X-Repo-Commit"] = commit
        return url_path, answer

    def _answer_for(self, method: str, url_path: str, headers: dict[str, str], authorization: str | None) -> Answer:
        fault, number, status = self._faults.take_request(url_path, authorization)
        retry = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if not auth_ok(fault, authorization):
            return text_answer(401, {"WWW-Authenticate": "Bearer"})
        if fault.always_status is not None:
            return text_answer(fault.always_status, retry)
        if status is not None:
            return text_answer(status, retry)
        info = self._lookup(url_path)
        if fault.redirect_to is not None:  # (a hub's redirect to its CDN names the commit too)
            return self._redirect(fault.redirect_to, info)
        if info is None:
            return text_answer(404)
        changed = fault.change_etag_after is not None and number > fault.change_etag_after
        answer = self._file(info, headers, fault, changed)
        if method == "GET" and answer.file is not None:
            answer.cut = self._faults.take_cut(url_path, answer.stop - answer.start)
        return answer

    def _redirect(self, location: str, info: _FileInfo | None) -> Answer:
        headers = {"Location": location, "Content-Length": "0"}
        if info is not None:
            headers["X-Linked-Etag"] = f'"{self._sha256(info)}"'
            headers["X-Linked-Size"] = str(info.size)
        return Answer(302, headers)

    def _file(self, info: _FileInfo, headers: dict[str, str], fault: Fault, changed: bool) -> Answer:
        etag, last_modified = self._validators(info, changed)
        out = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "Last-Modified": last_modified}
        if etag is not None:
            out["ETag"] = etag
        if_range = headers.get("if-range")
        applies = not fault.ignore_range and (if_range is None or if_range in (etag, last_modified))
        sel = select_range(headers.get("range") if applies else None, info.size)
        out.update(sel.headers)
        if sel.status == 416:
            return Answer(416, out)
        rate = fault.rate_bps if fault.rate_bps is not None else self.rate_bps
        return Answer(sel.status, out, file=info.path, start=sel.start, stop=sel.stop, rate_bps=rate)


# --------------------------------------------------------------------------- CLI


def _generate_spec(text: str) -> tuple[str, int]:
    rel, sep, size = text.rpartition(":")
    parts = rel.split("/")
    if not sep or not rel or rel.startswith("/") or ".." in parts:
        raise argparse.ArgumentTypeError(f"expected org/repo/file.bin:SIZE, got {text!r}")
    try:
        return rel, parse_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rbee-modelserver", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rate-bps", type=int, default=None, help="per-response cap, bytes/second")
    parser.add_argument(
        "--generate",
        nargs="+",
        action="extend",
        type=_generate_spec,
        default=[],
        metavar="REL:SIZE",
        help="create root/REL with SIZE deterministic bytes unless it exists with that size (K/M/G suffixes)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve `--root`, print one JSON line {"url", "files": {rel: sha256}}, run until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    server = ModelServer(root, host=args.host, port=args.port, rate_bps=args.rate_bps)
    files: dict[str, str] = {}
    for rel, size in args.generate:
        path = root / rel
        if path.is_file() and path.stat().st_size == size:
            files[rel] = server.sha256_of(rel)
        else:
            files[rel] = server.add_file(rel, size, seed=zlib.crc32(rel.encode()))
    serve_until_signalled(server, lambda: {"url": server.url, "files": files})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
