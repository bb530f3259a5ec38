"""The queen's live page in a real headless Chromium (Playwright), against a real queen, two real hives
and the local model server (rate-capped so downloads last a few seconds).

Needs the `playwright` Python package and a system Chromium (`/usr/bin/chromium`, or RBEE_CHROMIUM);
the Playwright-managed browsers are never used. Without them the module is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.hive.main import create_app as create_hive_app
from services.hive.settings import HiveSettings
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from services.modelserver.server import Fault, ModelServer
from services.queen.api import page as queen_page
from services.queen.api.page import PUBLIC_PATHS
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.conftest import FAST_HIVE
from tests.support import Hold, ServerThread, free_port, serve, wait_until

try:
    from playwright.sync_api import Browser, Locator, Page, Playwright, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright Python package is not installed (pip install playwright)", allow_module_level=True)

CHROMIUM = os.environ.get("RBEE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # pragma: no cover - depends on the environment
    pytest.skip(
        f"no system Chromium at {CHROMIUM} (apt-get install chromium, or set RBEE_CHROMIUM)", allow_module_level=True
    )

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ORG = "acme/models"
SIZE = 3_000_000
RATE = 1_000_000  # bytes/s per response: a file takes about 3 s
SLOW_RATE = 100_000  # about 30 s: still running whenever a test needs it to be
WAIT = 15_000  # ms, for Playwright expectations

_counter = iter(range(1, 10_000))


def launch_browser(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)


def create_queen_app(**settings: Any) -> Any:
    """The real queen app, with the page router included (once `create_app` does so itself, nothing is added)."""
    fields: dict[str, Any] = {"health_interval": 0.5, "relay_backoff_initial": 0.05, "relay_backoff_max": 0.5}
    app = create_queen(QueenSettings(**{**fields, **settings}))
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.include_router(queen_page.router)
    return app


@dataclass
class Stack:
    """A model server, two hives and a queen on loopback; the queen can be restarted on its own port."""

    models: ModelServer
    hives: dict[str, ServerThread]
    hive_settings: dict[str, HiveSettings]
    queen_settings: dict[str, Any]
    port: int = field(default_factory=free_port)
    queen: ServerThread | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_queen(self) -> None:
        self.queen = ServerThread(create_queen_app(**self.queen_settings), port=self.port).start()
        wait_until(lambda: len(self.api("GET", "/v1/hives").json()["hives"]) == len(self.hives), what="queen hives")
        wait_until(
            lambda: all(h["healthy"] for h in self.api("GET", "/v1/hives").json()["hives"]), what="hives healthy"
        )

    def stop_queen(self) -> None:
        if self.queen is not None:
            self.queen.stop()
            self.queen = None

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def new_file(self, rate: int = RATE, size: int = SIZE, fault: Fault | None = None) -> str:
        """A fresh hub file (so no hive has it yet: its bytes are its own, not a blob a hive holds); its model ref."""
        number = next(_counter)
        name = f"model-{number}.bin"
        self.models.add_file(f"{ORG}/{name}", size, seed=number)
        self.models.set_fault(f"/{ORG}/resolve/main/{name}", fault or Fault(rate_bps=rate))
        return f"hf:{ORG}::file={name}"

    def start(self, model_ref: str, hive_id: str) -> str:
        response = self.api("POST", "/v1/downloads", json={"model_ref": model_ref, "hive_id": hive_id})
        assert response.status_code == 202, response.text
        return str(response.json()["download_id"])


@contextmanager
def running_stack(root: Path, token: str | None = None) -> Iterator[Stack]:
    """hive-a (3 at once) and hive-b (1 at once, so a second download there waits as `queued`), and a queen."""
    with ModelServer(root / "hub") as models:
        hives: dict[str, ServerThread] = {}
        hive_settings: dict[str, HiveSettings] = {}
        stack: Stack | None = None
        try:
            for hive_id, concurrent in (("hive-a", 3), ("hive-b", 1)):
                settings = hive_settings[hive_id] = HiveSettings(
                    id=hive_id,
                    models_dir=root / f"models-{hive_id}",
                    hf_endpoint=models.url,
                    max_concurrent=concurrent,
                    segments=1,  # one connection per file, so the model server's rate cap is the download's speed
                    api_token=token,
                    **FAST_HIVE,
                )
                hives[hive_id] = ServerThread(create_hive_app(settings)).start()
            queen_settings = {"hives": {h: s.url for h, s in hives.items()}, "api_token": token}
            stack = Stack(models, hives, hive_settings, queen_settings, token=token)
            stack.start_queen()
            yield stack
        finally:
            if stack is not None:
                stack.stop_queen()
            for server in reversed(hives.values()):
                server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("queen-page")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            browser = launch_browser(playwright)
        except Exception as exc:  # pragma: no cover - depends on the environment
            pytest.skip(f"Chromium at {CHROMIUM} did not start under Playwright: {exc}")
        yield browser
        browser.close()


@contextmanager
def open_page(browser: Browser, url: str, live: bool = True) -> Iterator[Page]:
    """A fresh browser context (own sessionStorage) on the page; fails the test on any uncaught page error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{url}/")
        if live:
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT)
        yield page
        assert not errors, f"uncaught errors on the page: {errors}"
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    with open_page(browser, stack.url) as opened:
        yield opened


