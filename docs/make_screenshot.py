"""Render docs/queen-page.png: the queen's live page with downloads in every state, in headless Chromium.

    .venv/bin/python docs/make_screenshot.py [--out docs/queen-page.png]

Runs a real queen, two hives and the local model server on loopback (the same harness as
tests/e2e/test_queen_page.py), plus a third hive on the local test hub pulling a whole model (its row
opened to its files) and a fourth with which it takes part in a fleet pull of another model (one row,
a bar per hive), so it needs `playwright` and a system Chromium, and no network.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from services.hive.main import create_app as create_hive_app  # noqa: E402
from services.hive.settings import HiveSettings  # noqa: E402
from services.modelserver.hub import Hub  # noqa: E402
from services.modelserver.hub_repo import Generated  # noqa: E402
from services.modelserver.server import Fault  # noqa: E402
from tests.conftest import FAST_HIVE  # noqa: E402
from tests.e2e.test_queen_page import Stack, launch_browser, open_page, percent_of, row, running_stack  # noqa: E402
from tests.support import ServerThread, wait_until  # noqa: E402

MB = 1_000_000
MODEL = "meta-llama/Llama-3.2-1B-Instruct"
PULLED = "Qwen/Qwen2.5-1.5B-Instruct"  # onto hive-c and hive-d, one fleet pull
_seeds = itertools.count(1)  # every file its own bytes: a hive stores a blob once


def add(stack: Stack, repo: str, name: str, size: int, fault: Fault | None = None) -> str:
    stack.models.add_file(f"{repo}/{name}", size, seed=next(_seeds))
    stack.models.set_fault(f"/{repo}/resolve/main/{name}", fault or Fault())
    return f"hf:{repo}::file={name}"


def fill_hub(hub: Hub) -> None:
    """MODEL (hive-c pulls it alone, its row opened to its files) and PULLED (the fleet pull) on the hub."""
    small = ("config.json", "generation_config.json", "tokenizer.json", "model.safetensors.index.json")
    for repo, size in ((MODEL, 40 * MB), (PULLED, 30 * MB)):
        hub.add_repo(repo)
        shards = {f"model-0000{i}-of-00002.safetensors": Generated(size, seed=next(_seeds)) for i in (1, 2)}
        hub.commit(repo, {**shards, **{name: b"{}\n" for name in small}})


def hub_hive(hub: Hub, root: Path, hive_id: str) -> ServerThread:
    """A hive on the test hub (in-process, started)."""
    settings = HiveSettings(id=hive_id, models_dir=root / f"models-{hive_id}", hf_endpoint=hub.url, **FAST_HIVE)
    return ServerThread(create_hive_app(settings)).start()


def register(stack: Stack, hives: dict[str, ServerThread], bandwidth: int) -> None:
    """The hub's hives registered, each capped so what it pulls is still running for the picture."""
    for hive_id, hive in hives.items():
        stack.api("POST", "/v1/hives", json={"hive_id": hive_id, "url": hive.url})
        httpx.put(f"{hive.url}/v2/settings/bandwidth", json={"bandwidth_limit": bandwidth}, timeout=5)
    wait_until(lambda: all(h["healthy"] for h in stack.api("GET", "/v1/hives").json()["hives"]), what="hub hives")


def start_pull(stack: Stack) -> str:
    """A fleet pull of PULLED onto hive-c and hive-d; its id."""
    response = stack.api("POST", "/v1/pulls", json={"model_ref": f"hf:{PULLED}", "hive_ids": ["hive-c", "hive-d"]})
    assert response.status_code == 202, response.text
    return str(response.json()["pull_id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "queen-page.png")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_stack(Path(tmp)) as stack,
        Hub(Path(tmp) / "hub-store") as hub,
        contextlib.ExitStack() as hub_hives,
        sync_playwright() as pw,
    ):
        fill_hub(hub)
        on_hub = {hive_id: hub_hive(hub, Path(tmp), hive_id) for hive_id in ("hive-c", "hive-d")}
        for hive in on_hub.values():
            hub_hives.callback(hive.stop)
        browser = launch_browser(pw)
        done = [
            stack.start(add(stack, "TheBloke/TinyLlama-1.1B-GGUF", "tinyllama-1.1b.Q4_K_M.gguf", 24 * MB), "hive-a"),
            stack.start(add(stack, "Qwen/Qwen2.5-0.5B-Instruct", "config.json", 2_400), "hive-b"),
        ]
        wait_until(lambda: all(stack.api("GET", f"/v1/downloads/{d}").json()["status"] == "complete" for d in done))
        failed = stack.start(add(stack, "acme/private-model", "weights.bin", MB, Fault(always_status=404)), "hive-a")
        gone = stack.start(add(stack, "google/gemma-2-2b", "model.safetensors", 50 * MB, Fault(rate_bps=MB)), "hive-a")
        stack.api("DELETE", f"/v1/downloads/{gone}")
        llama = add(
            stack, "meta-llama/Llama-3.1-8B", "model-00001-of-00004.safetensors", 80 * MB, Fault(rate_bps=9 * MB)
        )
        mistral = add(stack, "mistralai/Mistral-7B-v0.3", "consolidated.safetensors", 60 * MB, Fault(rate_bps=5 * MB))
        running = [stack.start(llama, "hive-a"), stack.start(mistral, "hive-b")]
        queued = stack.start(add(stack, "Qwen/Qwen2.5-7B-Instruct", "model.safetensors", 30 * MB), "hive-b")
        register(stack, on_hub, 8 * MB)
        pull = start_pull(stack)
        model = stack.start(f"hf:{MODEL}", "hive-c")  # the newest: the top row
        with open_page(browser, stack.url) as page:
            for download_id in (*done, failed, gone, queued):
                expect(row(page, download_id)).to_be_visible()
            expect(row(page, failed)).to_have_attribute("data-status", "failed", timeout=15_000)
            expect(row(page, queued)).to_have_attribute("data-status", "queued", timeout=15_000)
            wait_until(lambda: all((percent_of(row(page, d)) or 0) > 35 for d in running), timeout=20, interval=0.05)
            pulled = page.locator(f'tr.pull[data-pull-id="{pull}"]')
            expect(pulled.locator(".pull-hives .pull-hive")).to_have_count(2, timeout=15_000)
            wait_until(lambda: (percent_of(pulled) or 0) > 10, timeout=20, interval=0.05)
            row(page, model).locator(".files summary").click()
            expect(row(page, model).locator(".file-list .file")).to_have_count(7, timeout=15_000)
            page.screenshot(path=str(args.out), full_page=True)
        for download_id in (*running, queued, model):
            stack.api("DELETE", f"/v1/downloads/{download_id}")
        stack.api("DELETE", f"/v1/pulls/{pull}")
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
