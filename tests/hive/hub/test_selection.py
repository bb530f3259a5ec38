"""select_paths against huggingface_hub's own filter_repo_objects, by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.hive.hub.api import RepoFile
from services.hive.hub.selection import SMALL_FILE, fetch_order, select_paths

REPO = [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "original/consolidated.00.pth",
    "original/params.json",
    "onnx/model.onnx",
    ".gitattributes",
    "README.md",
]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (None, None, REPO),
        ([], None, []),
        (["*.safetensors"], None, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
        (["*.json"], ["original/*"], ["config.json", "model.safetensors.index.json", "tokenizer.json"]),
        (["original/"], None, ["original/consolidated.00.pth", "original/params.json"]),
        (
            None,
            ["*.pth", "onnx/", ".*"],
            [p for p in REPO if p not in {"original/consolidated.00.pth", "onnx/model.onnx", ".gitattributes"}],
        ),
        (["*.JSON"], None, []),  # case-sensitive on every platform
        (["original\\*.json"], None, ["original/params.json"]),  # backslashes are separators
    ],
)
def test_examples(include: list[str] | None, exclude: list[str] | None, expected: list[str]) -> None:
    assert select_paths(REPO, include, exclude) == expected


_segment = st.text(alphabet="abcXY._-*?[]/", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    paths=st.lists(st.text(alphabet="abcXY._-/", min_size=1, max_size=20), max_size=12),
    include=st.none() | st.lists(_segment, max_size=3),
    exclude=st.none() | st.lists(_segment, max_size=3),
)
def test_same_choice_as_huggingface_hub(paths: list[str], include: list[str] | None, exclude: list[str] | None) -> None:
    hub_paths = pytest.importorskip("huggingface_hub.utils._paths", reason="huggingface_hub is not installed")
    theirs = list(hub_paths.filter_repo_objects(paths, allow_patterns=include, ignore_patterns=exclude))
    assert select_paths(paths, include, exclude) == theirs


def test_fetch_order_seeded_blobs_then_small_files_smallest_first_then_large_largest_first() -> None:
    MiB = 1024 * 1024
    files = [
        RepoFile("model-00001-of-00003.safetensors", 300 * MiB, "a" * 64),
        RepoFile("config.json", 700, "c" * 40),
        RepoFile("model-00002-of-00003.safetensors", 500 * MiB, "b" * 64),
        RepoFile("tokenizer.json", 9 * MiB, "t" * 40),
        RepoFile("model-00003-of-00003.safetensors", 100 * MiB, "d" * 64),
        RepoFile("big-but-small.bin", SMALL_FILE, "e" * 64),
    ]
    order = [f.path for f in fetch_order(files, hub_first={"d" * 64})]
    assert order == [
        "model-00003-of-00003.safetensors",  # this hive seeds it for the fleet
        "config.json",
        "tokenizer.json",
        "model-00002-of-00003.safetensors",
        "model-00001-of-00003.safetensors",
        "big-but-small.bin",
    ]
    assert [f.path for f in fetch_order(files[:2])] == ["config.json", files[0].path]
