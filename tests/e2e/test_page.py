"""The progress pages in Debian's Chromium against a real server: live states, buttons, kill and restart.

Each state is saved as a screenshot, /tmp/progressd-<state>.png, to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece  # type: ignore[import-untyped]
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.e2e.debian import CHROMIUM, CHROMIUM_ARGS, ensure_package
from tests.e2e.page_server import PageServer
from tests.integration.notify_kit import Receiver

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp")
CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables"},
        {
            "name": "Generate application UI",
            "substeps": ["Customer list view", "Product list view", "Sales form", "Repair board"],
        },
        {"name": "Add search and filters"},
        {"name": "Configure workflows", "requires_approval": True},
    ],
}
SYMBOL = {
    "completed": "✓",
    "running": "◐",
    "pending": "○",
    "approval": "⚠",
    "failed": "✕",
    "paused": "⏸",
    "skipped": "⤼",
}
# Records desktop notifications instead of showing them; permission is granted when the page asks.
NOTIFICATION_STUB = """
window.__notes = [];
window.Notification = class {
  static permission = "default";
  static async requestPermission() { this.permission = "granted"; return "granted"; }
  constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
  close() {}
};
"""

expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def chromium() -> Path:
    try:
        return ensure_package(CHROMIUM, "chromium")
    except RuntimeError as exc:
        pytest.fail(f"Debian's Chromium is needed for the page tests and could not be installed: {exc}")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(chromium: Path, playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    srv = PageServer(tmp_path_factory.mktemp("pages"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server: PageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


@pytest.fixture
def context(browser: Browser, server: PageServer) -> Iterator[BrowserContext]:
    # Reduced motion: no bar transitions, so a screenshot shows the state the assertions just saw.
    ctx = browser.new_context(
        base_url=server.url, viewport={"width": 1100, "height": 1000}, reduced_motion="reduce"
    )
    ctx.add_init_script(NOTIFICATION_STUB)
    yield ctx
    ctx.close()


def _incognito(text: str) -> bool:
    # A test's browser context is an incognito one, where Chromium itself logs that it has no Push API when
    # the page tries to subscribe (the page then keeps its own notifications): not an error of the page.
    return "does not support the Push API in incognito mode" in text


def open_page(context: BrowserContext, path: str) -> tuple[Page, list[str]]:
    """A page at path, and the list it adds browser errors to (script errors, CSP violations)."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" and not _incognito(msg.text) else None,
    )
    page.goto(path)
    expect(page.locator("#conn")).to_have_text("Live")
    return page, errors


def post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    view: dict[str, Any] = response.json()
    return view


def shot(page: Page, state: str) -> None:
    page.screenshot(path=str(SHOTS / f"progressd-{state}.png"), full_page=True)


def expect_matches(page: Page, view: dict[str, Any]) -> None:
    """The progress box shows exactly this view: version, bar, status, current step, symbols, substeps."""
    expect(page.locator("#box")).to_have_attribute("data-version", str(view["version"]))
    bar = page.get_by_role("progressbar", name=view["title"])
    expect(bar).to_have_attribute("aria-valuenow", str(view["progress"]))
    expect(page.locator("#percent")).to_have_text(f"{view['progress']}%")
    symbols = [SYMBOL[s["status"]] for s in view["steps"]]
    if view["status"] == "cancelled":
        symbols = [
            "⊘" if s["status"] in ("running", "paused", "approval") else SYMBOL[s["status"]]
            for s in view["steps"]
        ]
    expect(page.locator("#steps .step > .sym")).to_have_text(symbols)
    current = view["steps"][view["current_step"] - 1]
    if view["status"] not in ("completed", "cancelled"):
        line = f"Step {current['order']} of {view['total_steps']}: {current['name']}"
        expect(page.locator("#current")).to_have_text(line)
        if current["substeps"]:
            done = [("✓" if s["done"] else "[◐○⏸]") for s in current["substeps"]]  # ⏸: its step is paused
            expect(page.locator("#substeps .sym")).to_have_text([re.compile(d) for d in done])
    expect(page.locator("#pause")).to_be_visible(visible=view["status"] == "running")
    expect(page.locator("#resume")).to_be_visible(visible=view["status"] == "paused")


