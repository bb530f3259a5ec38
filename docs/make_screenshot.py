"""Render docs/queen-page.png: the queen's live page with downloads in every state, in headless Chromium.

    .venv/bin/python docs/make_screenshot.py [--out docs/queen-page.png]

Runs a real queen, two hives and the local model server on loopback (the same harness as
tests/test_queen_page.py), so it needs `playwright` and a system Chromium, and no network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from services.modelserver.server import Fault  # noqa: E402
from tests.support import wait_until  # noqa: E402
from tests.test_queen_page import Stack, launch_browser, open_page, percent_of, row, running_stack  # noqa: E402

MB = 1_000_000


def add(stack: Stack, repo: str, name: str, size: int, fault: Fault | None = None) -> str:
    stack.models.add_file(f"{repo}/{name}", size, seed=len(name))
    stack.models.set_fault(f"/{repo}/resolve/main/{name}", fault or Fault())
    return f"hf:{repo}::file={name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "queen-page.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp)) as stack, sync_playwright() as pw:
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
        with open_page(browser, stack.url) as page:
            for download_id in (*done, failed, gone, queued):
                expect(row(page, download_id)).to_be_visible()
            expect(row(page, failed)).to_have_attribute("data-status", "failed", timeout=15_000)
            expect(row(page, queued)).to_have_attribute("data-status", "queued", timeout=15_000)
            wait_until(lambda: all((percent_of(row(page, d)) or 0) > 35 for d in running), timeout=20, interval=0.05)
            page.screenshot(path=str(args.out), full_page=True)
        for download_id in (*running, queued):
            stack.api("DELETE", f"/v1/downloads/{download_id}")
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
