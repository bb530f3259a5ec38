r"""Model refs -> what to fetch and where it lands. Pure; refuses anything unsafe.

- `hf:{org}/{repo}[@{rev}]::file={path}` -> one file, `{HF_ENDPOINT}/{org}/{repo}/resolve/{rev or main}/{path}`;
  `hf:{org}/{repo}[@{rev}]` -> the whole repository at `rev` (default `main`). Both land in the Hugging
  Face cache under `{models}/hub` (hf_cache.py) once the hub has named the commit: `ModelRef.hub_ref`.
  A repo id without a namespace (`hf:gpt2`), as huggingface_hub accepts one, is `gpt2` everywhere:
  `{HF_ENDPOINT}/gpt2/resolve/...`, `/api/models/gpt2/...`, `models--gpt2` in the cache.
- `http(s)://host[:port]/path[?query]` -> as given (without a fragment), stored at
  `_url/{host}[_{port}]/{path}`; a query is part of the download's identity, so it is part of the
  stored name too: `{name}?{query, '/' and '%' escaped}`. But a URL on HF_ENDPOINT's origin of the
  form `{HF_ENDPOINT}/{org}/{repo}/resolve/{rev}/{path}` (as users paste them) is the hub file the
  `hf:` ref `hf:{org}/{repo}@{rev}::file={path}` names, and is that ref but for its `raw` text.

A file path must be relative, made of plain segments: no `..` or `.`, no empty segments, no
backslash, NUL, control or invisible format characters or lone surrogates, no `.part` suffix (ours),
and every stored name fits a filesystem name (255 bytes as UTF-8). An `hf:` file path is the file's
name in the repository, never decoded: a `%` in it is a `%` (sent as `%25`), as in a listing of the
hub's tree. A URL's path is decoded, so there a percent-encoded `/`, `\`, `.` or `%` is refused.

`HIVE_ALLOWED_HOSTS` (see `parse_allowed_hosts`) narrows where a ref, and every redirect, may go.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from shared.digits import is_ascii_digits
from shared.limits import MAX_REF_LENGTH

__all__ = [
    "MAX_REF_LENGTH",
    "HostNotAllowed",
    "HubRef",
    "InvalidModelRef",
    "ModelRef",
    "check_repo_id",
    "check_repo_path",
    "host_allowed",
    "origin_of",
    "parse_allowed_hosts",
    "parse_model_ref",
    "resolve_in",
]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HF_RE = re.compile(
    rf"hf:(?:(?P<org>{_NAME})/)?(?P<repo>{_NAME})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?(?:::file=(?P<path>.+))?"
)
_REPO_ID_RE = re.compile(rf"(?:{_NAME}/)?{_NAME}")
# C0, DEL, C1 controls, backslash, lone surrogates (cannot name a file), and invisible format
# characters (bidi overrides, zero-width joiners, BOM) that make a name look like another
_BAD_CHARS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\\\ud800-\udfff"
    r"\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
_MAX_NAME_BYTES = 255  # one file or directory name, as the filesystem counts it
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)
_ENCODED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)
PART_SUFFIX = ".part"
_QUERY_SAFE = "=&+,;:@!$'()*-._~"  # kept as they are in a stored name; '/' and '%' are escaped


class InvalidModelRef(ValueError):
    code = "INVALID_MODEL_REF"


class HostNotAllowed(InvalidModelRef):
    """The URL's host is not in HIVE_ALLOWED_HOSTS."""

    code = "HOST_NOT_ALLOWED"


@dataclass(frozen=True, slots=True)
class HubRef:
    """What an `hf:` ref names on the hub: a repository at a revision, and one file of it or all."""

    endpoint: str  # HF_ENDPOINT without a trailing slash
    repo_id: str  # org/repo, or a name without a namespace (gpt2)
    revision: str
    file: str | None  # None: the whole repository

    def resolve_url(self, revision: str, path: str) -> str:
        return f"{self.endpoint}/{self.repo_id}/resolve/{quote(revision, safe='')}/{quote(path, safe='/')}"

    @property
    def endpoint_origin(self) -> str:
        return origin_of(self.endpoint)

    @property
    def revision_url(self) -> str:
        return f"{self.endpoint}/api/models/{self.repo_id}/revision/{quote(self.revision, safe='')}"