def test_the_progress_box_follows_the_crm_task_and_its_buttons_change_it(
    context: BrowserContext, api: httpx.Client, browser: Browser, server: PageServer
) -> None:
    tid = post(api, "/api/tasks", CRM)["task_id"]
    base = f"/api/tasks/{tid}"
    page, errors = open_page(context, f"/tasks/{tid}")
    page.get_by_role("button", name="Enable notifications").click()
    expect(page.get_by_role("button", name="Enable notifications")).to_be_hidden()
    expect(page.locator("#title")).to_have_text("Cellphone Store CRM")
    expect(page.locator("#started")).to_have_text("Started: not yet")
    # With no history yet the estimate rests on its prior: a finite time with a wide interval on hover.
    expect(page.locator("#eta")).to_have_text(re.compile(r"ETA: (.+ remaining|—)"))
    expect_matches(page, api.get(f"{base}/progress").json())
    shot(page, "pending")

    post(api, f"{base}/steps/1/start")
    view = post(api, f"{base}/steps/1/progress", {"percent": 60})
    expect_matches(page, view)
    assert view["progress"] == 15
    started = page.locator("#started")
    expect(started).to_have_text(re.compile(r"^Started: (just now|\d+ s ago)$"))
    before = started.text_content()
    assert before is not None
    expect(started).not_to_have_text(before, timeout=4000)  # no traffic: the page's own clock moves it

    post(api, f"{base}/steps/1/complete")
    post(api, f"{base}/steps/2/start")
    post(api, f"{base}/logs", {"level": "info", "message": "created 3 tables", "step": 1})
    post(api, f"{base}/steps/2/substeps/1/done")
    post(api, f"{base}/steps/2/substeps/2/done")
    view = post(api, f"{base}/steps/2/progress", {"percent": 60})
    expect_matches(page, view)
    expect(page.locator("#current")).to_have_text("Step 2 of 4: Generate application UI")
    expect(page.locator("#substeps li")).to_have_text(
        [
            re.compile(r"Customer list view\s*✓"),
            re.compile(r"Product list view\s*✓"),
            re.compile(r"Sales form\s*◐\s*\(in progress\)"),
            re.compile(r"Repair board\s*○\s*\(pending\)"),
        ]
    )
    expect(page.locator("#logs")).to_contain_text("created 3 tables")
    shot(page, "running")
    for name, options in {
        "running-dark": {"color_scheme": "dark"},
        "running-phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2},
        "running-phone-dark": {"viewport": {"width": 390, "height": 844}, "color_scheme": "dark"},
    }.items():
        other = browser.new_context(base_url=server.url, reduced_motion="reduce", **options)  # type: ignore[arg-type]
        other_page = other.new_page()
        other_page.goto(f"/tasks/{tid}")
        expect_matches(other_page, view)
        shot(other_page, name)
        other.close()

    # Pause and resume from the page.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#status")).to_have_text("⏸ Paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    view = api.get(f"{base}/progress").json()
    assert view["status"] == "paused" and view["steps"][1]["status"] == "paused"
    expect_matches(page, view)
    shot(page, "paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#status")).to_have_text("◐ Running")
    assert api.get(f"{base}/progress").json()["status"] == "running"

    # A failed step shows its error; Retry in the page runs it again.
    post(api, f"{base}/steps/2/complete")
    post(api, f"{base}/steps/3/start")
    view = post(api, f"{base}/steps/3/fail", {"error": "index missing on customers.phone"})
    expect_matches(page, view)
    expect(page.locator("#failure")).to_contain_text("Step 3 failed: Add search and filters")
    expect(page.locator("#failure-msg")).to_have_text("index missing on customers.phone")
    expect(page.locator("#status")).to_have_text("✕ Failed")
    expect(page.get_by_role("button", name="Skip step")).to_be_visible()
    shot(page, "failed")
    page.get_by_role("button", name="Retry step").click()
    expect(page.locator("#failure")).to_be_hidden()
    view = api.get(f"{base}/progress").json()
    assert view["status"] == "running" and view["steps"][2]["attempts"] == 2
    expect_matches(page, view)

    # Approval: the step waits with its message; Approve in the page lets it run.
    post(api, f"{base}/steps/3/complete")
    view = post(api, f"{base}/steps/4/start")
    expect_matches(page, view)
    expect(page.locator("#approval-h")).to_have_text("⚠ Approval required for Step 4: Configure workflows")
    expect(page.locator("#approval-msg")).to_have_text("Approve step 4: Configure workflows?")
    expect(page.locator("#status")).to_have_text("⚠ Needs approval")
    shot(page, "approval")
    page.get_by_label("Comment").fill("looks good")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#approval")).to_be_hidden()
    events = api.get(f"{base}/events").json()["events"]
    assert events[-1]["type"] == "Approved" and events[-1]["data"]["comment"] == "looks good"

    view = post(api, f"{base}/steps/4/complete", {"result": "CRM ready"})
    expect_matches(page, view)
    expect(page.locator("#status")).to_have_text("✓ Completed")
    expect(page.locator("#outcome")).to_have_text("✓ Completed: CRM ready")
    expect(page.locator("#eta")).to_have_text(re.compile(r"^Finished: .* · took \d+ s$"))
    shot(page, "completed")

    notes = [n["title"] for n in page.evaluate("window.__notes")]
    assert notes == [
        "Your Cellphone Store CRM task has started",
        "Step 1 complete: Create database tables",
        "Step 2 complete: Generate application UI",
        "❌ Task failed at Step 3",
        "Step 3 complete: Add search and filters",
        "⚠️ Approval required for Step 4",
        "Step 4 complete: Configure workflows",
        "✅ Your Cellphone Store CRM is ready!",
    ]

    # Restart makes a new task with the same plan and takes the page there.
    page.get_by_role("button", name="Restart").click()
    expect(page).not_to_have_url(re.compile(f"/tasks/{tid}$"))
    new_id = api.get(f"{base}/progress").json()["restarted_as"]
    assert new_id and page.url.endswith(f"/tasks/{new_id}")
    expect_matches(page, api.get(f"/api/tasks/{new_id}/progress").json())
    assert errors == []


