"""A faithful local Hugging Face Hub for tests: the hub's HTTP answers, with a separate CDN host.

Stdlib only. `Hub` listens on one loopback port and starts its `Cdn` (cdn.py) on another; repos,
commits and refs are `hub_repo.HubRepo`s changed through the Python API (`add_repo`, `commit`,
`move_branch`, `add_token`, `grant`). What it answers, as the real hub does for huggingface_hub:

``GET|HEAD /{repo}/resolve/{rev}/{path}``
    ``{repo}`` is ``org/name`` or a single name (``gpt2``); ``rev`` a branch, a 40-hex commit or
    ``refs/pr/N`` (hub_paths.py). Every answer carries ``X-Repo-Commit`` (the 40-hex commit ``rev`` names).
    A small (non-LFS) file: a relative 307 to ``/api/resolve-cache/models/{repo}/{commit}/{path}`` (no
    ETag of its own), whose 200 carries its bytes, ``ETag: "<git blob sha1>"``, ``Content-Length``, single
    ranges (206/416) and If-Range. An LFS file: 302 to a signed, expiring URL on the CDN with
    ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size``, ``X-Xet-Hash``, ``Link: <...>; rel="xet-auth"`` and
    no ``ETag`` of its own, and a short text body (so the 302's Content-Length is not the file's size);
    the CDN's own ``ETag`` is the Xet hash. HEAD answers the same headers without a body:
    huggingface_hub's `get_hf_file_metadata` sends HEAD, follows the relative 307, not the 302.
``GET /api/models/{repo}[/revision/{rev}]``
    `model_info` JSON (hub_json.py): ``id``, ``sha``, ``siblings``; ``?blobs=true`` adds sizes, blob ids, lfs.
``GET /api/models/{repo}/tree/{rev}[/{path}]``
    the tree (``?recursive=true`` for all of it), `tree_page_size` entries per page with
    ``Link: <{hub}/api/...&cursor=...>; rel="next"`` until the last page.

Errors (hub_access.py) are JSON ``{"error": message}`` with ``X-Error-Code`` and ``X-Error-Message``:
``RepoNotFound`` (401 anonymous / 404 with a token), ``GatedRepo`` (401 / 403 on resolve, names the
repo page), ``RevisionNotFound`` and ``EntryNotFound`` (404), and 401 ``Invalid credentials in
Authorization header`` for an unknown token. A gated repo's revision and tree APIs answer 200 to a
caller without access, every LFS sha256 and Xet hash masked as 64 ``*``.

Switches (`HubSwitches` fields, and methods):

- ``small_file_redirect``: True (the real hub's way); False answers a small file's resolve 200 itself;
- ``url_ttl``: seconds a CDN URL stays valid (negative: born expired); `cdn.advance_clock` ages URLs;
- ``tree_page_size``: entries per tree page (the real hub's is 1000; small in tests);
- ``damaged``: paths of small files served with their first byte flipped, under the right ETag
  (an LFS file's bytes are damaged by writing into its blob on disk, `HubFile.disk`);
- ``Hub(cdn_max_unranged_bytes=...)``: the CDN refuses unbounded reads of bigger blobs (cdn.py);
- ``Hub(uplink_bps=...)``: the hub's uplink, one total byte rate shared by every body the CDN and the
  hub itself send, over all their connections (`hub.uplink`, a `cdn.Uplink`; `hub.uplink.set_rate`
  changes it, None lifts it); unlimited by default;
- `limits.set_quota(q, window)`: at most q resolves per client IP per window, then 429 with
  ``RateLimit``, ``RateLimit-Policy`` and ``Retry-After``; `limits.fail_next(k, reset)`: the next k
  resolves answer 429 (ratelimit.py);
- `rename_repo(old, new)`: the old id answers a relative 307 to the same path under the new id.

Records: `records()` / `total_bytes_sent()` of the hub and of `hub.cdn`; `resolver_calls()` counts
resolves. Big files are `Generated(size, seed)` content, written once under `root` and sent from disk.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote

from services.modelserver.answer import Answer, file_answer
from services.modelserver.cdn import CLOUDFRONT_MAX_BYTES, Cdn, Uplink
from services.modelserver.hub_access import (
    HubError,
    bearer_token,
    check_access,
    entry_not_found,
    resolve_revision,
)
from services.modelserver.hub_json import model_info, page, tree_entries
from services.modelserver.hub_paths import Target, api_target, cache_target, resolve_target, split_revision
from services.modelserver.hub_repo import Commit, Content, HubFile, HubRepo, LfsRule, make_file
from services.modelserver.loopback import LoopbackServer
from services.modelserver.ratelimit import ResolverLimit, Verdict

JSON = "application/json; charset=utf-8"


@dataclass
class HubSwitches:
    small_file_redirect: bool = True
    url_ttl: float = 3600.0
    tree_page_size: int = 1000
    damaged: set[str] = field(default_factory=set)  # small files served with their first byte flipped


def _error(err: HubError, extra: dict[str, str] | None = None) -> Answer:
    headers = {"Content-Type": JSON, "X-Error-Message": err.message, "X-Request-Id": secrets.token_hex(8)}
    if err.code is not None:
        headers["X-Error-Code"] = err.code
    return Answer.of(err.status, {**headers, **(extra or {})}, json.dumps({"error": err.message}).encode())


def _json(body: Any, extra: dict[str, str] | None = None) -> Answer:
    return Answer.of(200, {"Content-Type": JSON, **(extra or {})}, json.dumps(body).encode())


class Hub(LoopbackServer):
    server_header = "rbee-testhub/0.1"

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_max_unranged_bytes: int = CLOUDFRONT_MAX_BYTES,
        switches: HubSwitches | None = None,
        uplink_bps: float | None = None,
    ) -> None:
        super().__init__(host, port)
        self.root = Path(root)
        self.uplink = Uplink(uplink_bps)
        self.cdn = Cdn(host, 0, cdn_max_unranged_bytes, uplink=self.uplink)
        self.switches = switches or HubSwitches()
        self.limits = ResolverLimit()
        self.tokens: set[str] = set()
        self._repos: dict[str, HubRepo] = {}
        self._renamed: dict[str, str] = {}
        self._state = threading.Lock()

    # -- lifecycle

    def start(self) -> Self:
        self.cdn.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.cdn.stop()

    # -- the repository API tests use

    def add_repo(
        self, repo_id: str, *, gated: bool = False, private: bool = False, lfs_rule: LfsRule | None = None
    ) -> HubRepo:
        """A new repo whose main has one commit holding `.gitattributes`, as the real hub creates it."""
        repo = HubRepo(repo_id, gated=gated, private=private, lfs_rule=lfs_rule or LfsRule())
        with self._state:
            self._repos[repo_id] = repo
        self.commit(repo_id, {".gitattributes": repo.lfs_rule.gitattributes()}, message="initial commit")
        return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, Content],
        branch: str = "main",
        delete: Iterable[str] = (),
        message: str = "",
        parent: str | None = None,
    ) -> str:
        """Commit `files` (bytes, a Path, or `Generated`) on top of `branch` (or `parent`); return the sha.

        A branch that does not exist yet (``refs/pr/1`` too) starts from main's head.
        """
        repo = self.repo(repo_id)
        made = {path: make_file(path, content, repo.lfs_rule, self.root) for path, content in files.items()}
        for f in made.values():
            if f.lfs:
                self.cdn.add_blob(f)
        with self._state:
            return repo.commit(made, branch, delete, message, parent).sha

    def move_branch(self, repo_id: str, branch: str, sha: str) -> None:
        with self._state:
            self.repo(repo_id).move(branch, sha)

    def add_token(self, token: str) -> None:
        """A valid token (of some user); it reads public repos, and what `grant` adds it to."""
        with self._state:
            self.tokens.add(token)

    def grant(self, repo_id: str, token: str) -> None:
        """Let `token` read a private repo / download from a gated one (an approved access request)."""
        with self._state:
            self.tokens.add(token)
            self.repo(repo_id).allowed.add(token)

    def rename_repo(self, old: str, new: str) -> None:
        with self._state:
            self._repos[new] = self._repos.pop(old)
            self._repos[new].repo_id = new
            self._renamed[old] = new

    def repo(self, repo_id: str) -> HubRepo:
        return self._repos[repo_id]

    def file(self, repo_id: str, path: str, revision: str = "main") -> HubFile:
        commit = self.repo(repo_id).resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return commit.files[path]

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The URL huggingface_hub builds (`hf_hub_url`): the revision quoted with safe=""."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def resolver_calls(self, repo_id: str | None = None) -> int:
        prefix = f"/{repo_id}/resolve/" if repo_id else None
        return sum(1 for r in self.records() if "/resolve/" in r.path and (prefix is None or r.path.startswith(prefix)))

    # -- HTTP

    def answer(self, method: str, raw_path: str, query: str, headers: dict[str, str], client: str) -> Answer:
        parts = [unquote(p) for p in raw_path.split("/")[1:]]
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        known = self._knows
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 3:
                return self._api(api_target(parts[2:], known), raw_path, params, headers)
            if parts[:3] == ["api", "resolve-cache", "models"] and (target := cache_target(parts[3:])):
                return self._resolve(target, headers, client, cached=True)
            if parts[:1] != ["api"] and (target := resolve_target(parts, known)) is not None:
                return self._resolve(target, headers, client)
        except HubError as err:
            return _error(err)
        return _error(HubError(404, None, "Not Found"))

    def _knows(self, repo_id: str) -> bool:
        with self._state:
            return repo_id in self._repos or repo_id in self._renamed

    def _renamed_to(self, repo_id: str, raw_path: str, query: str = "") -> Answer | None:
        new = self._renamed.get(repo_id)
        if new is None:
            return None
        location = raw_path.replace(f"/{repo_id}/", f"/{new}/", 1) + (f"?{query}" if query else "")
        return Answer.of(307, {"Location": location, "Content-Type": "text/plain; charset=utf-8"}, b"Redirecting")

    def _access(self, repo_id: str, headers: dict[str, str], download: bool) -> tuple[HubRepo, bool]:
        """The repo, and whether the caller may download from it (else a gated repo's digests are masked)."""
        token = bearer_token(headers)
        with self._state:
            repo = self._repos.get(repo_id)
            repo = check_access(repo, repo_id, token, self.tokens, download, f"{self.url}/{repo_id}")
            return repo, not repo.gated or token in repo.allowed

    def _commit(self, repo: HubRepo, revision: str) -> Commit:
        with self._state:
            return resolve_revision(repo, revision)

    def _resolve(self, target: Target, headers: dict[str, str], client: str, cached: bool = False) -> Answer:
        raw = f"/{target.repo_id}/resolve/{quote(target.revision, safe='')}/{quote(target.path)}"
        if not cached and (moved := self._renamed_to(target.repo_id, raw)) is not None:
            return moved
        # the resolve-cache hop a small file's resolve leads to is on the API's path, not a resolve: the
        # resolver quota counts the resolve it came from (one per file, as huggingface_hub's accounting has it)
        verdict = self.limits.take(client) if not cached else Verdict(True, {})
        if not verdict.allowed:
            message = "You have exceeded our hourly quotas for action 'resolve'. We invite you to retry later."
            return _error(HubError(429, None, message), verdict.headers)
        repo, _ = self._access(target.repo_id, headers, download=True)
        commit = self._commit(repo, target.revision)
        base = {**verdict.headers, "X-Repo-Commit": commit.sha, "Vary": "Origin, Accept-Encoding"}
        f = commit.files.get(target.path)
        if f is None:
            return _error(entry_not_found(target.path), base)
        if f.lfs:
            location = self.cdn.sign(f, self.switches.url_ttl, f.path)
            xet_auth = f"{self.url}/api/models/{target.repo_id}/xet-read-token/{commit.sha}"
            linked = {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size), "X-Xet-Hash": f.xet_hash}
            linked["Link"] = f'<{xet_auth}>; rel="xet-auth"'
            body = f"Found. Redirecting to {location}".encode()
            return Answer.of(302, {**base, **linked, "Location": location, "Content-Type": "text/plain"}, body)
        etag = f'"{f.blob_id}"'
        if self.switches.small_file_redirect and not cached:
            location = f"/api/resolve-cache/models/{target.repo_id}/{commit.sha}/{quote(f.path)}"
            body = f"Temporary Redirect. Redirecting to {location}".encode()
            return Answer.of(307, {**base, "Location": location, "Content-Type": "text/plain"}, body)
        data = f.content()
        if f.path in self.switches.damaged and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]  # a bad mirror: the digests stay, one byte does not
        return file_answer(f.size, etag, headers, base, data=data)

    def _api(self, target: Target, raw_path: str, params: dict[str, str], headers: dict[str, str]) -> Answer:
        rest = target.rest
        repo, may_download = self._access(target.repo_id, headers, download=False)
        if not rest or rest[0] == "revision":
            revision, _ = split_revision(rest[1:])
            commit = self._commit(repo, revision)
            blobs = params.get("blobs", "").lower() in ("1", "true")
            return _json(model_info(repo, commit, blobs, masked=not may_download))
        if rest[0] != "tree":
            raise HubError(404, None, "Not Found")
        revision, path_parts = split_revision(rest[1:])
        commit = self._commit(repo, revision)
        recursive = params.get("recursive", "").lower() in ("1", "true")
        entries = tree_entries(commit, "/".join(path_parts), recursive, masked=not may_download)
        if entries is None:
            raise entry_not_found("/".join(path_parts))
        items, cursor = page(entries, params.get("cursor"), self.switches.tree_page_size)
        extra: dict[str, str] = {}
        if cursor is not None:
            link = f"{self.url}{raw_path}?recursive={str(recursive).lower()}&expand=false&cursor={cursor}"
            extra["Link"] = f'<{link}>; rel="next"'
        return _json(items, extra)
