"""The model server's files: deterministic content, its sha256, and sizes written as "64K" or "10M".

Stdlib only and free of HTTP. The same `seed` always gives the same bytes, so a test, the demo or a
benchmark can create a file and know its hash without keeping a copy.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

MIB = 1024 * 1024


def generate_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` deterministic pseudo-random bytes to `path` (parents created); return the sha256 hex."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    tmp = path.with_name(f".{path.name}.generating")
    with tmp.open("wb") as out:
        remaining = size
        while remaining > 0:
            block = rng.randbytes(min(MIB, remaining))
            out.write(block)
            digest.update(block)
            remaining -= len(block)
    os.replace(tmp, path)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 hex of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def parse_size(text: str) -> int:
    """Bytes from "123", "64K", "10M", "2G" (powers of 1024; "KiB"/"KB" spellings accepted)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if m is None:
        raise ValueError(f"bad size: {text!r}")
    multiplier: int = 1024 ** " KMG".index(m[2] or " ")
    return int(m[1]) * multiplier
