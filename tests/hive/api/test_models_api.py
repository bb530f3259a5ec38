"""The hive's model store on a real hive and the test hub (README, "The model store"): `/v2/models`
agrees with huggingface_hub's scan_cache_dir on what the hive pulled and on what huggingface_hub itself
wrote there; deletes keep the cache valid; model events reach the aggregated stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from huggingface_hub import hf_hub_download

from services.modelserver.hub import Hub
from tests.hive.hub.support import pull
from tests.hive.store.cache_trees import hf_view, hive_view
from tests.hub_fixtures import REPO, build_repo
from tests.modelserver.test_hub_hf_client import run_hf
from tests.support import Hold, ServerThread, wait_until

MakeHive = Callable[..., ServerThread]


def models_of(hive: ServerThread) -> list[dict[str, Any]]:
    body = httpx.get(f"{hive.url}/v2/models", timeout=10).json()
    assert set(body) == {"models", "disk", "hive_id"} and body["disk"]["free"] > 0, body
    return list(body["models"])


def hub_dir(hive: ServerThread, tmp_path: Path) -> Path:
    return tmp_path / f"models-{hive.url.rsplit(':', 1)[1]}" / "hub"


class StreamReader:
    """The hive's aggregated stream (`/v2/downloads/stream`), read on a thread: every event kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (event, id, data)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            try:
                with connect_sse(client, "GET", f"{self.url}/v2/downloads/stream") as source:
                    self.connected.set()
                    for sse in source.iter_sse():
                        if self._stop.is_set():
                            return
                        if sse.data:
                            self.events.append((sse.event, sse.id, json.loads(sse.data)))
            except httpx.HTTPError:  # the hive stopped at the end of the test
                return

    def models(self) -> list[tuple[str, str, str | None]]:
        return [(d["action"], d["repo_id"], d["commit"]) for e, _, d in self.events if e == "model"]

    def __enter__(self) -> StreamReader:
        self._thread.start()
        assert self.connected.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


@pytest.fixture
def hive(make_hub_hive: MakeHive, tmp_path: Path) -> Iterator[ServerThread]:
    yield make_hub_hive(models_dir=tmp_path / "models")


def test_what_the_hive_pulled_is_listed_as_scan_cache_dir_reads_it(
    hub: Hub, hive: ServerThread, tmp_path: Path
) -> None:
    revs = build_repo(hub)
    for ref in (f"hf:{REPO}@{revs.first}", f"hf:{REPO}", f"hf:{REPO}@refs/pr/1"):
        _, state, _ = pull(hive.url, ref)
        assert state["status"] == "complete", state
    models = models_of(hive)
    assert hive_view(models) == hf_view(tmp_path / "models" / "hub")
    (model,) = models
    assert {r["commit"] for r in model["revisions"]} == {revs.first, revs.main, revs.pr}
    assert all(r["complete"] for r in model["revisions"])
    assert model["last_used"] is not None and not model["pinned"] and not model["in_use"]
    assert httpx.get(f"{hive.url}/v2/models/{REPO}").json() == model


def test_a_snapshot_huggingface_hub_writes_into_the_running_hives_cache_is_noticed(
    hub: Hub, hive: ServerThread, tmp_path: Path
) -> None:
    revs = build_repo(hub)
    assert models_of(hive) == []
    with StreamReader(hive.url) as stream:
        # huggingface_hub itself, HF_HOME the hive's models dir, HF_ENDPOINT the test hub
        run_hf(hub, tmp_path / "models", f"print(json.dumps(hf.snapshot_download({REPO!r}, revision={revs.main!r})))")
        theirs = hf_view(tmp_path / "models" / "hub")
        # (a look may have caught the snapshot half written: the next one, within a second, sees the rest)
        wait_until(lambda: hive_view(models_of(hive)) == theirs, 15, what="the hive noticing the whole snapshot")
        models = models_of(hive)
        assert models[0]["revisions"][0]["complete"] and models[0]["last_used"] is None
        wait_until(lambda: ("added", REPO, revs.main) in stream.models(), 10, what="the added event")


