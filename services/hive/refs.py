"""Model refs -> (URL to fetch, path under the models directory). Pure; refuses anything unsafe.

- `hf:{org}/{repo}[@{rev}]::file={path}` -> `{HF_ENDPOINT}/{org}/{repo}/resolve/{rev or main}/{path}`,
  stored at `{org}/{repo}/{path}` (or `{org}/{repo}@{rev, '/' as %2F}/{path}` for another revision).
- `http(s)://host[:port]/path` -> as given, stored at `_url/{host}[_{port}]/{path}`.

A file path must be relative, made of plain segments: no `..` or `.`, no empty segments, no
backslash, NUL, control characters or percent-escapes, and no `.part` suffix (ours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

__all__ = ["MAX_REF_LENGTH", "InvalidModelRef", "ModelRef", "origin_of", "parse_model_ref", "resolve_in"]

MAX_REF_LENGTH = 2048
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HF_RE = re.compile(
    rf"hf:(?P<org>{_NAME})/(?P<repo>{_NAME})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?::file=(?P<path>.+)"
)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")  # C0, DEL, C1 controls and backslash
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)
PART_SUFFIX = ".part"


class InvalidModelRef(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ModelRef:
    raw: str
    url: str
    rel_path: PurePosixPath
    hub: bool  # fetched from HF_ENDPOINT: the only place HF_TOKEN may go


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


def _check_segments(path: str, what: str) -> list[str]:
    if not path:
        raise InvalidModelRef(f"{what} is empty")
    if path.startswith("/"):
        raise InvalidModelRef(f"{what} must be relative")
    segments = path.split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise InvalidModelRef(f"{what} may not contain empty, '.' or '..' segments")
        if len(seg) > 255:
            raise InvalidModelRef(f"{what} has a segment longer than 255 characters")
    if any(seg.endswith(PART_SUFFIX) for seg in segments):
        raise InvalidModelRef(f"{what} may not have a segment ending in '{PART_SUFFIX}'")
    return segments


def parse_model_ref(ref: str, hf_endpoint: str) -> ModelRef:
    if not isinstance(ref, str) or not ref:
        raise InvalidModelRef("model_ref is empty")
    if len(ref) > MAX_REF_LENGTH:
        raise InvalidModelRef(f"model_ref is longer than {MAX_REF_LENGTH} characters")
    if _BAD_CHARS.search(ref):
        raise InvalidModelRef("model_ref contains a control character, NUL or backslash")
    if ref.startswith("hf:"):
        return _parse_hf(ref, hf_endpoint)
    scheme = ref.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return _parse_url(ref)
    raise InvalidModelRef("model_ref must be 'hf:{org}/{repo}[@{rev}]::file={path}' or an http(s) URL")


def _parse_hf(ref: str, hf_endpoint: str) -> ModelRef:
    m = _HF_RE.fullmatch(ref)
    if m is None:
        raise InvalidModelRef("expected 'hf:{org}/{repo}[@{rev}]::file={path}'")
    org, repo, rev, path = m["org"], m["repo"], m["rev"] or "main", m["path"]
    if ".." in rev.split("/") or rev.endswith("/") or "//" in rev:
        raise InvalidModelRef("revision is malformed")
    if _PERCENT_ESCAPE.search(path):
        raise InvalidModelRef("file path may not contain percent-escapes")
    segments = _check_segments(path, "file path")
    base = endpoint_base(hf_endpoint)
    url = f"{base}/{org}/{repo}/resolve/{quote(rev, safe='')}/{quote(path, safe='/')}"
    # '%' cannot occur in a revision, so quoting '/' as %2F keeps distinct revisions apart
    repo_dir = repo if rev == "main" else f"{repo}@{quote(rev, safe='')}"
    return ModelRef(ref, url, PurePosixPath(org, repo_dir, *segments), hub=True)


def endpoint_base(hf_endpoint: str) -> str:
    parts = urlsplit(hf_endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidModelRef("HF_ENDPOINT is not an http(s) URL")
    return hf_endpoint.rstrip("/")


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
    host = parts.hostname.lower()
    if not re.fullmatch(r"[a-z0-9._-]+|\[[0-9a-f:]+\]", host) and not re.fullmatch(r"[0-9a-f:]+", host):
        raise InvalidModelRef("URL host is malformed")
    host_dir = host.strip("[]").replace(":", "_") + (f"_{port}" if port else "")
    if host_dir in (".", ".."):
        raise InvalidModelRef("URL host is malformed")
    return ModelRef(ref, ref, PurePosixPath("_url", host_dir, *segments), hub=False)


def resolve_in(models_dir: Path, rel: PurePosixPath) -> Path:
    """The absolute destination of `rel`, refusing anything that would land outside `models_dir`."""
    root = models_dir.resolve()
    dest = (root / Path(*rel.parts)).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise InvalidModelRef("file path leaves the models directory")
    return dest
