"""A source's headers per request hop: the hub's token goes to the hub's origin only."""

from __future__ import annotations

from services.hive.net.source import Source

HUB = "https://huggingface.co"


def test_the_hub_token_goes_to_the_hub_origin_only() -> None:
    source = Source.of(f"{HUB}/org/repo/resolve/main/m.bin", HUB, "hf_secret")
    assert source.headers_for(f"{HUB}/org/repo/resolve/main/m.bin") == {"Authorization": "Bearer hf_secret"}
    assert source.headers_for("https://cdn-lfs.huggingface.co/x") == {}  # the CDN it redirects to
    assert source.headers_for("http://huggingface.co/org/repo") == {}  # another scheme is another origin


def test_a_plain_url_carries_no_token() -> None:
    source = Source.of("http://127.0.0.1:8000/m.bin", None, "hf_secret")
    assert source.token is None
    assert source.headers_for("http://127.0.0.1:8000/m.bin") == {}


def test_a_hub_source_without_a_token_sends_nothing() -> None:
    assert Source.of(f"{HUB}/m.bin", HUB, None).headers_for(f"{HUB}/m.bin") == {}
