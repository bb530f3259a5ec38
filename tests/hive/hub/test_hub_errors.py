"""A real hive against the real-shaped test hub: its refusals, its 429 windows, its token, encodings.

Each test starts an in-process hive (or a subprocess one, for the token file) with HF_ENDPOINT at
`services.modelserver.hub.Hub` on loopback and reads what a user sees: the download's state and its
SSE stream.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from services.modelserver.hub import Hub
from tests.conftest import FAST_HIVE
from tests.hive.conftest import MakeHive
from tests.hub_fixtures import LFS_SIZE, REPO, build_repo, running_hub
from tests.support import ServiceProcess, free_port, wait_until

GATED = "org/gated"
GATED_BYTES = b"gated weights\n"
READER = "hf_reader_not_approved"  # a valid token, never granted the gated repo
GRANTED = "hf_granted_4a5b6c7d8e9f"
RATE_LIMITED = "rate limited by the hub (resolvers), r=0"

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        build_repo(h)
        h.add_repo(GATED, gated=True)
        h.commit(GATED, {"weights.bin": GATED_BYTES})
        h.add_token(READER)
        h.grant(GATED, GRANTED)
        yield h


def start(base: str, ref: str) -> str:
    resp = httpx.post(f"{base}/v2/downloads", json={"model_ref": ref}, timeout=10)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["download_id"])


def state(base: str, download_id: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{base}/v2/downloads/{download_id}", timeout=10).json()
    return result


def stream(base: str, download_id: str, limit: int = 10_000) -> Events:
    """(event, payload) of one download's stream, read to its end (bounded)."""
    seen: Events = []
    with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
        with connect_sse(client, "GET", f"{base}/v2/downloads/{download_id}/stream") as source:
            for sse in source.iter_sse():
                if sse.data:  # (an empty event follows a keep-alive comment)
                    seen.append((sse.event, json.loads(sse.data)))
                if len(seen) >= limit:
                    break
    return seen


def run(base: str, ref: str) -> tuple[dict[str, Any], Events]:
    """Start a download and follow it to its end: (final state, every event of its stream)."""
    download_id = start(base, ref)
    events = stream(base, download_id)
    return state(base, download_id), events


def assert_failed(final: dict[str, Any], events: Events, code: str, *words: str) -> None:
    """Failed with `code` and a message holding `words`, in the state and in the one error event."""
    assert (final["status"], final["error_code"]) == ("failed", code), final
    for word in words:
        assert word in final["error"], (word, final["error"])
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "error" and kinds.count("error") == 1, kinds
    last = events[-1][1]
    assert (last["code"], last["error"]) == (code, final["error"])


# --------------------------------------------------------------------------- the hub's refusals


REFUSALS = [
    # (case, ref, hive token, code, words the message must hold; {hub} is the hub's URL)
    (
        "gated-anonymous",
        f"hf:{GATED}::file=weights.bin",
        None,
        "GATED_REPO",
        ["Access to model org/gated is restricted", "Please log in", "{hub}/org/gated"],
    ),
    (
        "gated-not-approved",
        f"hf:{GATED}::file=weights.bin",
        READER,
        "GATED_REPO",
        ["you are not in the authorized list", "{hub}/org/gated"],
    ),
    (
        "repo-misspelt-anonymous",
        "hf:org/modle::file=config.json",
        None,
        "REPO_NOT_FOUND",
        ["org/modle", "Repository not found", "HF_TOKEN"],
    ),
    ("repo-misspelt-token", "hf:org/modle::file=config.json", READER, "REPO_NOT_FOUND", ["Repository org/modle not"]),
    ("revision-missing", f"hf:{REPO}@v9::file=config.json", None, "REVISION_NOT_FOUND", ["Invalid rev id: v9", REPO]),
    ("file-missing", f"hf:{REPO}::file=confg.json", None, "NOT_FOUND", ["Entry not found: confg.json", REPO]),
    (
        "token-unknown",
        f"hf:{REPO}::file=config.json",
        "hf_nobody_knows",
        "UNAUTHORIZED",
        ["Invalid credentials in Authorization header"],
    ),
]


