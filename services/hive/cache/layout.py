"""Every path the hive keeps under `HIVE_MODELS_DIR`, named in one place (README, "Where files land").

    {models}/hub/                                 a Hugging Face cache (`cache/repo.py`); nothing else
    {models}/hub/models--{org}--{repo}/           one repository's folder (`repo_folder`)
    {models}/.rbee/partial/{repo folder}/{digest}.part   a blob while it downloads, notes beside it (`.json`)
    {models}/.rbee/trees/{repo folder}/{commit}.json     a commit's file listing, asked of the hub once
    {models}/.rbee/hive.db                        the download history (HIVE_STATE_DB overrides it)
    {models}/.rbee/models.json                    the model store's pins and last uses (`store/marks.py`)
    {models}/.rbee/trash/                         a model being deleted, moved out of `hub/` first
    {models}/{path}                               a URL download (`refs.resolve_in`), its partial beside it

Pure: paths in, paths out; nothing here touches the disk.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MODEL_FOLDER_PREFIX",
    "hub_dir",
    "marks_file",
    "partials_dir",
    "repo_folder",
    "repo_id_of",
    "state_db",
    "trash_dir",
    "trees_dir",
]

_SEPARATOR = "--"
MODEL_FOLDER_PREFIX = "models--"


def hub_dir(models_dir: Path) -> Path:
    return models_dir / "hub"


def _state_dir(models_dir: Path) -> Path:
    return models_dir / ".rbee"


def partials_dir(models_dir: Path) -> Path:
    return _state_dir(models_dir) / "partial"


def trees_dir(models_dir: Path) -> Path:
    return _state_dir(models_dir) / "trees"


def state_db(models_dir: Path) -> Path:
    return _state_dir(models_dir) / "hive.db"


def marks_file(models_dir: Path) -> Path:
    return _state_dir(models_dir) / "models.json"


def trash_dir(models_dir: Path) -> Path:
    return _state_dir(models_dir) / "trash"


def repo_folder(repo_id: str, repo_type: str = "model") -> str:
    """`org/repo` -> `models--org--repo`, as huggingface_hub's repo_folder_name."""
    return _SEPARATOR.join([f"{repo_type}s", *repo_id.split("/")])


def repo_id_of(folder: str) -> str | None:
    """`models--org--repo` -> `org/repo` (`models--gpt2` -> `gpt2`), as huggingface_hub's
    scan_cache_dir reads a folder name; None for anything that is not a model's folder."""
    if not folder.startswith(MODEL_FOLDER_PREFIX) or len(folder) == len(MODEL_FOLDER_PREFIX):
        return None
    return folder[len(MODEL_FOLDER_PREFIX) :].replace(_SEPARATOR, "/")
