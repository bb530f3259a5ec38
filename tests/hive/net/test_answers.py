"""Parsing what a server answered (services/hive/transfer/answers.py): pure, no server needed."""

from __future__ import annotations

import httpx
import pytest

from services.hive.net.answers import content_length, content_range, unsatisfied_total, validator_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/100", (0, 100)),
        (" bytes 5-9/* ", (5, None)),
        ("bytes */100", None),
        ("items 0-1/2", None),
        ("", None),
    ],
)
def test_content_range(value: str, expected: tuple[int, int | None] | None) -> None:
    assert content_range(httpx.Headers({"Content-Range": value})) == expected


def test_unsatisfied_total_reads_a_416s_stated_size() -> None:
    assert unsatisfied_total(httpx.Headers({"Content-Range": "bytes */4096"})) == 4096
    assert unsatisfied_total(httpx.Headers({"Content-Range": "bytes 0-1/2"})) is None
    assert unsatisfied_total(httpx.Headers()) is None


def test_validator_prefers_a_strong_etag_then_last_modified() -> None:
    modified = "Tue, 01 Dec 2026 10:00:00 GMT"
    assert validator_of(httpx.Headers({"ETag": '"abc"', "Last-Modified": modified})) == '"abc"'
    assert validator_of(httpx.Headers({"ETag": 'W/"abc"', "Last-Modified": modified})) == modified
    assert validator_of(httpx.Headers({"ETag": 'W/"abc"'})) is None


def test_content_length_only_when_it_is_a_number() -> None:
    assert content_length(httpx.Headers({"Content-Length": "12"})) == 12
    assert content_length(httpx.Headers({"Content-Length": "-1"})) is None
    assert content_length(httpx.Headers()) is None
