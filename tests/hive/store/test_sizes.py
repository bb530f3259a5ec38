"""Sizes as huggingface_hub's scan_cache_dir counts them (services/hive/store/sizes.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.hive.store.sizes import RevisionScan, blobs_only_in, repo_size, revision_size

SIZES = {"a": 10, "b": 20, "c": 40}


def rev(commit: str, *blobs: str) -> RevisionScan:
    return RevisionScan(commit, (), len(blobs), frozenset(blobs))


def test_a_blob_two_revisions_share_counts_once_for_the_repo_and_in_each() -> None:
    one, two = rev("1", "a", "b"), rev("2", "a", "c")
    assert revision_size(one, SIZES) == 30
    assert revision_size(two, SIZES) == 50
    assert repo_size([one, two], SIZES) == 70
    assert blobs_only_in([one, two], "1") == {"b"}
    assert blobs_only_in([one, two], "2") == {"c"}
    assert blobs_only_in([one, two], "3") == frozenset()


revisions = st.lists(
    st.builds(
        lambda commit, blobs: rev(commit, *blobs),
        st.text("0123", min_size=1, max_size=2),
        st.sets(st.sampled_from(sorted(SIZES))),
    ),
    max_size=6,
).map(lambda rs: list({r.commit: r for r in rs}.values()))


@given(revisions)
def test_the_repo_is_the_union_of_its_revisions_and_deleting_one_frees_what_no_other_holds(
    revs: list[RevisionScan],
) -> None:
    union = set().union(*(r.blobs for r in revs))
    assert repo_size(revs, SIZES) == sum(SIZES[b] for b in union)
    for r in revs:
        assert revision_size(r, SIZES) <= repo_size(revs, SIZES)
        rest = [o for o in revs if o.commit != r.commit]
        freed = sum(SIZES[b] for b in blobs_only_in(revs, r.commit))
        assert repo_size(rest, SIZES) == repo_size(revs, SIZES) - freed
