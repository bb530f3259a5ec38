"""A hub `resolve` URL pasted as a model ref is the `hf:` ref of that file (refs.py)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from services.hive.refs import HubRef, InvalidModelRef, parse_model_ref

HUB = "https://hub.example"


@pytest.mark.parametrize(
    ("url", "endpoint", "hub_ref", "resolved"),
    [
        (
            f"{HUB}/org/repo/resolve/main/model.safetensors",
            HUB,
            HubRef(HUB, "org/repo", "main", "model.safetensors"),
            f"{HUB}/org/repo/resolve/main/model.safetensors",
        ),
        (  # a quoted revision, a `%` in the name, the query and fragment a browser adds
            f"{HUB}/org/repo/resolve/refs%2Fpr%2F1/sub/a%25b.txt?download=true#top",
            HUB + "/",
            HubRef(HUB, "org/repo", "refs/pr/1", "sub/a%b.txt"),
            f"{HUB}/org/repo/resolve/refs%2Fpr%2F1/sub/a%25b.txt",
        ),
        (  # a mirror under a path, named in another case
            "HTTPS://Mirror.example/hf/org/repo/resolve/0123456789abcdef0123456789abcdef01234567/w.bin",
            "https://mirror.example/hf",
            HubRef("https://mirror.example/hf", "org/repo", "0123456789abcdef0123456789abcdef01234567", "w.bin"),
            "https://mirror.example/hf/org/repo/resolve/0123456789abcdef0123456789abcdef01234567/w.bin",
        ),
    ],
)
def test_a_resolve_url_on_the_hub_is_its_hf_file(url: str, endpoint: str, hub_ref: HubRef, resolved: str) -> None:
    ref = parse_model_ref(url, endpoint)
    assert (ref.hub_ref, ref.url, ref.rel_path, ref.hub, ref.raw) == (hub_ref, resolved, None, True, url)


@pytest.mark.parametrize(
    "url",
    [
        "https://other.example/org/repo/resolve/main/x.bin",  # another host
        "http://hub.example/org/repo/resolve/main/x.bin",  # another scheme: another origin
        "https://hub.example:8443/org/repo/resolve/main/x.bin",  # another port
        f"{HUB}/org/repo/raw/main/x.bin",
        f"{HUB}/org/repo/resolve/main",  # no file
        f"{HUB}/datasets/org/repo/resolve/main/x.bin",
        f"{HUB}/datasets/repo/resolve/main/x.bin",
    ],
)
def test_any_other_url_is_a_plain_url(url: str) -> None:
    ref = parse_model_ref(url, HUB)
    assert ref.hub_ref is None and ref.url == url
    assert isinstance(ref.rel_path, PurePosixPath) and ref.rel_path.parts[0] == "_url"


@pytest.mark.parametrize(
    "url",
    [
        f"{HUB}/org/repo/resolve/main/a%2Fb.bin",
        f"{HUB}/org/repo/resolve/main/a%5Cb.bin",
        f"{HUB}/org/repo/resolve/main/../x.bin",
        f"{HUB}/org/repo/resolve/main/a/%2e%2e/%2e%2e/x.bin",
        f"{HUB}/org/repo/resolve/main/a%00.bin",
        f"{HUB}/org/repo/resolve/a%2F..%2Fb/x.bin",
        f"{HUB}/org/re%20po/resolve/main/x.bin",
    ],
)
def test_a_resolve_url_that_names_no_safe_hub_file_is_refused(url: str) -> None:
    with pytest.raises(InvalidModelRef, match="hub resolve URL"):
        parse_model_ref(url, HUB)