def test_after_a_server_kill_the_page_reconnects_from_its_cursor_to_the_exact_state(
    context: BrowserContext, api: httpx.Client, server: PageServer
) -> None:
    tid = post(api, "/api/tasks", CRM)["task_id"]
    base = f"/api/tasks/{tid}"
    post(api, f"{base}/steps/1/start")
    sockets: list[str] = []
    page = context.new_page()
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"/tasks/{tid}")
    expect(page.locator("#conn")).to_have_text("Live")
    expect_matches(page, api.get(f"{base}/progress").json())

    server.kill()
    expect(page.locator("#conn")).to_have_text(re.compile("^Reconnecting…"))
    expect(page.locator("#box")).to_have_attribute("data-stale", "true")
    shot(page, "reconnecting")
    server.start()
    # Changes the page has not seen, some perhaps before it is back: it must replay them from its cursor.
    post(api, f"{base}/steps/1/complete")
    post(api, f"{base}/steps/2/start")
    post(api, f"{base}/steps/2/substeps/1/done")
    post(api, f"{base}/logs", {"level": "warning", "message": "slow disk while the page was away", "step": 2})
    post(api, f"{base}/pause")
    expect(page.locator("#conn")).to_have_text("Live", timeout=20_000)
    view = api.get(f"{base}/progress").json()
    expect_matches(page, view)
    expect(page.locator("#logs")).to_contain_text("slow disk while the page was away")
    assert re.search(r"\?after=\d+(\.\d+)?$", sockets[-1]), sockets
    shot(page, "recovered")

    # By keyboard: Enter on Resume, and the focus moves to Pause, the button that took its place.
    page.get_by_role("button", name="Resume").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("◐ Running")
    expect(page.get_by_role("button", name="Pause")).to_be_focused()

    # Skip a failed step (shown struck through), then cancel from the page (it asks once more).
    view = post(api, f"{base}/steps/2/fail", {"error": "template engine crashed"})
    expect(page.locator("#failure-msg")).to_have_text("template engine crashed")
    page.get_by_role("button", name="Skip step").click()
    expect(page.locator("#steps .step").nth(1)).to_have_attribute("data-state", "skipped")
    expect(page.locator("#steps .step").nth(1).locator(".step-name")).to_have_css(
        "text-decoration-line", "line-through"
    )
    post(api, f"{base}/steps/3/start")
    cancel = page.get_by_role("button", name="Cancel")
    cancel.click()
    page.get_by_role("button", name="Confirm cancel").click()
    expect(page.locator("#status")).to_have_text("⊘ Cancelled")
    view = api.get(f"{base}/progress").json()
    assert view["status"] == "cancelled"
    expect_matches(page, view)
    expect(page.get_by_role("button", name="Restart")).to_be_visible()
    shot(page, "cancelled")


