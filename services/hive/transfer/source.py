"""Where a file's bytes come from: a URL, and what each request to it may carry.

Today a source is the hub (its token goes to the hub's origin only, never to the CDN it
redirects to) or a plain URL (no token); a peer hive will be one more. The transfer code sees
only `url` and `headers_for`, so it knows nothing of where the bytes come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.hive.refs import origin_of

__all__ = ["Source"]


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    token: str | None = None  # a bearer token, sent only to `token_origin`
    token_origin: str | None = None

    @classmethod
    def of(cls, url: str, token_origin: str | None, token: str | None) -> Source:
        """The hub when `token_origin` is set (HF_TOKEN scoped to it), else a plain URL."""
        return cls(url, token, token_origin) if token_origin else cls(url)

    @property
    def hub(self) -> bool:
        return self.token_origin is not None

    @property
    def repo_page(self) -> str | None:
        """The repository's page on the hub (`{HF_ENDPOINT}/{org}/{repo}`), for a hub source."""
        page, sep, _ = self.url.partition("/resolve/")
        return page if self.hub and sep else None

    @property
    def repo_id(self) -> str | None:
        page = self.repo_page
        return "/".join(page.rsplit("/", 2)[-2:]) if page else None

    def headers_for(self, url: str) -> dict[str, str]:
        """Headers of our own for one hop of a request (the first, or one a redirect led to)."""
        if self.token and self.token_origin and origin_of(url) == self.token_origin:
            return {"Authorization": f"Bearer {self.token}"}
        return {}
