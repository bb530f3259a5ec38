"""Which hives a fleet-wide delete or pin goes to, and which repository ids reach a hive at all (pure)."""

from __future__ import annotations

import pytest

from services.queen.models.targets import checked_repo_id, target_hives
from shared.errors import ApiError

HIVES = ["hive-1", "hive-2", "hive-3"]


def test_default_is_every_registered_hive_holding_it() -> None:
    assert target_hives(None, HIVES, ["hive-3", "hive-1", "gone"], "org/x") == ["hive-1", "hive-3"]


def test_no_holder_and_no_hives_named_is_404() -> None:
    with pytest.raises(ApiError) as caught:
        target_hives(None, HIVES, [], "org/x")
    assert caught.value.status == 404


def test_all_and_named_hives() -> None:
    assert target_hives("all", HIVES, [], "org/x") == HIVES
    assert target_hives(" hive-2 ,hive-1,hive-2", HIVES, [], "org/x") == ["hive-1", "hive-2"]


@pytest.mark.parametrize(("hives", "status"), [("hive-1,nope", 404), (",", 422), ("all", 404)])
def test_unknown_or_empty_hives_are_refused(hives: str, status: int) -> None:
    with pytest.raises(ApiError) as caught:
        target_hives(hives, HIVES if status != 404 or hives != "all" else [], [], "org/x")
    assert caught.value.status == status


@pytest.mark.parametrize("org_repo", [("org", "repo"), ("Org-1", "my.model_v2"), ("gpt2",)])
def test_hub_repo_ids_pass(org_repo: tuple[str, ...]) -> None:
    assert checked_repo_id("/".join(org_repo)) == "/".join(org_repo)


@pytest.mark.parametrize(
    "org_repo",
    [("..", "x"), ("org", "a..b"), ("-org", "x"), ("org", "a--b"), ("o", "x" * 97), ("org", "a b"), ("a", "b", "c")],
)
def test_other_ids_are_422(org_repo: tuple[str, ...]) -> None:
    with pytest.raises(ApiError) as caught:
        checked_repo_id("/".join(org_repo))
    assert caught.value.status == 422 and caught.value.code == "INVALID_REQUEST"