def test_the_task_list_updates_live(context: BrowserContext, api: httpx.Client, browser: Browser) -> None:
    page, errors = open_page(context, "/")
    expect(page.locator("#tasks")).to_have_attribute("data-loaded", "true")
    tid = post(
        api,
        "/api/tasks",
        {"title": "Nightly data import", "steps": [{"name": "Download"}, {"name": "Load"}]},
    )["task_id"]
    row = page.locator(f'li[data-task="{tid}"]')
    expect(page.locator("#tasks > li").first).to_have_attribute("data-task", tid)  # newest first
    expect(row.locator(".task-title")).to_have_text("Nightly data import")
    expect(row.locator(".sym")).to_have_text("○")
    expect(row.locator(".task-eta")).to_have_text(re.compile(r"ETA: (.+|—)"))

    post(api, f"/api/tasks/{tid}/steps/1/start")
    post(api, f"/api/tasks/{tid}/steps/1/progress", {"percent": 50})
    expect(row.locator(".sym")).to_have_text("◐")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "25")
    expect(row.locator(".task-sub")).to_have_text("Step 1 of 2: Download")

    post(api, f"/api/tasks/{tid}/steps/1/complete")
    post(api, f"/api/tasks/{tid}/steps/2/approval", {"message": "Load into production?"})
    expect(row.locator(".sym")).to_have_text("⚠")
    expect(row.locator(".badge")).to_have_text("Needs approval")
    expect(page.locator("#summary")).to_contain_text("1 needs attention")
    shot(page, "list")
    for name, options in {
        "list-dark": {"color_scheme": "dark"},
        "list-phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2},
    }.items():
        other = browser.new_context(base_url=page.url, reduced_motion="reduce", **options)  # type: ignore[arg-type]
        other_page = other.new_page()
        other_page.goto("/")
        expect(other_page.locator(f'li[data-task="{tid}"] .sym')).to_have_text("⚠")
        shot(other_page, name)
        other.close()

    post(api, f"/api/tasks/{tid}/steps/2/approve")
    post(api, f"/api/tasks/{tid}/steps/2/complete")
    expect(row.locator(".sym")).to_have_text("✓")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".task-eta")).to_have_text(re.compile(r"ago$|^just now$"))
    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"/tasks/{tid}$"))
    expect(page.locator("#status")).to_have_text("✓ Completed")
    assert errors == []


def test_times_and_the_eta_read_like_the_spec(context: BrowserContext) -> None:
    """The page's own clock: an ETA (with its interval on hover) counts down from the view's updated_at."""
    page, errors = open_page(context, "/")
    got = page.evaluate(
        """async () => {
          const m = await import("/static/model.js");
          const now = Date.parse("2024-01-15T10:02:00Z");
          const view = { status: "running", updated_at: "2024-01-15T10:01:30.000Z",
                         eta_seconds: 210, eta_low_seconds: 150, eta_high_seconds: 330 };
          return {
            running: m.etaText(view, now),
            paused: m.etaText({ ...view, status: "paused" }, now).text,
            unknown: m.etaText({ ...view, eta_seconds: null }, now).text,
            overdue: m.etaText({ ...view, eta_seconds: 20 }, now).text,
            started: m.ago("2024-01-15T10:00:00.000Z", now),
            seconds: m.ago("2024-01-15T10:01:18.000Z", now),
            took: m.duration(75000),
            live: (() => {  // a progress message brings its own estimate, as of its `at`
              const v = { ...view, version: 7, progress: 40, steps: [] };
              m.apply(v, { type: "progress", seq: 8, part: 1, parts: 1, at: "2024-01-15T10:01:50.000Z",
                           percent: 45, eta_seconds: 100, eta_low_seconds: 80, eta_high_seconds: 160,
                           eta_confidence: "high" });
              return m.etaText(v, now).text;
            })(),
          };
        }"""
    )
    assert got == {
        "running": {"text": "3 min remaining", "hint": "Likely between 2 min and 5 min from now"},
        "paused": "4 min remaining (paused)",
        "unknown": "—",
        "overdue": "any moment now",
        "started": "2 min ago",
        "seconds": "42 s ago",
        "took": "1 min 15 s",
        "live": "2 min remaining",
    }
    assert errors == []