def row(page: Page, download_id: str) -> Locator:
    return page.locator(f'tr.download[data-download-id="{download_id}"]')


def percent_of(r: Locator) -> float | None:
    text = r.locator(".percent").inner_text(timeout=WAIT)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip())
    return float(m[1]) if m else None


def poll(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    return wait_until(predicate, timeout=timeout, interval=0.05, what=what)


def assert_rises_live(r: Locator) -> None:
    """Two readings of `.percent` while the row is still downloading, the second higher than the first."""
    expect(r).to_have_attribute("data-status", "downloading", timeout=WAIT)
    first = poll(lambda: (p := percent_of(r)) is not None and 0 < p < 100 and p, "a first percent below 100")
    second = poll(lambda: (p := percent_of(r)) is not None and first < p < 100 and p, f"percent rising from {first}")
    assert first < second < 100


# ---------------------------------------------------------------------------------------------- tests


def test_page_is_served_with_its_files(stack: Stack) -> None:
    index = httpx.get(f"{stack.url}/", timeout=5)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in index.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", index.text), "the page must fetch nothing from elsewhere"
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{stack.url}/static/{name}", timeout=5)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert httpx.get(f"{stack.url}/static/..%2Fpage.py", timeout=5).status_code == 404
    assert httpx.get(f"{stack.url}/static/nope.js", timeout=5).status_code == 404
    assert "/" not in {p for p in httpx.get(f"{stack.url}/openapi.json", timeout=5).json()["paths"]}


def test_running_download_rises_live_then_completes(stack: Stack, page: Page) -> None:
    download_id = stack.start(stack.new_file(), "hive-a")
    r = row(page, download_id)
    assert_rises_live(r)
    expect(r.locator(".speed")).to_have_text(re.compile(r"^\d+(\.\d)? (B|kB|MB)/s$"), timeout=WAIT)
    expect(r.locator(".bytes")).to_have_text(re.compile(r" / 3\.0 MB$"))
    expect(r.locator(".hive")).to_have_text("hive-a")
    expect(r).to_have_attribute("data-status", "complete", timeout=WAIT)
    expect(r.locator(".percent")).to_have_text("100.0%")
    expect(r.locator(".bytes")).to_have_text("3.0 MB / 3.0 MB")
    expect(r.locator(".status")).to_have_text("complete")
    expect(r.locator(".cancel")).to_be_hidden()
    # the hive badges, from /v1/hives
    expect(page.locator('#hive-list .hive[data-hive-id="hive-a"]')).to_have_attribute("data-health", "healthy")
    expect(page.locator('#hive-list .hive[data-hive-id="hive-b"]')).to_have_attribute("data-health", "healthy")


def test_download_started_from_the_form_appears_and_completes(stack: Stack, page: Page) -> None:
    ref = stack.new_file()
    expect(page.locator('#hive-select option[value="hive-b"]')).to_have_count(1, timeout=WAIT)
    page.fill("#model-ref", ref)
    page.select_option("#hive-select", "hive-b")
    page.click("#start-form button[type=submit]")
    r = page.locator("tr.download").filter(has=page.locator(f'.ref:text-is("{ref}")'))
    expect(r).to_have_count(1, timeout=WAIT)
    expect(r.locator(".hive")).to_have_text("hive-b")
    expect(page.locator("#form-message")).to_have_text("started on hive-b")
    expect(r).to_have_attribute("data-status", "complete", timeout=WAIT)
    expect(r.locator(".percent")).to_have_text("100.0%")


def test_cancel_button_cancels(stack: Stack, page: Page) -> None:
    download_id = stack.start(stack.new_file(rate=SLOW_RATE), "hive-a")
    r = row(page, download_id)
    expect(r).to_have_attribute("data-status", "downloading", timeout=WAIT)
    r.locator(".cancel").click()
    expect(r).to_have_attribute("data-status", "cancelled", timeout=WAIT)
    expect(r.locator(".status")).to_have_text("cancelled")
    expect(r.locator(".cancel")).to_be_hidden()
    assert stack.api("GET", f"/v1/downloads/{download_id}").json()["status"] == "cancelled"


def test_queued_download_shows_its_position(stack: Stack, page: Page) -> None:
    running = stack.start(stack.new_file(rate=SLOW_RATE), "hive-b")  # hive-b runs one at a time
    waiting = stack.start(stack.new_file(rate=SLOW_RATE), "hive-b")
    try:
        expect(row(page, running)).to_have_attribute("data-status", "downloading", timeout=WAIT)
        expect(row(page, waiting)).to_have_attribute("data-status", "queued", timeout=WAIT)
        expect(row(page, waiting).locator(".status")).to_have_text(re.compile(r"^queued #\d+$"))
        expect(row(page, waiting).locator(".cancel")).to_be_visible()
    finally:
        for download_id in (waiting, running):
            stack.api("DELETE", f"/v1/downloads/{download_id}")
    expect(row(page, waiting)).to_have_attribute("data-status", "cancelled", timeout=WAIT)


def test_failed_download_shows_code_and_message(stack: Stack, page: Page) -> None:
    ref = stack.new_file(fault=Fault(always_status=404))
    download_id = stack.start(ref, "hive-a")
    r = row(page, download_id)
    expect(r).to_have_attribute("data-status", "failed", timeout=WAIT)
    expect(r.locator(".error-code")).to_have_text("NOT_FOUND")
    expect(r.locator(".error-message")).to_have_text(re.compile(r"not found"))
    expect(r.locator(".status")).to_have_text("failed")
    # the download's `error` event is not mistaken for the connection's error event
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")


def test_page_reconnects_after_the_queen_restarts(stack: Stack, page: Page) -> None:
    before = stack.start(stack.new_file(), "hive-a")
    expect(row(page, before)).to_have_attribute("data-status", "downloading", timeout=WAIT)
    stack.stop_queen()
    try:
        expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting", timeout=WAIT)
        hive = stack.hives["hive-a"].url
        poll(lambda: httpx.get(f"{hive}/v2/downloads/{before}").json()["status"] == "complete", "done while away")
    finally:
        stack.start_queen()
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT)
    # what ended while the page was away comes from the list, what starts now comes live
    expect(row(page, before)).to_have_attribute("data-status", "complete", timeout=WAIT)
    after = stack.start(stack.new_file(), "hive-b")
    assert_rises_live(row(page, after))
    expect(row(page, after)).to_have_attribute("data-status", "complete", timeout=WAIT)