@pytest.mark.parametrize(("ref", "token", "code", "words"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_hub_refusals_end_the_download_with_their_code_and_the_hubs_words_at_once(
    hub: Hub, make_hub_hive: MakeHive, ref: str, token: str | None, code: str, words: list[str]
) -> None:
    hive = make_hub_hive(hf_token=token)
    final, events = run(hive.url, ref)
    assert_failed(final, events, code, *(w.format(hub=hub.url) for w in words))
    if token is not None:
        assert token not in final["error"]
    assert hub.resolver_calls() == 1  # not retried (the hive would try HIVE_MAX_ATTEMPTS=4 times)


WHOLE_REFUSALS = [
    ("repo-missing", "hf:org/zzz", "REPO_NOT_FOUND", ["the hub has no repository org/zzz"]),
    ("revision-missing", f"hf:{REPO}@nope", "REVISION_NOT_FOUND", [f"the hub has no revision 'nope' of {REPO}"]),
]


@pytest.mark.parametrize(("ref", "code", "words"), [c[1:] for c in WHOLE_REFUSALS], ids=[c[0] for c in WHOLE_REFUSALS])
def test_a_whole_model_refusal_names_the_repository_and_revision_asked_for(
    hub: Hub, make_hub_hive: MakeHive, ref: str, code: str, words: list[str]
) -> None:
    hive = make_hub_hive()
    final, events = run(hive.url, ref)
    assert_failed(final, events, code, *words)
    assert "None" not in final["error"]
    plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": ref}, timeout=10)  # a fleet pull's preflight
    assert plan.status_code == 404, plan.text
    error = plan.json()["error"]
    assert error["code"] == code and all(w in error["message"] for w in words), error


def test_the_hubs_error_codes_are_not_trusted_from_another_server(hub: Hub, make_hub_hive: MakeHive) -> None:
    """The same gated answer, fetched as a plain URL (not the hub's origin for this hive): a plain 401."""
    hive = make_hub_hive(hf_endpoint="http://127.0.0.1:9")  # the hub is just some server now
    final, events = run(hive.url, hub.resolve_url(GATED, "weights.bin"))
    assert_failed(final, events, "UNAUTHORIZED", "refused access (401)")
    assert hub.resolver_calls() == 1


def test_a_granted_token_downloads_from_the_gated_repo(hub: Hub, make_hub_hive: MakeHive) -> None:
    hive = make_hub_hive(hf_token=GRANTED)
    final, _ = run(hive.url, f"hf:{GATED}::file=weights.bin")
    assert final["status"] == "complete", final
    assert Path(final["path"]).read_bytes() == GATED_BYTES


# --------------------------------------------------------------------------- 429: the hub's windows


def waits_seen(events: Events) -> list[tuple[str, str]]:
    return [(d["waiting_until"], d["waiting_reason"]) for k, d in events if k == "progress" and "waiting_until" in d]


def test_rate_limit_windows_are_waited_out_and_are_no_failed_attempts(hub: Hub, make_hub_hive: MakeHive) -> None:
    """Three 429 windows in a row, on a hive that gives up after one failed attempt: it waits them out,
    saying so (and till when) in its state and its events, and completes."""
    hive = make_hub_hive(max_attempts=1)
    hub.limits.fail_next(3, reset_secs=1)
    download_id = start(hive.url, f"hf:{REPO}::file=config.json")
    waiting = wait_until(
        lambda: (s := state(hive.url, download_id))["waiting_until"] and s, timeout=10, what="a wait in the state"
    )
    assert waiting["status"] in ("starting", "downloading") and waiting["waiting_reason"] == RATE_LIMITED
    assert waiting["waiting_until"].endswith("Z")
    assert datetime.fromisoformat(waiting["waiting_until"]) > datetime.fromisoformat(waiting["started_at"])
    events = stream(hive.url, download_id)
    final = state(hive.url, download_id)
    assert final["status"] == "complete", final
    assert (final["waiting_until"], final["waiting_reason"]) == (None, None)
    assert Path(final["path"]).read_bytes() == hub.file(REPO, "config.json").content()
    waits = waits_seen(events)
    assert waits and all(reason == RATE_LIMITED and until.endswith("Z") for until, reason in waits)
    assert events[-1][0] == "complete"
    assert hub.resolver_calls() >= 4  # three refused, then the ones that fetched the file


def test_segments_wait_out_the_hubs_quota_too(hub: Hub, make_hub_hive: MakeHive) -> None:
    """Signed URLs that live less than the hive's 30 s margin are never reused, so every segment's
    request resolves at the hub: with a quota of 3 resolves a second, the segments wait out the
    window the hub's RateLimit headers announce (a 429 or not) and the download completes, on a hive
    allowing one failed attempt."""
    hive = make_hub_hive(max_attempts=1, segments=4, segment_min_bytes=256 * 1024)
    hub.switches.url_ttl = 20.0
    hub.limits.set_quota(3, window=1)
    final, events = run(hive.url, f"hf:{REPO}::file=model.safetensors")
    assert final["status"] == "complete", final
    assert final["sha256"] == hub.file(REPO, "model.safetensors").sha256
    assert final["total_bytes"] == LFS_SIZE and final["waiting_until"] is None
    assert waits_seen(events)


def test_a_window_longer_than_the_max_wait_fails_the_download(hub: Hub, make_hub_hive: MakeHive) -> None:
    hive = make_hub_hive(rate_limit_max_wait=1)
    hub.limits.fail_next(1, reset_secs=2)
    final, events = run(hive.url, f"hf:{REPO}::file=config.json")
    assert_failed(final, events, "DOWNLOAD_FAILED", RATE_LIMITED, "2 s", "HIVE_RATE_LIMIT_MAX_WAIT (1 s)")
    assert hub.resolver_calls() == 1


# --------------------------------------------------------------------------- the token, where huggingface_hub looks


def test_a_hive_with_only_a_token_file_downloads_from_a_gated_repo(hub: Hub, tmp_path: Path) -> None:
    """No HF_TOKEN anywhere (conftest removes it): the hive subprocess reads $HF_HOME/token, sends it
    to the hub, and never logs it."""
    hf_home = tmp_path / "hf-home-with-token"
    hf_home.mkdir()
    (hf_home / "token").write_text(GRANTED + "\n")
    env = {
        "HIVE_ID": "hive-file-token",
        "HIVE_MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HIVE_LOG_LEVEL": "DEBUG",
        **{f"HIVE_{k.upper()}": str(v) for k, v in FAST_HIVE.items()},
    }
    log_path = tmp_path / "hive.log"
    hive = ServiceProcess("services.hive.main", free_port(), env, log_path)
    assert "HF_TOKEN" not in hive.env and "HUGGING_FACE_HUB_TOKEN" not in hive.env
    hive.start()
    try:
        final, _ = run(hive.url, f"hf:{GATED}::file=weights.bin")
    finally:
        hive.stop()
    assert final["status"] == "complete", final
    assert Path(final["path"]).read_bytes() == GATED_BYTES
    resolves = [r for r in hub.records() if "/resolve/" in r.path]
    assert resolves and all(r.headers.get("authorization") == f"Bearer {GRANTED}" for r in resolves)
    log = log_path.read_text()
    assert "download_complete" in log and GRANTED not in log


def test_hf_token_path_is_read_by_an_in_process_hive(
    hub: Hub, make_hub_hive: MakeHive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "elsewhere" / "my-token"
    token_file.parent.mkdir()
    token_file.write_text(GRANTED)
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    hive = make_hub_hive()
    final, _ = run(hive.url, f"hf:{GATED}::file=weights.bin")
    assert final["status"] == "complete", final


# --------------------------------------------------------------------------- Content-Encoding


class _EncodingServer(ThreadingHTTPServer):
    encoding = "identity"
    body = b"x" * 4096
    requests: list[dict[str, str]]


class _EncodingHandler(BaseHTTPRequestHandler):
    """Answers every GET 200 with the server's body, labelled (and for gzip, encoded) with its
    Content-Encoding, whatever Accept-Encoding said."""

    server: _EncodingServer

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({k.lower(): v for k, v in self.headers.items()})
        payload = gzip.compress(srv.body) if srv.encoding == "gzip" else srv.body
        self.send_response(200)
        self.send_header("Content-Encoding", srv.encoding)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def encoding_server() -> Iterator[_EncodingServer]:
    srv = _EncodingServer(("127.0.0.1", 0), _EncodingHandler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("encoding", ["gzip", "br", "gzip, identity"])
def test_a_body_with_a_content_encoding_is_never_written_as_the_file(
    encoding_server: _EncodingServer, make_hub_hive: MakeHive, tmp_path: Path, encoding: str
) -> None:
    encoding_server.encoding = encoding
    hive = make_hub_hive()
    url = f"http://127.0.0.1:{encoding_server.server_address[1]}/blob.bin"
    final, events = run(hive.url, url)
    assert_failed(final, events, "DOWNLOAD_FAILED", f"Content-Encoding '{encoding}'", "identity")
    assert [r.get("accept-encoding") for r in encoding_server.requests] == ["identity"]  # asked, and not retried
    written = [p for p in (tmp_path / "models-0").rglob("*") if p.is_file() and ".rbee" not in p.parts]
    assert written == []  # neither the file nor a partial


def test_an_identity_body_is_written(encoding_server: _EncodingServer, make_hub_hive: MakeHive) -> None:
    hive = make_hub_hive()
    final, _ = run(hive.url, f"http://127.0.0.1:{encoding_server.server_address[1]}/blob.bin")
    assert final["status"] == "complete", final
    assert final["sha256"] == hashlib.sha256(encoding_server.body).hexdigest()