def test_the_badge_names_the_cause_and_the_eta_waits_with_an_approval(context: BrowserContext) -> None:
    page, errors = open_page(context, "/")
    got = page.evaluate(
        """async () => {
          const m = await import("/static/model.js");
          const now = Date.parse("2024-01-15T10:02:00Z");
          const base = { status: "running", needs_attention: true, updated_at: "2024-01-15T10:01:30.000Z",
                         read_at: Date.parse("2024-01-15T10:01:35Z"), eta_seconds: 40 };
          const approval = { ...base, steps: [{ order: 1, status: "approval" }] };
          const stalled = { ...base, stalled_step: 2, steps: [{ order: 1, status: "completed" },
                                                             { order: 2, status: "running" }] };
          return {
            approval: m.taskWord(approval),
            stalled: m.taskWord(stalled),
            other: m.taskWord({ ...stalled, stalled_step: null }),
            calm: m.taskWord({ ...stalled, needs_attention: false }),
            waiting: m.etaText(approval, now).text,
            counting: m.etaText(stalled, now).text,
          };
        }"""
    )
    assert got == {
        "approval": "Needs approval",
        "stalled": "Step 2 stalled",
        "other": "Needs attention",
        "calm": "Running",
        "waiting": "35 s remaining",  # as read at 10:01:35: the work clock stands while a person decides
        "counting": "10 s remaining",  # counted down from updated_at while a step runs
    }
    assert errors == []