def test_hive_health_badges_follow_the_hives(stack: Stack, page: Page) -> None:
    badge = page.locator('#hive-list .hive[data-hive-id="hive-b"]')
    expect(badge).to_have_attribute("data-health", "healthy", timeout=WAIT)
    hive_b = stack.hives["hive-b"]
    hive_b.stop()
    try:
        expect(badge).to_have_attribute("data-health", "unhealthy", timeout=WAIT)
        expect(badge.locator(".health")).to_have_text("unhealthy")
    finally:
        stack.hives["hive-b"] = ServerThread(create_hive_app(stack.hive_settings["hive-b"]), port=hive_b.port).start()
    expect(badge).to_have_attribute("data-health", "healthy", timeout=WAIT)


def test_with_a_token_the_page_asks_for_it_then_works(browser: Browser, tmp_path: Path) -> None:
    token = "s3cret-token"
    with running_stack(tmp_path, token=token) as secured:
        assert httpx.get(f"{secured.url}/v1/downloads", timeout=5).status_code == 401
        for path in sorted(PUBLIC_PATHS):
            status = httpx.get(f"{secured.url}{path}", timeout=5).status_code
            assert status == 200, (
                f"GET {path} answers {status} with RBEE_API_TOKEN set: the page cannot ask for the token. "
                "TokenAuthMiddleware must let services.queen.api.page.PUBLIC_PATHS through (they hold no data)."
            )
        earlier = secured.start(secured.new_file(size=200_000), "hive-a")
        poll(lambda: secured.api("GET", f"/v1/downloads/{earlier}").json()["status"] == "complete", "earlier done")
        with open_page(browser, secured.url, live=False) as page:
            expect(page.locator("#login")).to_be_visible(timeout=WAIT)
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "auth")
            page.fill("#token", "wrong")
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login-message")).to_contain_text("refused", timeout=WAIT)
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", token)
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login")).to_be_hidden()
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT)
            assert page.evaluate("sessionStorage.getItem('rbee-api-token')") == token
            expect(row(page, earlier)).to_have_attribute("data-status", "complete", timeout=WAIT)
            expect(page.locator('#hive-list .hive[data-hive-id="hive-b"]')).to_be_visible(timeout=WAIT)
            live = secured.start(secured.new_file(), "hive-b")
            assert_rises_live(row(page, live))
            expect(row(page, live)).to_have_attribute("data-status", "complete", timeout=WAIT)
            # a reload keeps the token for this tab
            page.reload()
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT)
            expect(page.locator("#login")).to_be_hidden()


