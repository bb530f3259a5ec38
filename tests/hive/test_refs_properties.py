"""Property-based tests of the model-ref parser and path resolution (services/hive/refs.py).

Whatever the input, a ref is refused with InvalidModelRef or lands strictly inside the models
directory, under a name the filesystem accepts; good refs map to the URL and path the contract says.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from services.hive.cache.repo import RepoCache
from services.hive.refs import (
    InvalidModelRef,
    ModelRef,
    host_allowed,
    parse_allowed_hosts,
    parse_model_ref,
    resolve_in,
)

HUB = "https://hub.example"
MODELS = Path(tempfile.gettempdir()) / "rbee-properties-models"  # never written to, except by the one test below
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# pieces an attacker would try: traversal, encoded separators, controls, look-alikes, bidi tricks, surrogates
HOSTILE = [
    "..", ".", "", "...", "%2e%2e", "%2E%2E", "%2f", "%2F", "%5c", "%252e%252e", "%00", "\\", "\x00", "\n", "\r", "\t",
    "\x7f", "\x85", "\u202e", "\u200b", "\ufeff", "\u2215", "\u2044", "\uff0e\uff0e", "\uff0f", "\u3002\u3002",
    "\ud800", "\udcff", "~", "$HOME", "C:", "c:\\", "/", "//", "?", "#", "a.part", "\u0130", "\u212a", "name",
    "b.bin", "é" * 130, "x" * 256,
]  # fmt: skip
SAFE_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)
SAFE_SEGMENT = st.text(
    st.characters(codec="utf-8", categories=("L", "N")) | st.sampled_from("._- +=@,"), min_size=1, max_size=40
).filter(lambda s: s not in (".", "..") and not s.endswith(".part") and len(s.encode()) <= 255)


def landing(ref: ModelRef) -> tuple[PurePosixPath, Path]:
    """(the relative path, the absolute path) where an accepted ref lands: a URL under `_url/`, an hf:
    ref in its repository's snapshot of the hub cache (any commit)."""
    if ref.hub_ref is None:
        assert ref.rel_path is not None
        return ref.rel_path, resolve_in(MODELS, ref.rel_path)
    cache = RepoCache(MODELS.resolve(), ref.hub_ref.repo_id)
    commit = "0" * 40
    dest = cache.snapshot_dir(commit) if ref.hub_ref.file is None else cache.snapshot_file(commit, ref.hub_ref.file)
    assert dest.is_relative_to(cache.snapshot_dir(commit)), ref
    return PurePosixPath(*dest.relative_to(MODELS.resolve()).parts), dest


def check_inside(ref: ModelRef) -> Path:
    """The invariants every accepted ref keeps."""
    rel, dest = landing(ref)
    assert rel.parts, ref
    for part in rel.parts:
        assert part not in ("", ".", ".."), ref
        assert "/" not in part and "\\" not in part and "\x00" not in part, ref
        assert len(part.encode("utf-8")) <= 255, ref
    root = MODELS.resolve()
    assert dest.is_relative_to(root) and dest != root, (ref, dest)
    assert urlsplit(ref.url).scheme in ("http", "https"), ref
    return dest


def parse_or_none(text: str, endpoint: str = HUB) -> ModelRef | None:
    try:
        return parse_model_ref(text, endpoint)
    except InvalidModelRef:
        return None


@FAST
@given(st.text(max_size=300))
@example("hf:org/repo::file=../../etc/passwd")
@example("hf:org/repo@../..::file=x")
@example("https://h.example/%2e%2e/%2e%2e/x")
@example("hf:org/repo::file=\ud800")
def test_any_text_is_refused_or_stays_inside(text: str) -> None:
    ref = parse_or_none(text)
    if ref is not None:
        check_inside(ref)


@FAST
@example(["%2e%2e"], "/", "hf:org/repo::file=")
@example(["%2e%2e", "x"], "/", "https://files.example/")
@given(
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=8), min_size=1, max_size=6),
    st.sampled_from(["/", "\\", "%2f", "/./", "//"]),
    st.sampled_from(["hf:org/repo::file=", "hf:org/repo@v1::file=", "https://files.example/", "http://10.0.0.1:8080/"]),
)
def test_hostile_paths_are_refused_or_stay_inside(pieces: list[str], sep: str, prefix: str) -> None:
    ref = parse_or_none(prefix + sep.join(pieces))
    if ref is not None:
        check_inside(ref)
        parts = landing(ref)[0].parts
        assert ".." not in parts
        if not prefix.startswith("hf:"):  # a URL's path is decoded, so an encoded dot-dot is refused there;
            assert "%2e%2e" not in parts  # an hf: path is the file's name, never decoded (README, "Model refs")