def test_a_task_that_is_not_there_says_so(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/tasks/00000000-0000-4000-8000-000000000000")
    expect(page.locator("#title")).to_have_text("Task not found")
    expect(page.locator("#conn")).to_have_text("Not found")
    expect(page.get_by_role("link", name="← All tasks")).to_be_visible()
    expect(page.get_by_role("progressbar")).to_be_hidden()


def test_with_api_tokens_the_page_asks_for_one_and_keeps_it(browser: Browser, tmp_path: Path) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "create", "--role", "owner", "--owner", "alice"],
        env={**os.environ, "PROGRESSD_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    server = PageServer(tmp_path)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
            tid = post(api, "/api/tasks", CRM)["task_id"]
            post(api, f"/api/tasks/{tid}/steps/1/start")
        context = browser.new_context(base_url=server.url, reduced_motion="reduce")
        page = context.new_page()
        page.goto(f"/tasks/{tid}")
        dialog = page.get_by_role("dialog", name="Sign in")
        expect(dialog).to_be_visible()
        shot(page, "signin")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#conn")).to_have_text("Live")
        expect(page.locator("#current")).to_have_text("Step 1 of 4: Create database tables")
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#status")).to_have_text("⏸ Paused")
        page.goto("/")  # the token is remembered
        expect(page.locator(f'li[data-task="{tid}"] .badge')).to_have_text("Paused")
        expect(dialog).to_be_hidden()
        context.close()
    finally:
        server.stop()


# The push service (FCM, autopush…) is the one part not run here: a headless browser cannot reach one.
# subscribe() hands out the test's receiver as the endpoint, with a real P-256 key pair and auth secret
# made in the page (which keeps the private key for the test); everything else is the real thing.
PUSH_SERVICE_STUB = """
window.__push = null;
window.__unsubscribed = [];
PushManager.prototype.getSubscription = async function () { return window.__push?.subscription ?? null; };
PushManager.prototype.subscribe = async function (options) {
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const auth = crypto.getRandomValues(new Uint8Array(16));
  const b64 = (bytes) =>
    btoa(String.fromCharCode(...bytes)).replace(/[+]/g, "-").replace(/[/]/g, "_").replace(/=+$/, "");
  const keys = { p256dh: b64(raw), auth: b64(auth) };
  const json = { endpoint: "%(endpoint)s", expirationTime: null, keys };
  const applicationServerKey = new Uint8Array(options.applicationServerKey).buffer;
  const unsubscribe = async () => {
    window.__unsubscribed.push(json.endpoint);
    window.__push = null;
    return true;
  };
  const subscription = {
    endpoint: json.endpoint, options: { applicationServerKey }, toJSON: () => json, unsubscribe,
  };
  window.__push = {
    subscription,
    jwk: await crypto.subtle.exportKey("jwk", pair.privateKey),
    auth: b64(auth),
    serverKey: b64(new Uint8Array(options.applicationServerKey)),
    userVisibleOnly: options.userVisibleOnly,
  };
  return subscription;
};
"""


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_web_push_reaches_the_service_worker_and_shows_the_notice(browser: Browser, tmp_path: Path) -> None:
    """The page registers /sw.js, subscribes with the server's VAPID key and posts the subscription; the
    server encrypts real Web Push messages to it; delivered to the service worker (Chromium's DevTools
    push), they become the notifications, one per task and kind, with no page notice doubling them."""
    receiver = Receiver().start()
    server = PageServer(
        tmp_path,
        env={
            "PROGRESSD_PUSH_ALLOW_HTTP": "1",
            "PROGRESSD_NOTIFY_ALLOW_PRIVATE": "1",  # the push service is on loopback
            "PROGRESSD_NOTIFY_POLL": "0.05",
        },
    )
    server.start()
    context = browser.new_context(base_url=server.url, reduced_motion="reduce")
    try:
        sw = httpx.get(f"{server.url}/sw.js")
        assert sw.status_code == 200 and sw.headers["content-type"].startswith("text/javascript")
        assert "script-src 'self'" in sw.headers["content-security-policy"]
        with httpx.Client(base_url=server.url, timeout=15) as api:
            plan = {"title": "Release", "steps": [{"name": "Deploy", "requires_approval": True}]}
            tid = post(api, "/api/tasks", plan)["task_id"]
            endpoint = f"{receiver.url}/push/this-browser"
            context.grant_permissions(["notifications"], origin=server.url)
            context.add_init_script(PUSH_SERVICE_STUB % {"endpoint": endpoint})
            # Records the page's own notices (none are expected once push is on).
            context.add_init_script(
                "window.__pageNotes = []; const Real = window.Notification; window.Notification = class "
                "extends Real { constructor(t, o) { super(t, o); window.__pageNotes.push(t); } };"
            )
            page, errors = open_page(context, f"/tasks/{tid}")
            expect(page.locator("body")).to_have_attribute("data-push", "on")  # permission granted earlier
            expect(page.get_by_role("button", name="Enable notifications")).to_be_hidden()
            pushed = page.evaluate("window.__push")
            server_key = api.get("/api/push-subscriptions").json()
            assert pushed["serverKey"] == server_key["vapid_public_key"] and pushed["userVisibleOnly"] is True
            assert [s["endpoint"] for s in server_key["subscriptions"]] == [endpoint]

            cdp = context.new_cdp_session(page)
            registrations: list[dict[str, Any]] = []
            versions: list[dict[str, Any]] = []
            cdp.on(
                "ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"])
            )
            cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(e["versions"]))
            cdp.send("ServiceWorker.enable")
            scope = f"{server.url}/"
            wait_for_value(
                page, lambda: [r for r in registrations if r["scopeURL"] == scope], "the service worker"
            )
            registration = next(r for r in registrations if r["scopeURL"] == scope)["registrationId"]
            # DevTools hands a push only to a running worker (a real push service retries): start it first.
            cdp.send("ServiceWorker.startWorker", {"scopeURL": scope})

            def running() -> bool:
                mine = [v for v in versions if v["registrationId"] == registration]
                return (
                    bool(mine)
                    and mine[-1]["status"] == "activated"
                    and mine[-1]["runningStatus"] == "running"
                )

            wait_for_value(page, running, "the service worker running")

            key = ec.derive_private_key(int.from_bytes(_unb64(pushed["jwk"]["d"]), "big"), ec.SECP256R1())
            post(api, f"/api/tasks/{tid}/steps/1/start")  # approval needed: pushed by default
            post(api, f"/api/tasks/{tid}/steps/1/approve", {"comment": "go"})
            post(api, f"/api/tasks/{tid}/steps/1/complete", {"result": "v2 live"})  # task complete
            wait_for_value(page, lambda: len(receiver.on("/push/this-browser")) >= 2, "two pushes")
            listed = (
                "async () => (await (await navigator.serviceWorker.ready).getNotifications())"
                ".map(n => ({title: n.title, body: n.body, tag: n.tag, url: n.data.url}))"
            )
            payloads = {}
            for request in receiver.on("/push/this-browser"):
                assert request.headers["content-encoding"] == "aes128gcm"
                assert request.headers["authorization"].startswith("vapid t=")
                plain = http_ece.decrypt(request.body, private_key=key, auth_secret=_unb64(pushed["auth"]))
                data = json.loads(plain)
                payloads[data["kind"]] = data
                cdp.send(
                    "ServiceWorker.deliverPushMessage",
                    {"origin": server.url, "registrationId": registration, "data": plain.decode()},
                )
                count = len(payloads)
                wait_for_value(page, lambda n=count: len(page.evaluate(listed)) >= n, f"notification {count}")
            assert sorted(payloads) == ["approval_needed", "task_complete"]
            assert payloads["approval_needed"]["title"].startswith("⚠️ Approval required for Step 1")

            last: list[Any] = []

            def two_shown() -> list[dict[str, Any]] | None:
                found: list[dict[str, Any]] = page.evaluate(listed)
                last[:] = [found]
                return found if len(found) == 2 else None

            try:
                shown = wait_for_value(page, two_shown, "two notifications from the service worker")
            except AssertionError as exc:
                state = page.evaluate(
                    "async () => ({permission: Notification.permission, "
                    "active: (await navigator.serviceWorker.ready).active?.state})"
                )
                detail = f"shown {last}, page {state}, registration {registration}"
                raise AssertionError(f"{exc}: {detail}") from None
            by_tag = {n["tag"]: n for n in shown}
            assert set(by_tag) == {f"{tid}:approval_needed", f"{tid}:task_complete"}
            for kind, data in payloads.items():
                assert (by_tag[f"{tid}:{kind}"]["title"], by_tag[f"{tid}:{kind}"]["body"]) == (
                    data["title"],
                    data["body"],
                )
            assert all(n["url"] == f"{server.url}/tasks/{tid}" for n in shown)
            assert page.evaluate("window.__pageNotes") == []  # the page left the notices to push
            assert errors == []
    finally:
        context.close()
        server.stop()
        receiver.stop()