def test_user_data_is_shown_as_text_never_as_markup(stack: Stack, page: Page) -> None:
    ref = f"{stack.models.url}/acme/<img/src=x/onerror=window.__xss=1>.bin"
    page.fill("#model-ref", ref)
    page.click("#start-form button[type=submit]")
    r = page.locator("tr.download").filter(has=page.locator(".ref", has_text="<img/src=x"))
    expect(r).to_have_count(1, timeout=WAIT)
    expect(r.locator(".ref")).to_have_text(ref)
    expect(r).to_have_attribute("data-status", "failed", timeout=WAIT)
    expect(r.locator(".error-code")).to_have_text("NOT_FOUND")
    assert r.locator("img").count() == 0 and page.locator("tbody img").count() == 0
    assert page.evaluate("window.__xss") is None


def test_a_whole_model_is_one_row_with_its_file_count_that_opens_to_its_files(browser: Browser, tmp_path: Path) -> None:
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    with Hub(tmp_path / "hub-store") as hub:
        hub.add_repo("acme/tiny")
        content = {name: Generated(SIZE, seed=i) for i, name in enumerate(shards)}
        hub.commit("acme/tiny", {**content, "config.json": b'{"hidden": 8}', "tokenizer.json": b'{"vocab": []}'})
        settings = HiveSettings(id="hive-m", models_dir=tmp_path / "models", hf_endpoint=hub.url, **FAST_HIVE)
        with serve(create_hive_app(settings)) as hive, serve(create_queen_app(hives={"hive-m": hive.url})) as queen:
            poll(lambda: httpx.get(f"{queen.url}/v1/hives").json()["hives"][0]["healthy"], "hive-m healthy")
            with open_page(browser, queen.url) as page:
                hold = Hold(hive.url)  # the model runs until released
                page.fill("#model-ref", "hf:acme/tiny")
                page.click("#start-form button[type=submit]")
                rows = page.locator("tr.download")
                expect(rows).to_have_count(1, timeout=WAIT)  # one row for the model, not one per file
                r = rows.first
                model_id = r.get_attribute("data-download-id")
                expect(r.locator(".name")).to_have_text("acme/tiny")
                summary = r.locator(".files summary")
                expect(summary).to_have_text(re.compile(r"^\d+/\d+ files$"), timeout=WAIT)
                expect(r).to_have_attribute("data-status", "downloading", timeout=WAIT)
                total = int(summary.inner_text().split("/")[1].split()[0])
                assert total >= 4

                summary.click()  # opened: the files come from GET /v1/downloads/{id}
                files = r.locator(".file-list .file")
                expect(files).to_have_count(total, timeout=WAIT)
                paths = set(r.locator(".file-list .file-path").all_inner_texts())
                assert {*shards, "config.json", "tokenizer.json"} <= paths
                shard = files.filter(has=page.locator(f'.file-path:text-is("{shards[0]}")'))
                expect(shard.locator(".file-bytes")).to_have_text(re.compile(r" / 3\.0 MB$"))
                # while it stays open and the model runs, the list is asked for again (every 2 s)
                gets = (
                    f"performance.getEntriesByType('resource').filter(e => e.name.endsWith('/v1/downloads/{model_id}'))"
                )
                asked = page.evaluate(f"{gets}.length")
                poll(lambda: page.evaluate(f"{gets}.length") > asked, "the file list asked for again")

                hold.release()
                expect(r).to_have_attribute("data-status", "complete", timeout=WAIT)
                expect(summary).to_have_text(f"{total}/{total} files", timeout=WAIT)
                # still open, the list follows: every file complete
                expect(r.locator('.file-list .file[data-status="complete"]')).to_have_count(total, timeout=WAIT)
                expect(shard.locator(".file-bytes")).to_have_text("3.0 MB")


