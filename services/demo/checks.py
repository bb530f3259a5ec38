"""What the demo verifies at the end: the queen lists the model complete at the hub's commit, every file
of the hive's snapshot has the hub's sha256, and huggingface_hub finds the snapshot offline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from services.demo.model import MODEL_REF, ORG_REPO
from services.demo.procs import DemoError
from services.modelserver.files import sha256_file
from services.modelserver.published import Published

__all__ = ["cache_of", "verify"]


def cache_of(snapshot: Path) -> Path:
    """The Hugging Face cache (`{models}/hub`) that holds this snapshot directory of the demo's model."""
    if snapshot.parent.name != "snapshots" or snapshot.parent.parent.name != f"models--{ORG_REPO.replace('/', '--')}":
        raise DemoError(f"the hive reports {snapshot}, which is not a snapshot of {ORG_REPO} in a Hugging Face cache")
    return snapshot.parent.parent.parent


def queen_json(queen_url: str, path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    try:
        response = httpx.get(f"{queen_url}{path}", headers=headers, timeout=5)
        body = response.raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise DemoError(f"GET {path} on the queen failed: {exc}") from None
    if not isinstance(body, dict):
        raise DemoError(f"GET {path} on the queen answered {body!r}, not a JSON object")
    return body


def verify(queen_url: str, headers: Mapping[str, str], hub: Published, say: Callable[[str], None]) -> dict[str, Any]:
    """The model's download is complete, of the hub's commit, and every file in its snapshot is the hub's."""
    listed = queen_json(queen_url, "/v1/downloads", headers).get("downloads", [])
    done = [s for s in listed if s.get("model_ref") == MODEL_REF and s.get("status") == "complete"]
    if len(done) != 1:
        raise DemoError(f"the queen lists {len(done)} complete downloads of {MODEL_REF}, not one: {listed}")
    state = queen_json(queen_url, f"/v1/downloads/{done[0]['download_id']}", headers)
    if state.get("commit") != hub.commit:
        raise DemoError(f"the hive pulled commit {state.get('commit')}, the hub's main is {hub.commit}")
    files = state.get("files") or []
    if not files or any(f.get("status") != "complete" for f in files):
        raise DemoError(f"the queen's state of the model does not list every file complete: {files}")
    snapshot = Path(str(state.get("path")))
    cache = cache_of(snapshot)
    for name, expected in hub.files.items():
        file = snapshot / name
        actual = sha256_file(file) if file.is_file() else "missing"
        if actual != expected:
            raise DemoError(f"{file}: sha256 {actual}, the hub's is {expected}")
    say(f"sha256 verified: all {len(hub.files)} files of {snapshot} match the hub's")
    check_with_huggingface_hub(cache, snapshot, say)
    return state


def check_with_huggingface_hub(cache: Path, snapshot: Path, say: Callable[[str], None]) -> None:
    """huggingface_hub, where installed, finds the model in the hive's cache without the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return
    found = snapshot_download(ORG_REPO, cache_dir=cache, local_files_only=True)
    if Path(found).resolve() != snapshot.resolve():
        raise DemoError(f"huggingface_hub found {found} in the hive's cache, not {snapshot}")
    say("huggingface_hub.snapshot_download(local_files_only=True) finds the same snapshot")