@FAST
@given(
    st.text(max_size=64) | st.sampled_from(HOSTILE),
    st.sampled_from(["hf:{}/repo::file=a", "hf:org/{}::file=a", "hf:org/repo@{}::file=a"]),
)
def test_hostile_names_and_revisions_are_refused_or_stay_inside(name: str, template: str) -> None:
    ref = parse_or_none(template.format(name))
    if ref is not None:
        dest = check_inside(ref)
        # hub / models--org--repo / snapshots / commit / file: nothing climbs out
        assert dest.parent.parent.parent.parent.parent == MODELS.resolve()


@FAST
@given(
    SAFE_NAME,
    SAFE_NAME,
    st.none() | SAFE_NAME,
    st.lists(SAFE_SEGMENT, min_size=1, max_size=4),
)
def test_good_hub_refs_round_trip(org: str, repo: str, rev: str | None, segments: list[str]) -> None:
    assume(rev is None or rev.isascii())
    path = "/".join(segments)
    text = f"hf:{org}/{repo}{'@' + rev if rev else ''}::file={path}"
    assume("%" not in path)  # percent-escapes are refused on purpose
    ref = parse_model_ref(text, HUB + "/")
    assert ref.hub and ref.raw == text
    assert unquote(ref.url) == f"{HUB}/{org}/{repo}/resolve/{rev or 'main'}/{path}"
    assert urlsplit(ref.url).netloc == "hub.example" and " " not in ref.url
    assert ref.hub_ref is not None
    assert (ref.hub_ref.repo_id, ref.hub_ref.revision, ref.hub_ref.file) == (f"{org}/{repo}", rev or "main", path)
    check_inside(ref)


@FAST
@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.none() | st.integers(1, 65535),
    st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True), min_size=1, max_size=4),
    st.sampled_from(["http", "https"]),
)
def test_good_urls_round_trip(host: str, port: int | None, segments: list[str], scheme: str) -> None:
    assume(all(s not in (".", "..") and not s.endswith(".part") for s in segments))
    text = f"{scheme}://{host}{f':{port}' if port else ''}/{'/'.join(segments)}"
    ref = parse_model_ref(text, HUB)
    assert ref.url == text and not ref.hub
    assert ref.rel_path == PurePosixPath("_url", host + (f"_{port}" if port else ""), *segments)
    check_inside(ref)


@FAST
@given(st.lists(st.sampled_from(HOSTILE) | st.text(max_size=10), min_size=1, max_size=6))
def test_resolve_in_never_leaves_the_directory(parts: list[str]) -> None:
    try:
        dest = resolve_in(MODELS, PurePosixPath(*[p for p in parts if p] or ["x"]))
    except InvalidModelRef:
        return
    assert dest.is_relative_to(MODELS.resolve()) and dest != MODELS.resolve()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(HOSTILE) | SAFE_SEGMENT, min_size=1, max_size=4), st.booleans())
def test_accepted_paths_can_really_be_created_inside(pieces: list[str], hub: bool) -> None:
    """On the real filesystem: the file an accepted ref names can be created, and it is inside."""
    text = ("hf:org/repo::file=" if hub else "https://files.example/") + "/".join(pieces)
    ref = parse_or_none(text)
    if ref is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (Path(tmp) / "outside").mkdir()
        rel, _ = landing(ref)
        dest = resolve_in(models, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.touch()
        real = Path(os.path.realpath(dest))
        assert real.is_relative_to(models.resolve()) and real.is_file(), (text, real)
        assert not any((Path(tmp) / "outside").iterdir())


@FAST
@given(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
    st.integers(1, 65535),
    st.integers(1, 65535),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
)
def test_allowed_hosts_match_host_and_port_exactly(host: str, port: int, other_port: int, other_host: str) -> None:
    allowed = parse_allowed_hosts(f"{host}:{port}")
    assert host_allowed(f"http://{host}:{port}/x", allowed)
    assert host_allowed(f"https://{host.upper()}:{port}/x", allowed)
    if other_port != port:
        assert not host_allowed(f"http://{host}:{other_port}/x", allowed)
    if other_host != host:
        assert not host_allowed(f"http://{other_host}:{port}/x", allowed)
        assert not host_allowed(f"http://{host}.{other_host}:{port}/x", allowed)
    assert host_allowed(f"http://{other_host}/x", None)