@contextmanager
def fleet_stack(
    root: Path, files: dict[str, bytes | Generated]
) -> Iterator[tuple[ServerThread, dict[str, ServerThread]]]:
    """The test hub with acme/fleet, two hives on it and a queen: (the queen, the hives)."""
    with Hub(root / "hub-store") as hub, contextlib.ExitStack() as stack:
        hub.add_repo("acme/fleet")
        hub.commit("acme/fleet", files)
        hives = {}
        for hive_id in ("hive-a", "hive-b"):
            settings = HiveSettings(id=hive_id, models_dir=root / hive_id, hf_endpoint=hub.url, **FAST_HIVE)
            hives[hive_id] = stack.enter_context(serve(create_hive_app(settings)))
        queen = stack.enter_context(serve(create_queen_app(hives={h: s.url for h, s in hives.items()})))
        poll(lambda: all(h["healthy"] for h in httpx.get(f"{queen.url}/v1/hives").json()["hives"]), "hives healthy")
        yield queen, hives


def test_a_fleet_pull_is_one_row_with_a_bar_per_hive_and_the_total(browser: Browser, tmp_path: Path) -> None:
    files = {"config.json": b'{"hidden": 8}', "model.safetensors": Generated(SIZE, seed=7)}
    with fleet_stack(tmp_path, files) as (queen, hives):
        with open_page(browser, queen.url) as page:
            holds = [Hold(hive.url) for hive in hives.values()]  # the pull runs until released
            started = httpx.post(
                f"{queen.url}/v1/pulls", json={"model_ref": "hf:acme/fleet", "hive_ids": "all"}, timeout=30
            )
            assert started.status_code == 202, started.text
            pull = started.json()
            r = page.locator(f'tr.pull[data-pull-id="{pull["pull_id"]}"]')
            expect(r).to_have_count(1, timeout=WAIT)
            expect(page.locator("#download-rows tr")).to_have_count(1)  # one row: the hives' downloads fold into it
            for download_id in pull["downloads"].values():
                expect(row(page, download_id)).to_have_count(0)
            expect(r.locator(".name")).to_have_text("acme/fleet")
            expect(r.locator(".pull-note")).to_have_text(f"pull onto 2 hives · commit {pull['commit'][:12]}")
            expect(r).to_have_attribute("data-status", "running")
            lines = r.locator(".pull-hives .pull-hive")
            expect(lines).to_have_count(2, timeout=WAIT)
            assert [li.get_attribute("data-hive-id") for li in lines.all()] == ["hive-a", "hive-b"]
            for line in lines.all():  # each hive: its id, a bar, its percent, its status
                expect(line).to_have_attribute("data-status", "downloading", timeout=WAIT)
                expect(line.locator(".pull-hive-percent")).to_have_text(re.compile(r"^\d+\.\d%$"))
                expect(line.locator(".bar")).to_have_attribute("role", "progressbar")
            expect(r.locator(".bytes")).to_have_text(re.compile(r" / 6\.0 MB$"))  # the total: both hives
            expect(r.locator(".hive")).to_have_text("0/2 done")
            expect(r.locator(".cancel")).to_be_visible()
            page.select_option("#filter-hive", "hive-b")  # a pull shows for any of its hives
            expect(r).to_be_visible()
            page.select_option("#filter-status", "complete")
            expect(r).to_be_hidden()
            page.select_option("#filter-status", "")

            for hold in holds:
                hold.release()
            expect(r).to_have_attribute("data-status", "complete", timeout=WAIT)
            for line in lines.all():
                expect(line).to_have_attribute("data-status", "complete")
                expect(line.locator(".pull-hive-percent")).to_have_text("100.0%")
            expect(r.locator(".percent")).to_have_text("100.0%")
            expect(r.locator(".bytes")).to_have_text("6.0 MB / 6.0 MB")
            expect(r.locator(".hive")).to_have_text("2/2 done")
            expect(r.locator(".status")).to_have_text("complete")
            expect(r.locator(".cancel")).to_be_hidden()
            expect(page.locator("#summary")).to_have_text("· 1 complete")

        with open_page(browser, queen.url) as page:  # a page opened afterwards: the pull from GET /v1/pulls
            r = page.locator(f'tr.pull[data-pull-id="{pull["pull_id"]}"]')
            expect(r).to_have_attribute("data-status", "complete", timeout=WAIT)
            expect(r.locator(".pull-hives .pull-hive")).to_have_count(2)
            expect(page.locator("#download-rows tr")).to_have_count(1)