def test_deleting_one_revision_keeps_the_blobs_the_other_shares_and_the_cache_valid(
    hub: Hub, hive: ServerThread, tmp_path: Path
) -> None:
    revs = build_repo(hub)
    for ref in (f"hf:{REPO}@{revs.first}", f"hf:{REPO}"):
        assert pull(hive.url, ref)[1]["status"] == "complete"
    cache = tmp_path / "models" / "hub"
    before = hf_view(cache)[REPO]
    gone = httpx.delete(f"{hive.url}/v2/models/{REPO}", params={"revision": revs.first})
    assert gone.status_code == 200, gone.text
    after = hf_view(cache)
    assert set(after[REPO][1]) == {revs.main}
    assert gone.json()["size_on_disk"] == before[0] - after[REPO][0] > 0
    # main's files, the ones it shares with the deleted revision too (tokenizer.json, sub/dir/notes.txt)
    for path in ("tokenizer.json", "sub/dir/notes.txt", "config.json", "model.safetensors"):
        local = hf_hub_download(REPO, path, revision=revs.main, cache_dir=cache, local_files_only=True)
        assert Path(local).read_bytes() == hub.file(REPO, path, revs.main).content()
    assert hive_view(models_of(hive)) == after
    # an unknown revision, a malformed one, an unknown model, a malformed id
    assert httpx.delete(f"{hive.url}/v2/models/{REPO}", params={"revision": revs.first}).status_code == 404
    assert httpx.delete(f"{hive.url}/v2/models/{REPO}", params={"revision": "main"}).status_code == 422
    assert httpx.delete(f"{hive.url}/v2/models/org/none").json()["error"]["code"] == "NOT_FOUND"
    assert httpx.get(f"{hive.url}/v2/models/a/b/c").status_code == 422
    assert httpx.delete(f"{hive.url}/v2/models/{REPO}").status_code == 200
    assert hf_view(cache) == {} and models_of(hive) == []


def test_a_model_cannot_be_deleted_while_it_downloads_nor_a_pinned_one_without_force(
    hub: Hub, hive: ServerThread, tmp_path: Path
) -> None:
    revs = build_repo(hub)
    assert pull(hive.url, f"hf:{REPO}@{revs.first}")[1]["status"] == "complete"
    with Hold(hive.url):
        started = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": f"hf:{REPO}"}).json()
        wait_until(lambda: httpx.get(f"{hive.url}/v2/models/{REPO}").json()["in_use"], 10, what="in use")
        busy = httpx.delete(f"{hive.url}/v2/models/{REPO}")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "MODEL_IN_USE", busy.text
        httpx.delete(f"{hive.url}/v2/downloads/{started['download_id']}")
    wait_until(lambda: not httpx.get(f"{hive.url}/v2/models/{REPO}").json()["in_use"], 10, what="no more in use")
    assert httpx.put(f"{hive.url}/v2/models/{REPO}/pin").json()["pinned"] is True
    pinned = httpx.delete(f"{hive.url}/v2/models/{REPO}")
    assert pinned.status_code == 409 and pinned.json()["error"]["code"] == "MODEL_PINNED"
    assert hf_view(tmp_path / "models" / "hub")[REPO]  # nothing changed
    assert httpx.delete(f"{hive.url}/v2/models/{REPO}", params={"force": "true"}).status_code == 200
    assert hf_view(tmp_path / "models" / "hub") == {}


def test_model_events_reach_the_aggregated_stream_only(hub: Hub, hive: ServerThread) -> None:
    revs = build_repo(hub)
    with StreamReader(hive.url) as stream:
        _, state, events = pull(hive.url, f"hf:{REPO}")
        assert state["status"] == "complete" and all(kind != "model" for kind, _ in events)
        assert httpx.put(f"{hive.url}/v2/models/{REPO}/pin").status_code == 200
        assert httpx.delete(f"{hive.url}/v2/models/{REPO}/pin").status_code == 200
        assert httpx.post(f"{hive.url}/v2/models/{REPO}/used").json()["last_used"] is not None
        assert httpx.delete(f"{hive.url}/v2/models/{REPO}").status_code == 200
        expected = [
            ("added", REPO, revs.main),  # (a use, the download's end or POST …/used, is no event)
            ("pinned", REPO, None),
            ("unpinned", REPO, None),
            ("deleted", REPO, None),
        ]
        wait_until(lambda: stream.models() == expected, 10, what=f"the model events {expected}, got {stream.models()}")
        ids = [int(i) for e, i, _ in stream.events if e == "model"]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(d["hive_id"] == "hive-0" for e, _, d in stream.events if e == "model")