@dataclass(frozen=True, slots=True)
class ModelRef:
    raw: str
    url: str  # the file's URL; for a whole model, its revision API URL
    rel_path: PurePosixPath | None  # where a URL download lands under the models dir (None: the hub cache)
    hub: bool  # fetched from HF_ENDPOINT: the only place HF_TOKEN may go
    hub_ref: HubRef | None = None  # an hf: ref

    @property
    def whole_model(self) -> bool:
        return self.hub_ref is not None and self.hub_ref.file is None


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


def _check_segments(path: str, what: str, ours: bool = True) -> list[str]:
    if not path:
        raise InvalidModelRef(f"{what} is empty")
    if path.startswith("/"):
        raise InvalidModelRef(f"{what} must be relative")
    segments = path.split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise InvalidModelRef(f"{what} may not contain empty, '.' or '..' segments")
        if len(seg.encode("utf-8")) > _MAX_NAME_BYTES:
            raise InvalidModelRef(f"{what} has a segment longer than {_MAX_NAME_BYTES} bytes")
    if ours and any(seg.endswith(PART_SUFFIX) for seg in segments):  # (a repo's own files may end so)
        raise InvalidModelRef(f"{what} may not have a segment ending in '{PART_SUFFIX}'")
    return segments


def check_repo_id(repo_id: str) -> str:
    """`org/repo` or `repo`, named as in an `hf:` ref, and without the `--` or `..` the hub refuses in
    a name (a cache folder's `models--a--b` reads back as `a/b`); InvalidModelRef otherwise."""
    if not _REPO_ID_RE.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise InvalidModelRef(f"not a repo id ('org/repo' or 'repo'): {repo_id[:200]!r}")
    return repo_id


def check_repo_path(path: str) -> None:
    """A file path inside a repository as the hub lists it, checked as a ref's path is (InvalidModelRef)."""
    if _BAD_CHARS.search(path):
        raise InvalidModelRef("file path contains a control or invisible character, NUL or backslash")
    _check_segments(path, "file path", ours=False)


def parse_model_ref(ref: str, hf_endpoint: str) -> ModelRef:
    if not isinstance(ref, str) or not ref:
        raise InvalidModelRef("model_ref is empty")
    if len(ref) > MAX_REF_LENGTH:
        raise InvalidModelRef(f"model_ref is longer than {MAX_REF_LENGTH} characters")
    if _BAD_CHARS.search(ref):
        raise InvalidModelRef("model_ref contains a control or invisible character, NUL or backslash")
    if ref.startswith("hf:"):
        return _parse_hf(ref, hf_endpoint)
    scheme = ref.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return _parse_resolve_url(ref, hf_endpoint) or _parse_url(ref)
    raise InvalidModelRef("model_ref must be 'hf:[{org}/]{repo}[@{rev}][::file={path}]' or an http(s) URL")


def _parse_hf(ref: str, hf_endpoint: str) -> ModelRef:
    m = _HF_RE.fullmatch(ref)
    if m is None:
        raise InvalidModelRef("expected 'hf:[{org}/]{repo}[@{rev}]' or 'hf:[{org}/]{repo}[@{rev}]::file={path}'")
    org, repo, rev, path = m["org"], m["repo"], m["rev"] or "main", m["path"]
    if ".." in rev.split("/") or rev.endswith("/") or "//" in rev or "::" in rev:
        raise InvalidModelRef("revision is malformed")
    if path is not None:
        _check_segments(path, "file path")
    hub_ref = HubRef(endpoint_base(hf_endpoint), f"{org}/{repo}" if org else repo, rev, path)
    url = hub_ref.revision_url if path is None else hub_ref.resolve_url(rev, path)
    return ModelRef(ref, url, None, hub=True, hub_ref=hub_ref)