def test_a_fleet_pulls_cancel_button_cancels_it_on_every_hive(browser: Browser, tmp_path: Path) -> None:
    with fleet_stack(tmp_path, {"model.safetensors": Generated(SIZE, seed=8)}) as (queen, hives):
        with open_page(browser, queen.url) as page, contextlib.ExitStack() as held:
            for hive in hives.values():
                held.enter_context(Hold(hive.url))  # the pull runs until the end of the block
            pull = httpx.post(
                f"{queen.url}/v1/pulls", json={"model_ref": "hf:acme/fleet", "hive_ids": "all"}, timeout=30
            )
            assert pull.status_code == 202, pull.text
            r = page.locator(f'tr.pull[data-pull-id="{pull.json()["pull_id"]}"]')
            expect(r.locator(".pull-hives .pull-hive")).to_have_count(2, timeout=WAIT)
            r.locator(".cancel").click()
            expect(r).to_have_attribute("data-status", "cancelled", timeout=WAIT)
            expect(r.locator('.pull-hive[data-status="cancelled"]')).to_have_count(2, timeout=WAIT)
            expect(r.locator(".cancel")).to_be_hidden()


def test_the_models_view_shows_the_matrix_live_and_its_buttons_pin_and_delete(browser: Browser, tmp_path: Path) -> None:
    files = {"config.json": b'{"hidden": 8}', "model.safetensors": Generated(SIZE, seed=9)}
    with fleet_stack(tmp_path, files) as (queen, _hives):

        def pull(hive_id: str) -> None:
            started = httpx.post(
                f"{queen.url}/v1/pulls", json={"model_ref": "hf:acme/fleet", "hive_ids": [hive_id]}, timeout=30
            )
            assert started.status_code == 202, started.text

        pull("hive-b")
        with open_page(browser, queen.url) as page:
            r = page.locator('#model-rows tr.model[data-repo-id="acme/fleet"]')
            expect(r).to_have_count(1, timeout=WAIT)
            cell = r.locator('td.model-cell[data-hive-id="hive-b"]')
            expect(cell).to_have_attribute("data-state", "complete", timeout=WAIT)
            expect(cell.locator(".state")).to_have_text("complete")
            expect(r.locator("td.model-cell")).to_have_count(1)  # hive-a holds none of it
            expect(page.locator("#models-head th")).to_have_text(["Model", "Size", "hive-a", "hive-b"])
            for hive_id in ("hive-a", "hive-b"):  # a disk bar per hive
                disk = page.locator(f'#disk-list .disk[data-hive-id="{hive_id}"]')
                expect(disk.locator(".bar")).to_have_attribute("role", "progressbar")
                expect(disk.locator(".disk-text")).to_have_text(re.compile(r"^\d.* used · \d.* free$"))

            pull("hive-a")  # live: the hive's model event brings the new copy in, no reload
            expect(r.locator('td.model-cell[data-hive-id="hive-a"]')).to_have_attribute(
                "data-state", "complete", timeout=WAIT
            )

            cell.locator("button.pin").click()
            expect(cell.locator(".pinned")).to_have_text("pinned", timeout=WAIT)
            page.once("dialog", lambda dialog: dialog.accept())
            cell.locator("button.delete").click()  # pinned: the hive refuses, the page says why
            expect(page.locator("#models-message")).to_contain_text("MODEL_PINNED", timeout=WAIT)
            expect(cell).to_have_count(1)

            cell.locator("button.pin").click()  # unpin
            expect(cell.locator(".pinned")).to_have_count(0, timeout=WAIT)
            page.once("dialog", lambda dialog: dialog.accept())
            cell.locator("button.delete").click()
            expect(cell).to_have_count(0, timeout=WAIT)
            expect(page.locator("#models-message")).to_be_hidden()
            expect(r.locator('td.model-cell[data-hive-id="hive-a"]')).to_have_count(1)  # only hive-b's copy went
            body = httpx.get(f"{queen.url}/v1/models", timeout=10).json()
            assert [[h["hive_id"] for h in m["hives"]] for m in body["models"]] == [["hive-a"]]
            assert not (tmp_path / "hive-b" / "hub" / "models--acme--fleet").exists()
