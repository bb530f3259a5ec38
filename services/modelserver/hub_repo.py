"""The test hub's repository model: repos, refs -> commits -> files, as git and git-lfs name them.

No HTTP here. Rules this module keeps:

- A file's `blob_id` is its git blob sha1, ``sha1(b"blob {size}\\0" + content)``; for an LFS file git
  stores the pointer text, so its `blob_id` is the pointer's blob sha1 and `sha256` names the content.
- A file is LFS when `LfsRule` says so: its name matches a `.gitattributes` ``filter=lfs`` pattern
  (the hub's default list) or it is at least `threshold` bytes (the real hub refuses bigger plain
  git files; huggingface_hub uploads them via LFS).
- Commits are immutable; refs (branches, ``refs/pr/N``) point at commits and can be moved. A
  revision resolves as a ref name first, then as a full 40-hex commit of this repo.
- An LFS file is Xet-backed: its `xet_hash` (64 hex, what the CDN's ETag, ``X-Xet-Hash`` and the
  tree's ``xetHash`` say) is another hash than its sha256, as Xet's content hash is.
- Small files live in memory; LFS content lives on disk (or in memory when given as bytes), so a
  generated multi-GB file costs no RAM.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.modelserver.files import MIB, generate_file, sha256_file

LFS_SIZE_THRESHOLD = 10 * MIB
# The head of the .gitattributes the real hub writes into every new model repo.
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl",
    "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
    "*.zst", "*tfevents*",
)  # fmt: skip
COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Generated:
    """File content made by `generate_file`: `size` deterministic bytes from `seed`, written to disk."""

    size: int
    seed: int = 0


Content = bytes | Path | Generated


@dataclass(frozen=True)
class LfsRule:
    patterns: tuple[str, ...] = DEFAULT_LFS_PATTERNS
    threshold: int = LFS_SIZE_THRESHOLD

    def is_lfs(self, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= self.threshold or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def gitattributes(self) -> bytes:
        return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in self.patterns).encode()


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool
    data: bytes | None = None  # the content, when held in memory
    disk: Path | None = None  # else where it is

    @property
    def xet_hash(self) -> str:
        """A stand-in for Xet's content hash: 64 hex digits, not the sha256 (nor derivable by a client)."""
        return hashlib.sha256(b"xet-merkle\0" + bytes.fromhex(self.sha256)).hexdigest()

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def content(self) -> bytes:
        """The whole content (meant for small files)."""
        return self.data if self.data is not None else Path(str(self.disk)).read_bytes()


def make_file(path: str, content: Content, rule: LfsRule, store: Path) -> HubFile:
    """A `HubFile` for `content`; `Generated` content is written under `store/lfs/` named by its sha256."""
    data: bytes | None = None
    disk: Path | None = None
    if isinstance(content, bytes):
        data, size, sha256 = content, len(content), hashlib.sha256(content).hexdigest()
    elif isinstance(content, Generated):
        tmp = store / "lfs" / f".generating-{content.seed}-{content.size}"
        sha256 = generate_file(tmp, content.size, content.seed)
        disk, size = store / "lfs" / sha256, content.size
        tmp.replace(disk)
    else:
        disk, size, sha256 = content, content.stat().st_size, sha256_file(content)
    lfs = rule.is_lfs(path, size)
    if not lfs and data is None:
        data, disk = Path(str(disk)).read_bytes(), None
    blob_id = git_blob_sha1(lfs_pointer(sha256, size) if lfs else data or b"")
    return HubFile(path, size, sha256, blob_id, lfs, data, disk)


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    message: str
    files: Mapping[str, HubFile]
    date: float  # unix time


@dataclass
class HubRepo:
    """One model repo. `allowed` holds the tokens that may read it when private, or download when gated."""

    repo_id: str
    gated: bool = False
    private: bool = False
    lfs_rule: LfsRule = field(default_factory=LfsRule)
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a revision names: a ref (branch, ``refs/pr/N``) or a full commit sha of this repo."""
        sha = self.refs.get(revision)
        if sha is None and COMMIT_RE.fullmatch(revision):
            sha = revision
        return self.commits.get(sha) if sha is not None else None

    def commit(
        self,
        files: Mapping[str, HubFile],
        ref: str = "main",
        delete: Iterable[str] = (),
        message: str = "",
        parent: str | None = None,
    ) -> Commit:
        """A new commit on top of `parent` (default: `ref`'s head, else main's), moving `ref` to it."""
        base = parent or self.refs.get(ref) or self.refs.get("main")
        tree = dict(self.commits[base].files) if base is not None else {}
        for path in delete:
            tree.pop(path, None)
        tree.update(files)
        message = message or f"commit {len(self.commits) + 1} on {ref}"
        digest = hashlib.sha1(f"{self.repo_id}\n{base}\n{message}\n{len(self.commits)}\n".encode())
        for path in sorted(tree):
            digest.update(f"{path}\0{tree[path].blob_id}\n".encode())
        commit = Commit(digest.hexdigest(), base, message, tree, time.time())
        self.commits[commit.sha] = commit
        self.refs[ref] = commit.sha
        return commit

    def move(self, ref: str, sha: str) -> None:
        """Point `ref` at an existing commit (a force-push, or a new branch)."""
        if sha not in self.commits:
            raise KeyError(f"{self.repo_id} has no commit {sha}")
        self.refs[ref] = sha
