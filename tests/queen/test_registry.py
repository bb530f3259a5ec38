"""The queen's pure parts: QUEEN_HIVES parsing, the hive registry, placement and the owner map."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.queen.hives.registry import Health, HiveRegistry
from services.queen.settings import QueenSettings, parse_hives

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_parse_hives_reads_id_equals_url_pairs() -> None:
    assert parse_hives(" hive-a=http://10.0.0.1:9200/ , hive-b=https://b.example:9200,") == {
        "hive-a": "http://10.0.0.1:9200",
        "hive-b": "https://b.example:9200",
    }
    assert parse_hives("") == {}


@pytest.mark.parametrize("bad", ["hive-a", "=http://x", "hive a=http://x", "hive-a=ftp://x", "hive-a="])
def test_parse_hives_refuses_malformed_entries(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hives(bad)


def test_settings_take_hives_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEEN_HIVES", "a=http://127.0.0.1:1,b=http://127.0.0.1:2")
    monkeypatch.setenv("QUEEN_ORCHESTRATOR_ID", "queen-7")
    monkeypatch.setenv("QUEEN_UNREACHABLE_BUDGET", "2.5")
    monkeypatch.setenv("RBEE_API_TOKEN", "s3cret")
    settings = QueenSettings()
    assert settings.hives == {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}
    assert (settings.orchestrator_id, settings.unreachable_budget, settings.api_token) == ("queen-7", 2.5, "s3cret")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    monkeypatch.setenv("QUEEN_HIVES", "a=nowhere")
    with pytest.raises(ValidationError):
        QueenSettings()


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QUEEN_ORCHESTRATOR_ID", "QUEEN_UPSTREAM_READ_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = QueenSettings()
    assert settings.orchestrator_id == "queen-1"
    assert settings.upstream_read_timeout > 3 * 15  # above three of the hive's default keep-alives


def test_add_registers_once_and_notices_a_move() -> None:
    reg = HiveRegistry()
    hive, changed = reg.add("hive-a", "http://h:1/", "static")
    assert changed and hive.url == "http://h:1" and hive.health is Health.UNKNOWN
    reg.mark_healthy("hive-a", 2, T0)
    same, changed = reg.add("hive-a", "http://h:1", "registered", T0)
    assert same is hive and not changed
    assert hive.healthy and hive.last_registered == T0  # a heartbeat keeps what the checks learned
    moved, changed = reg.add("hive-a", "http://h:2", "registered")
    assert moved is hive and changed
    assert hive.url == "http://h:2" and hive.health is Health.UNKNOWN  # a new address must be checked again
    assert reg.url_of("hive-a") == "http://h:2" and reg.url_of("nope") is None


def test_health_marks_and_counts() -> None:
    reg = HiveRegistry()
    for hive_id in ("a", "b", "c"):
        reg.add(hive_id, f"http://{hive_id}", "static")
    reg.mark_healthy("a", 3, T0)
    reg.mark_unhealthy("b", "ConnectError", T0)
    reg.mark_healthy("nope", 1)  # unknown ids are ignored
    assert reg.health_counts() == {Health.HEALTHY: 1, Health.UNHEALTHY: 1, Health.UNKNOWN: 1}
    b = reg.get("b")
    assert b is not None and b.to_dict() == {
        "hive_id": "b",
        "url": "http://b",
        "health": "unhealthy",
        "healthy": False,
        "active_downloads": 0,
        "source": "static",
        "last_checked": "2025-01-01T00:00:00Z",
        "last_registered": None,
        "last_error": "ConnectError",
    }
    reg.mark_healthy("b", -1)
    assert b.healthy and b.last_error is None and b.active_downloads == 0
    assert [h.hive_id for h in reg.all()] == ["a", "b", "c"]


def test_least_busy_is_the_healthy_hive_with_fewest_active_downloads() -> None:
    reg = HiveRegistry()
    assert reg.least_busy() is None
    for hive_id, active in (("a", 2), ("b", 1), ("c", 0)):
        reg.add(hive_id, f"http://{hive_id}", "static")
        reg.mark_healthy(hive_id, active)
    reg.mark_unhealthy("c", "down")  # the idlest hive is down: not a candidate
    chosen = reg.least_busy()
    assert chosen is not None and chosen.hive_id == "b"
    reg.note_started("b")  # counted at once, before the next health check
    reg.note_started("b")
    chosen = reg.least_busy()
    assert chosen is not None and chosen.hive_id == "a"  # a=2, b=3
    reg.mark_healthy("b", 2)
    chosen = reg.least_busy()
    assert chosen is not None and chosen.hive_id == "a"  # tie: by id
    fallback = reg.least_busy(exclude={"a"})
    assert fallback is not None and fallback.hive_id == "b"
    assert reg.least_busy(exclude={"a", "b"}) is None  # c is known to be down
    reg.add("d", "http://d", "registered")
    unchecked = reg.least_busy(exclude={"a", "b"})
    assert unchecked is not None and unchecked.hive_id == "d"  # not checked yet beats nothing
    chosen = reg.least_busy()
    assert chosen is not None and chosen.hive_id == "a"  # but a healthy hive comes first


def test_owner_map_is_bounded_least_recently_used() -> None:
    reg = HiveRegistry(max_downloads=2)
    reg.record_download("dl-1", "a")
    reg.record_download("dl-2", "b")
    assert reg.owner("dl-1") == "a"  # touching dl-1 makes dl-2 the oldest
    reg.record_download("dl-3", "a")
    assert (reg.owner("dl-1"), reg.owner("dl-2"), reg.owner("dl-3")) == ("a", None, "a")
    assert reg.known_downloads() == 2
    reg.record_download("dl-1", "b")  # a download seen on another hive moves
    assert reg.owner("dl-1") == "b"
    reg.forget_download("dl-1")
    reg.forget_download("dl-1")
    assert reg.owner("dl-1") is None and reg.known_downloads() == 1
