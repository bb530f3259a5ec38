"""The hive's reading of the hub's answers, checked against what the test hub and huggingface_hub say."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from services.hive.net.hub_headers import (
    GitBlobHash,
    find_token,
    hub_refusal,
    linked_digest,
    parse_ratelimit,
    url_expiry,
)

HUB = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("status", "headers", "code", "says"),
    [
        (
            401,
            {"x-error-code": "GatedRepo", "x-error-message": "Access to model o/r is restricted."},
            "GATED_REPO",
            f"ask for access at {HUB}/o/r",
        ),
        (
            403,
            {"x-error-code": "GatedRepo", "x-error-message": f"Visit {HUB}/o/r to ask for access."},
            "GATED_REPO",
            f"Visit {HUB}/o/r to ask",
        ),
        (
            401,
            {"x-error-code": "RepoNotFound", "x-error-message": "Repository not found"},
            "REPO_NOT_FOUND",
            "set HF_TOKEN",
        ),
        (404, {"x-error-code": "RepoNotFound"}, "REPO_NOT_FOUND", "no repository o/r"),
        (
            404,
            {"x-error-code": "RevisionNotFound", "x-error-message": "Invalid rev id: nope"},
            "REVISION_NOT_FOUND",
            "Invalid rev id: nope",
        ),
        (404, {"x-error-code": "EntryNotFound", "x-error-message": "Entry not found"}, "NOT_FOUND", "not in o/r"),
        (401, {"x-error-message": "Invalid credentials in Authorization header"}, "UNAUTHORIZED", "refused the token"),
    ],
)
def test_hub_refusals(status: int, headers: dict[str, str], code: str, says: str) -> None:
    refusal = hub_refusal(status, headers, "o/r", f"{HUB}/o/r")
    assert refusal is not None and refusal.code == code and says in refusal.message


def test_what_is_not_a_hub_refusal() -> None:
    assert hub_refusal(404, {}, "o/r", f"{HUB}/o/r") is None
    assert hub_refusal(500, {"x-error-message": "boom"}, "o/r", f"{HUB}/o/r") is None


def test_ratelimit_header() -> None:
    limit = parse_ratelimit({"ratelimit": '"resolvers";r=0;t=55', "ratelimit-policy": '"fixed window";q=5;w=300'})
    assert limit is not None and (limit.resource, limit.remaining, limit.reset_secs) == ("resolvers", 0, 55)
    assert (limit.quota, limit.window_secs) == (5, 300)
    without_policy = parse_ratelimit({"ratelimit": '"api";r=499;t=300'})
    assert without_policy is not None and (without_policy.quota, without_policy.window_secs) == (None, None)
    assert parse_ratelimit({"ratelimit": "junk"}) is None and parse_ratelimit({}) is None


def test_digests() -> None:
    sha = "a" * 64
    assert linked_digest({"x-linked-etag": f'"{sha}"', "etag": '"cdn-etag"'}) == sha
    assert linked_digest({"etag": 'W/"' + "B" * 40 + '"'}) == "b" * 40
    assert linked_digest({"etag": '"d41d8cd98f00b204e9800998ecf8427e"'}) is None  # an md5-ish CDN ETag
    content = b"hello world\n"
    blob = GitBlobHash(len(content))
    blob.update(content[:5])
    blob.update(memoryview(content)[5:])
    assert blob.hexdigest() == hashlib.sha1(b"blob 12\0" + content).hexdigest()


def test_git_blob_hash_is_git_hash_object(tmp_path: Path) -> None:
    content = bytes(range(256)) * 40
    (tmp_path / "f").write_bytes(content)
    try:
        git = subprocess.run(["git", "hash-object", str(tmp_path / "f")], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    blob = GitBlobHash(len(content))
    blob.update(content)
    assert blob.hexdigest() == git.stdout.strip()


def test_url_expiry() -> None:
    assert url_expiry("https://cdn/x?Expires=1700000000&Signature=s") == 1700000000.0
    s3 = "https://s3/x?X-Amz-Date=20261201T100000Z&X-Amz-Expires=3600&X-Amz-Signature=s"
    assert url_expiry(s3) == 1796119200.0 + 3600
    assert url_expiry("https://cdn/x") is None


def test_token_is_found_where_huggingface_hub_looks(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_from_home\n")
    (tmp_path / "alt").write_text("hf_from_path")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text("hf_default")
    assert find_token({"HF_TOKEN": "a", "HUGGING_FACE_HUB_TOKEN": "b"}, tmp_path) == "a"
    assert find_token({"HUGGING_FACE_HUB_TOKEN": "b", "HF_HOME": str(tmp_path / "hf")}, tmp_path) == "b"
    assert find_token({"HF_TOKEN_PATH": str(tmp_path / "alt"), "HF_HOME": str(tmp_path / "hf")}, tmp_path) == (
        "hf_from_path"
    )
    assert find_token({"HF_HOME": str(tmp_path / "hf")}, tmp_path) == "hf_from_home"
    assert find_token({}, tmp_path) == "hf_default"
    assert find_token({"HF_HOME": str(tmp_path / "nowhere")}, tmp_path) is None
