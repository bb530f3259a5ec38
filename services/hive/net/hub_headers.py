"""What the Hugging Face Hub answers, as the hive reads it. Pure: headers and strings in, facts out.

The hub is the reference (huggingface_hub's `file_download.py` and `utils/_http.py` read it the
same way):
- errors carry `X-Error-Code` / `X-Error-Message`: `GatedRepo`, `RepoNotFound`, `RevisionNotFound`,
  `EntryNotFound`; a 401 without a code whose message is `Invalid credentials in Authorization
  header` is a refused token;
- every answer may carry `RateLimit: "<resource>";r=<remaining>;t=<seconds to reset>` and
  `RateLimit-Policy: "fixed window";"<resource>";q=<quota>;w=<window>`, not only a 429 (which adds
  `Retry-After`);
- a small (non-LFS) file's `ETag` is its git blob sha1, `sha1(b"blob <size>\\0" + content)`;
  an LFS file's resolve is a redirect with `X-Linked-Etag` (its sha256) and `X-Linked-Size`;
- a signed CDN URL says when it expires: `Expires=<unix>` (CloudFront) or `X-Amz-Date` plus
  `X-Amz-Expires` (S3).
The token is found where huggingface_hub looks: `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, then the
file `hf auth login` writes (`HF_TOKEN_PATH`, else `$HF_HOME/token`, else `~/.cache/huggingface/token`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.digits import is_ascii_digits
from shared.models import ErrorCode

__all__ = [
    "GitBlobHash",
    "HubRefusal",
    "RateLimit",
    "find_token",
    "hub_refusal",
    "linked_digest",
    "normalize_etag",
    "parse_ratelimit",
    "url_expiry",
]

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_RATELIMIT_RE = re.compile(r"\"(?P<resource>\w+)\"\s*;\s*r\s*=\s*(?P<r>\d+)\s*;\s*t\s*=\s*(?P<t>\d+)")
_POLICY_RE = re.compile(r"q\s*=\s*(?P<q>\d+).*?w\s*=\s*(?P<w>\d+)")  # (huggingface_hub's)
_HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class HubRefusal:
    code: str
    message: str


def hub_refusal(
    status: int, headers: Mapping[str, str], repo_id: str | None, page: str, revision: str | None = None
) -> HubRefusal | None:
    """The contract's code and a message for a hub error answer, naming the repository (and revision)
    asked for (`page`: the repository's page on the hub, where access to a gated one is asked for);
    None when it is no hub refusal."""
    code = headers.get("x-error-code", "")
    said = headers.get("x-error-message", "").strip()[:_MAX_MESSAGE]
    if code == "GatedRepo":
        text = said or f"{repo_id} is a gated repository"
        return HubRefusal(ErrorCode.GATED_REPO, f"{text} (ask for access at {page})" if page not in text else text)
    if code == "RepoNotFound":
        hint = "" if status != 401 else "; if it is private or gated, set HF_TOKEN to a token that may read it"
        return HubRefusal(ErrorCode.REPO_NOT_FOUND, f"the hub has no repository {repo_id}{hint} ({said or status})")
    if code == "RevisionNotFound":
        rev = f"revision {revision!r}" if revision else "such revision"
        return HubRefusal(ErrorCode.REVISION_NOT_FOUND, f"the hub has no {rev} of {repo_id} ({said or status})")
    if code == "EntryNotFound":
        return HubRefusal(ErrorCode.NOT_FOUND, f"the file is not in {repo_id} at that revision ({said or status})")
    if status == 401 and said == INVALID_CREDENTIALS:
        return HubRefusal(ErrorCode.UNAUTHORIZED, f"the hub refused the token: {said} (check HF_TOKEN)")
    return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    resource: str
    remaining: int
    reset_secs: int
    quota: int | None = None  # RateLimit-Policy's q and w, when the answer states them
    window_secs: int | None = None


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimit | None:
    match = _RATELIMIT_RE.search(headers.get("ratelimit", ""))
    if match is None:
        return None
    policy = _POLICY_RE.search(headers.get("ratelimit-policy", ""))
    quota, window = (int(policy["q"]), int(policy["w"])) if policy else (None, None)
    return RateLimit(match["resource"], int(match["r"]), int(match["t"]), quota, window)


def normalize_etag(value: str | None) -> str | None:
    """An ETag as huggingface_hub names blobs: without `W/` and quotes."""
    if value is None:
        return None
    return value.strip().removeprefix("W/").strip('"') or None


def linked_digest(headers: Mapping[str, str]) -> str | None:
    """The hub's digest of a file: X-Linked-Etag (LFS sha256), else its ETag (git sha1), lower hex only."""
    value = normalize_etag(headers.get("x-linked-etag") or headers.get("etag"))
    return value.lower() if value and _HEX_RE.fullmatch(value.lower()) else None


def url_expiry(url: str) -> float | None:
    """When a signed URL stops working (unix seconds), if it says."""
    query = {k.lower(): v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    expires = query.get("expires", "")
    if is_ascii_digits(expires):
        return float(expires)
    amz_date, amz_expires = query.get("x-amz-date", ""), query.get("x-amz-expires", "")
    if is_ascii_digits(amz_expires):
        try:
            start = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        return start.timestamp() + int(amz_expires)
    return None


class GitBlobHash:
    """git's object id of a file's bytes: sha1 over `blob <size>\\0` and the content."""

    def __init__(self, size: int) -> None:
        self._sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self._sha1.update(data)

    def hexdigest(self) -> str:
        return self._sha1.hexdigest()


def find_token(environ: Mapping[str, str], home: Path | None = None) -> str | None:
    """The hub token as huggingface_hub finds it; None when there is none."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if token := environ.get(name, "").strip():
            return token
    home = home or Path.home()
    if path := environ.get("HF_TOKEN_PATH"):
        token_file = Path(path).expanduser()
    elif hf_home := environ.get("HF_HOME"):
        token_file = Path(hf_home).expanduser() / "token"
    else:
        token_file = home / ".cache" / "huggingface" / "token"
    try:
        return token_file.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
