"""Who may see what on the test hub, and the errors it answers, as the real Hugging Face Hub does.

No HTTP here: `check_access` and `resolve_revision` return a `HubError` (status, ``X-Error-Code``,
``X-Error-Message``) that `hub.py` sends with a JSON body ``{"error": message}``. The rules, in order:

1. an Authorization header whose token is not a known token: 401, no code,
   ``Invalid credentials in Authorization header`` (huggingface_hub then raises a plain HfHubHTTPError);
2. a repo that does not exist, or is private and the token is not in its `allowed`: ``RepoNotFound``,
   401 when anonymous, 404 with a valid token (the real hub never says a private repo exists);
3. file downloads from a gated repo: ``GatedRepo``, 401 anonymous, 403 for a token not in `allowed`;
   the message names the repo page where to ask for access. Metadata of a gated repo stays public
   (`hub.py` masks its LFS digests for a caller who may not download);
4. an unknown revision: 404 ``RevisionNotFound``; a missing file or folder: 404 ``EntryNotFound``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.modelserver.hub_repo import Commit, HubRepo

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class HubError(Exception):
    status: int
    code: str | None
    message: str


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (lower-cased header names), or None."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_access(
    repo: HubRepo | None,
    repo_id: str,
    token: str | None,
    known_tokens: set[str],
    download: bool,
    page_url: str,
) -> HubRepo:
    """The repo, if `token` may read it (and download its files when `download`); else raises HubError."""
    if token is not None and token not in known_tokens:
        raise HubError(401, None, INVALID_CREDENTIALS)
    if repo is None or (repo.private and token not in repo.allowed):
        raise HubError(
            401 if token is None else 404,
            "RepoNotFound",
            "Repository not found" if token is None else f"Repository {repo_id} not found",
        )
    if download and repo.gated and token not in repo.allowed:
        if token is None:
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated"
                f" to access it. Please log in. Visit {page_url} to ask for access."
            )
            raise HubError(401, "GatedRepo", message)
        message = (
            f"Access to model {repo_id} is restricted and you are not in the authorized list."
            f" Visit {page_url} to ask for access."
        )
        raise HubError(403, "GatedRepo", message)
    return repo


def resolve_revision(repo: HubRepo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    return commit


def entry_not_found(path: str) -> HubError:
    return HubError(404, "EntryNotFound", f"Entry not found: {path}")
