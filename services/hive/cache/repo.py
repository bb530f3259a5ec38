"""The Hugging Face cache layout under `{HIVE_MODELS_DIR}/hub`, as huggingface_hub reads it.

    hub/models--{org}--{repo}/
        blobs/{digest}                      the file's bytes; digest = sha256 (LFS) or git blob sha1
        snapshots/{commit}/{path}           relative symlink to ../../blobs/{digest} (deeper for sub/dirs)
        refs/{rev}                          the commit `rev` named when it was pulled (refs/pr/1 nests)

A blob shared by two commits is stored once. Every change is atomic: a blob is renamed into
place by the caller once verified, a symlink or ref is written under a temporary name and
renamed over the old one, so a reader (huggingface_hub with HF_HUB_OFFLINE=1) never sees a half
state. Nothing else is written below `hub/`: partial files live in `{models}/.rbee/partial/`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.hive.cache.layout import hub_dir, partials_dir, repo_folder
from services.hive.disk.fileio import replace_atomically

__all__ = ["COMMIT_RE", "DIGEST_RE", "RepoCache"]

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
DIGEST_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git blob sha1 or sha256


@dataclass(frozen=True, slots=True)
class RepoCache:
    """One repository's folder of the cache; `models_dir` is what HF_HOME is to huggingface_hub."""

    models_dir: Path
    repo_id: str

    @property
    def root(self) -> Path:
        return hub_dir(self.models_dir) / repo_folder(self.repo_id)

    def blob(self, digest: str) -> Path:
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"not a blob digest: {digest!r}")
        return self.root / "blobs" / digest

    def partial(self, digest: str) -> Path:
        """Where the blob's bytes gather while they download: outside `hub/`."""
        return partials_dir(self.models_dir) / repo_folder(self.repo_id) / f"{self.blob(digest).name}.part"

    def snapshot_dir(self, commit: str) -> Path:
        if not COMMIT_RE.fullmatch(commit):
            raise ValueError(f"not a commit: {commit!r}")
        return self.root / "snapshots" / commit

    def snapshot_file(self, commit: str, path: str) -> Path:
        rel = PurePosixPath(path)
        if rel.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"not a file path inside a snapshot: {path!r}")
        return self.snapshot_dir(commit).joinpath(*rel.parts)

    def ref(self, revision: str) -> Path:
        return self.root / "refs" / revision

    def read_ref(self, revision: str) -> str | None:
        try:
            commit = self.ref(revision).read_text().strip()
        except OSError:
            return None
        return commit if COMMIT_RE.fullmatch(commit) else None

    def write_ref(self, revision: str, commit: str) -> None:
        """Record that `revision` names `commit` (nothing to record when the revision is the commit)."""
        if revision == commit or self.read_ref(revision) == commit:
            return
        path = self.ref(revision)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: tmp.write_text(commit))

    def has(self, commit: str, path: str, digest: str) -> bool:
        """The snapshot holds `path` as a link to the blob `digest`, and the blob is there."""
        link = self.snapshot_file(commit, path)
        try:
            return link.is_symlink() and link.resolve(strict=True) == self.blob(digest).resolve(strict=True)
        except OSError:
            return False

    def link(self, commit: str, path: str, digest: str) -> Path:
        """Point `snapshots/{commit}/{path}` at the blob with a relative symlink; the snapshot file."""
        link = self.snapshot_file(commit, path)
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.blob(digest), link.parent)
        replace_atomically(link, lambda tmp: tmp.symlink_to(target))
        return link
