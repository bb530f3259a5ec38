"""Where a hive puts what it downloads, spelled out as the contract and README say (not asked of the
hive's own code, so a test that looks for a file looks where a user would).

- an `hf:` ref lands in the Hugging Face cache under `{models}/hub`: `models--{org}--{repo}/blobs/{digest}`,
  `snapshots/{commit}/{path}` (a relative symlink to the blob), `refs/{rev}` (the commit);
- its partial gathers outside `hub/`, at `{models}/.rbee/partial/models--{org}--{repo}/{digest}.part`, with
  what its transfer learnt for a resume (validator, total, segment plan) in `{digest}.json` beside it;
- a URL download lands at `{models}/_url/{host}_{port}/{path}`, its partial `{path}.part` beside it.

With the plain test file server (ModelServer) a file's digest is its sha256 (its ETag) and the
commit of a revision is `made_up_commit(repo, rev)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.modelserver.server import made_up_commit

__all__ = [
    "blob",
    "hub_file",
    "leftover_partials",
    "made_up_commit",
    "notes",
    "partial",
    "read_notes",
    "ref_file",
    "repo_dir",
    "snapshot_file",
    "url_file",
]

REPO = "org/repo"


def repo_dir(models: Path, repo: str = REPO) -> Path:
    return models / "hub" / ("models--" + repo.replace("/", "--"))


def blob(models: Path, digest: str, repo: str = REPO) -> Path:
    return repo_dir(models, repo) / "blobs" / digest


def snapshot_file(models: Path, commit: str, path: str, repo: str = REPO) -> Path:
    return repo_dir(models, repo) / "snapshots" / commit / path


def ref_file(models: Path, rev: str = "main", repo: str = REPO) -> Path:
    return repo_dir(models, repo) / "refs" / rev


def hub_file(models: Path, path: str, repo: str = REPO, rev: str = "main") -> Path:
    """The snapshot file of `hf:{repo}@{rev}::file={path}` fetched from the plain test file server."""
    return snapshot_file(models, made_up_commit(repo, rev), path, repo)


def partial(models: Path, digest: str, repo: str = REPO) -> Path:
    return models / ".rbee" / "partial" / ("models--" + repo.replace("/", "--")) / f"{digest}.part"


def notes(models: Path, digest: str, repo: str = REPO) -> Path:
    """The sidecar beside a hub partial: what its transfer learnt, for a resume."""
    return partial(models, digest, repo).with_suffix(".json")


def read_notes(models: Path, digest: str, repo: str = REPO) -> dict[str, Any]:
    """The sidecar's content, {} while there is none (or it is being replaced)."""
    try:
        data = json.loads(notes(models, digest, repo).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def url_file(models: Path, url: str) -> Path:
    """Where `http://host:port/path` lands (no query)."""
    parts = urlsplit(url)
    host = f"{parts.hostname}_{parts.port}" if parts.port else str(parts.hostname)
    return models / "_url" / host / parts.path.lstrip("/")


def leftover_partials(models: Path) -> list[Path]:
    """Every partial or sidecar left anywhere under `models` (hub and URL downloads)."""
    found = list(models.rglob("*.part"))
    partials = models / ".rbee" / "partial"
    if partials.is_dir():
        found += [p for p in partials.rglob("*") if p.is_file() and p.suffix != ".part"]
    return sorted(found)
