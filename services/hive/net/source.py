"""Where a file's bytes come from: a URL, what each request to it may carry, what the hub said.

Today a source is the hub (its token goes to the hub's origin only, never to the CDN it
redirects to) or a plain URL (no token); a peer hive will be one more. The transfer code sees
only `start`, `headers_for` and what the request layer tells the source, so it knows nothing of
where the bytes come from.

A hub source is resolved once per file and attempt: the hub's answer (`X-Repo-Commit`, and the
digest and size of the file: `X-Linked-Etag` / `X-Linked-Size` on the redirect of an LFS file,
the git blob sha1 `ETag` of a small one) is kept in `facts`, and the signed CDN URL it redirected
to is reused for every chunk and retry until it expires (the request layer goes back to the hub
when the CDN refuses it, or the URL's own expiry is near).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.hive.net.hub_headers import linked_digest, url_expiry
from services.hive.refs import origin_of
from shared.digits import is_ascii_digits

__all__ = ["HubFacts", "HubName", "Source"]

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_EXPIRY_MARGIN = 30.0  # seconds before a signed URL's stated expiry that it is no longer reused


@dataclass(slots=True)
class HubFacts:
    """What the hub's own answers said of the file (never a CDN's: its ETag is not the digest)."""

    commit: str | None = None
    digest: str | None = None  # sha256 of an LFS file, git blob sha1 of a small one
    size: int | None = None


@dataclass(frozen=True, slots=True)
class HubName:
    """A hub request's repository as the user named it: what a refusal of the hub must say, whatever
    the URL asked (an API call's URL holds no `/resolve/` to read the repository from)."""

    repo_id: str
    revision: str
    page: str  # `{HF_ENDPOINT}/{repo_id}`, where access to a gated repository is asked for


@dataclass(slots=True)
class Source:
    url: str
    token: str | None = None  # a bearer token, sent only to `token_origin`
    token_origin: str | None = None
    peer_token: str | None = field(default=None, repr=False)  # RBEE_API_TOKEN, sent to the URL's own origin only
    facts: HubFacts = field(default_factory=HubFacts)
    resolves: int = 0  # requests that went to the hub's resolver for this file
    named: HubName | None = None  # the repository and revision asked for, as the hub's refusals name them
    _resolved: str | None = None  # where the hub last sent us
    _expires: float | None = None

    @classmethod
    def of(
        cls,
        url: str,
        token_origin: str | None,
        token: str | None,
        peer_token: str | None = None,
        named: HubName | None = None,
    ) -> Source:
        """The hub when `token_origin` is set (HF_TOKEN scoped to it), else a plain URL (a peer hive's
        blob URL with `peer_token`, which goes to that URL's origin and nowhere else)."""
        if token_origin:
            return cls(url, token, token_origin, named=named)
        return cls(url, peer_token=peer_token)

    @property
    def hub(self) -> bool:
        return self.token_origin is not None

    @property
    def repo_page(self) -> str | None:
        """The repository's page on the hub (`{HF_ENDPOINT}/{org}/{repo}`), for a hub source."""
        if self.named is not None:
            return self.named.page
        page, sep, _ = self.url.partition("/resolve/")
        return page if self.hub and sep else None

    @property
    def repo_id(self) -> str | None:
        if self.named is not None:
            return self.named.repo_id
        page = self.repo_page
        return "/".join(page.rsplit("/", 2)[-2:]) if page else None

    def on_hub(self, url: str) -> bool:
        return self.hub and origin_of(url) == self.token_origin

    def headers_for(self, url: str) -> dict[str, str]:
        """Headers of our own for one hop of a request (the first, or one a redirect led to)."""
        if self.token and self.on_hub(url):
            return {"Authorization": f"Bearer {self.token}"}
        if self.peer_token and origin_of(url) == origin_of(self.url):
            return {"Authorization": f"Bearer {self.peer_token}"}
        return {}

    # -- what the request layer learns -------------------------------------------------------

    def start(self, now: float) -> str:
        """Where the next request begins: the URL the hub sent us to while it is good, else the hub."""
        if self._resolved is not None and (self._expires is None or now < self._expires - _EXPIRY_MARGIN):
            return self._resolved
        self._resolved = self._expires = None
        return self.url

    def learn(self, headers: Mapping[str, str]) -> None:
        """An answer from the hub's origin: what it says of the file."""
        commit = headers.get("x-repo-commit", "").strip().lower()
        if _COMMIT_RE.fullmatch(commit):
            self.facts.commit = commit
        if (digest := linked_digest(headers)) is not None:
            self.facts.digest = digest
        size = headers.get("x-linked-size", "").strip()
        if is_ascii_digits(size):
            self.facts.size = int(size)

    def remember(self, url: str) -> None:
        """The hub redirected to `url`: reuse it for the next requests."""
        self._resolved, self._expires = url, url_expiry(url)

    def forget(self, url: str) -> None:
        """`url`, which the hub gave, is refused (expired, revoked): the next request asks the hub
        again, unless another connection already brought a newer URL."""
        if self._resolved == url:
            self._resolved = self._expires = None