def endpoint_base(hf_endpoint: str) -> str:
    parts = urlsplit(hf_endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidModelRef("HF_ENDPOINT is not an http(s) URL")
    return hf_endpoint.rstrip("/")


def _parse_resolve_url(ref: str, hf_endpoint: str) -> ModelRef | None:
    """A pasted `{HF_ENDPOINT}/{org}/{repo}/resolve/{rev}/{path}` (or `/{repo}/resolve/...`) as the
    `hf:` ref of that file; None for any other URL. Its revision and path are percent-decoded as the
    hub decodes them (`refs%2Fpr%2F1`); in the path an encoded `/` or `\\` is refused. Its query and
    fragment change nothing the hub answers, so they are dropped."""
    base = endpoint_base(hf_endpoint)
    try:
        path = urlsplit(ref).path
    except ValueError:
        return None
    prefix = urlsplit(base).path.rstrip("/") + "/"
    if origin_of(ref) != origin_of(base) or not path.startswith(prefix):
        return None
    segments = path[len(prefix) :].split("/")
    at = next((i for i in (2, 1) if len(segments) > i + 2 and segments[i] == "resolve"), None)
    if at is None or segments[0] in ("datasets", "spaces"):  # (not models: a plain URL)
        return None
    repo_id, rev, file_segments = "/".join(segments[:at]), unquote(segments[at + 1]), segments[at + 2 :]
    if any(_ENCODED_SLASH.search(seg) for seg in file_segments):
        raise InvalidModelRef("a hub resolve URL's file path may not percent-encode '/' or '\\'")
    file = "/".join(unquote(seg) for seg in file_segments)
    if _BAD_CHARS.search(file) or _BAD_CHARS.search(rev):
        raise InvalidModelRef("a hub resolve URL's path decodes to forbidden characters")
    try:
        hub = _parse_hf(f"hf:{repo_id}@{rev}::file={file}", base)
    except InvalidModelRef as exc:
        raise InvalidModelRef(f"a hub resolve URL names no hub file: {exc}") from None
    return dataclasses.replace(hub, raw=ref)


def _parse_url(ref: str) -> ModelRef:
    try:
        parts = urlsplit(ref)
        port = parts.port
    except ValueError as exc:
        raise InvalidModelRef(f"malformed URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidModelRef("URL must be http(s)://host/path")
    if parts.username or parts.password:
        raise InvalidModelRef("credentials in the URL are not accepted; use HF_TOKEN for the hub")
    if " " in ref:
        raise InvalidModelRef("URL may not contain spaces")
    raw_path = parts.path.lstrip("/")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise InvalidModelRef("URL path may not percent-encode '/', '\\', '.' or '%'")
    path = unquote(raw_path)
    if _BAD_CHARS.search(path):
        raise InvalidModelRef("URL path decodes to forbidden characters")
    segments = _check_segments(path, "URL path")
    if parts.query:
        # the query is part of what is fetched, so of the name: `/` and `%` escaped, nothing else changed
        segments[-1] = f"{segments[-1]}?{quote(parts.query, safe=_QUERY_SAFE)}"
        _check_segments("/".join(segments), "URL path with its query")
    host = parts.hostname.lower()
    if not re.fullmatch(r"[a-z0-9._-]+|\[[0-9a-f:]+\]", host) and not re.fullmatch(r"[0-9a-f:]+", host):
        raise InvalidModelRef("URL host is malformed")
    host_dir = host.strip("[]").replace(":", "_") + (f"_{port}" if port else "")
    if host_dir in (".", "..") or len(host_dir) > _MAX_NAME_BYTES:
        raise InvalidModelRef("URL host is malformed")
    url = ref.split("#", 1)[0]  # as given; a fragment is never sent, so it names nothing
    return ModelRef(ref, url, PurePosixPath("_url", host_dir, *segments), hub=False)


def resolve_in(models_dir: Path, rel: PurePosixPath) -> Path:
    """The absolute destination of `rel`, refusing anything that would land outside `models_dir`."""
    root = models_dir.resolve()
    try:
        dest = (root / Path(*rel.parts)).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL, a symlink loop, a name the OS refuses
        raise InvalidModelRef(f"file path cannot be resolved: {type(exc).__name__}") from None
    if not dest.is_relative_to(root) or dest == root:
        raise InvalidModelRef("file path leaves the models directory")
    return dest


def _host_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (lower-case host without brackets, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    if not host or (port and not is_ascii_digits(port)) or (port and not 0 < int(port) < 65536):
        raise ValueError(f"not a host or host:port: {entry!r}")
    return host, int(port) if port else None


def parse_allowed_hosts(value: str | None) -> frozenset[tuple[str, int | None]] | None:
    """HIVE_ALLOWED_HOSTS (`host,host:port,*.example.com`) -> entries; None (= any host) when unset or empty."""
    if not value or not value.strip():
        return None
    return frozenset(_host_port(item) for item in value.split(",") if item.strip())


def host_allowed(url: str, allowed: frozenset[tuple[str, int | None]] | None) -> bool:
    """Whether `url` may be fetched: any host when `allowed` is None, else a listed host (and port)."""
    if allowed is None:
        return True
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if not host:
        return False
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    for entry_host, entry_port in allowed:
        if entry_port is not None and entry_port != port:
            continue
        if host == entry_host or (entry_host.startswith("*.") and host.endswith(entry_host[1:])):
            return True
    return False