# A subscription this browser made earlier for another server key (the server's data was reset, say).
STALE_SUBSCRIPTION = """
const staleJson = { endpoint: "%(endpoint)s", expirationTime: null, keys: { p256dh: "x", auth: "y" } };
window.__push = {
  subscription: {
    endpoint: staleJson.endpoint,
    options: { applicationServerKey: new Uint8Array(65).fill(4).buffer },
    toJSON: () => staleJson,
    unsubscribe: async () => {
      window.__unsubscribed.push(staleJson.endpoint);
      window.__push = null;
      return true;
    },
  },
};
"""


def test_a_subscription_made_for_another_server_key_is_renewed(browser: Browser, tmp_path: Path) -> None:
    """Push services refuse what a server signs for a subscription made with another key: the page drops
    such a subscription and subscribes again with the server's key, and only the new one reaches the
    server."""
    server = PageServer(
        tmp_path, env={"PROGRESSD_PUSH_ALLOW_HTTP": "1", "PROGRESSD_NOTIFY_ALLOW_PRIVATE": "1"}
    )
    server.start()
    context = browser.new_context(base_url=server.url, reduced_motion="reduce")
    try:
        with httpx.Client(base_url=server.url, timeout=15) as api:
            tid = post(api, "/api/tasks", CRM)["task_id"]
            context.grant_permissions(["notifications"], origin=server.url)
            context.add_init_script(PUSH_SERVICE_STUB % {"endpoint": "http://127.0.0.1:9/push/fresh"})
            context.add_init_script(STALE_SUBSCRIPTION % {"endpoint": "http://127.0.0.1:9/push/stale"})
            page, errors = open_page(context, f"/tasks/{tid}")
            expect(page.locator("body")).to_have_attribute("data-push", "on")
            assert page.evaluate("window.__unsubscribed") == ["http://127.0.0.1:9/push/stale"]
            served = api.get("/api/push-subscriptions").json()
            assert page.evaluate("window.__push.serverKey") == served["vapid_public_key"]
            assert [s["endpoint"] for s in served["subscriptions"]] == ["http://127.0.0.1:9/push/fresh"]

            again = "import('/static/ui.js').then((ui) => ui.enablePush())"  # the same module instance
            assert page.evaluate(again) is True  # the key matches now: kept, and sent again
            assert page.evaluate("window.__unsubscribed") == ["http://127.0.0.1:9/push/stale"]
            assert len(api.get("/api/push-subscriptions").json()["subscriptions"]) == 1
            assert errors == []
    finally:
        context.close()
        server.stop()


def wait_for_value(page: Page, probe: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll until `probe` returns something truthy, letting Playwright dispatch events meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")
