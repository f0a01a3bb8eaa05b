"""The web dashboard in headless Chromium (Debian `chromium` driven by Playwright).

Starts the real `zonegate control` process on examples/two-zones.yaml, opens the
dashboard, sets the operator token, checks the two zones and the split bar, cuts
api.example.test over to yanqing through the confirmation dialog, sees the bar
change, and saves a screenshot (copied to docs/dashboard.png when
ZONEGATE_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers.processes import start_process
from zonegate.control.api import hash_token

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
TOPO = ROOT / "examples" / "two-zones.yaml"
READY = r"zonegate control ready: (?P<url>http://\S+) version (?P<version>\d+)"
CHROMIUM = "/usr/bin/chromium"
API = "api.example.test"
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


def _chromium() -> str:
    """The Debian chromium binary; installed with apt-get when missing."""
    if not os.path.exists(CHROMIUM):
        if shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} is missing and apt-get is not available to install it")
        try:
            done = subprocess.run(
                ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=120", "chromium"],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{CHROMIUM} is missing and `apt-get install -y chromium` failed: {exc}")
        if done.returncode != 0 or not os.path.exists(CHROMIUM):
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            pytest.skip(
                f"{CHROMIUM} is missing and `apt-get install -y chromium` exited "
                f"{done.returncode}: {' | '.join(tail)}"
            )
    return CHROMIUM


def _width(testid: str) -> str:
    """A JS expression: the rendered width of the element with this data-testid."""
    return f"document.querySelector('[data-testid=\"{testid}\"]').getBoundingClientRect().width"


def test_dashboard_cutover_in_chromium(tmp_path: Path) -> None:
    playwright_sync = pytest.importorskip(
        "playwright.sync_api", reason="the test extra's playwright package is not installed"
    )
    chromium = _chromium()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: alice, role: operator, sha256: {hash_token('op-secret')}}}\n"
        f"  - {{name: viewer, role: read, sha256: {hash_token('r-secret')}}}\n"
    )
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(TOPO),
        "--store", f"sqlite://{tmp_path / 'control.db'}", "--listen", "127.0.0.1:0",
        "--tokens", str(tokens),
    ]  # fmt: skip
    started = time.monotonic()
    proc = start_process(argv, READY, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    try:
        assert proc.match is not None
        url = proc.match["url"]
        # the API is unchanged next to the dashboard
        assert httpx.get(f"{url}/healthz").json()["version"] == 1
        assert httpx.get(f"{url}/v1/state").status_code == 401
        assert "text/html" in httpx.get(f"{url}/").headers["content-type"]

        with playwright_sync.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(10_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{url}/")
                # reads need a token here: the page says so until one is set
                message = page.get_by_test_id("message")
                message.wait_for(state="visible")
                assert "401" in message.inner_text()

                page.get_by_test_id("token-input").fill("op-secret")
                page.get_by_test_id("token-save").click()
                page.get_by_test_id("zone-changping").wait_for()
                page.get_by_test_id("zone-yanqing").wait_for()
                assert page.get_by_test_id("version").inner_text() == "1"
                assert page.get_by_test_id("zone-state-changping").inner_text() == "enabled"
                # The control plane polls each zone's LB admin endpoint; none runs here.
                page.wait_for_function(
                    "document.querySelector('[data-testid=\"zone-health-yanqing\"]')"
                    ".textContent.includes('LB unreachable')"
                )
                health = page.get_by_test_id("backend-health-web-cp-cp-1").inner_text()
                assert health == "not reported"
                assert page.get_by_test_id("backend-web-cp-cp-1").is_visible()
                assert page.get_by_test_id("history-1").is_visible()

                cp = page.get_by_test_id(f"seg-{API}-changping")
                yq = page.get_by_test_id(f"seg-{API}-yanqing")
                bar = page.get_by_test_id(f"split-{API}").bounding_box()
                assert bar is not None
                assert cp.get_attribute("data-share") == "0.5000"
                cp_box = cp.bounding_box()
                assert cp_box is not None
                assert abs(cp_box["width"] - bar["width"] / 2) < 3

                page.get_by_test_id(f"cutover-{API}-yanqing").click()
                dialog = page.get_by_test_id("confirm-dialog")
                dialog.wait_for(state="visible")
                assert page.get_by_test_id(f"after-{API}-changping").inner_text() == "0.0%"
                assert page.get_by_test_id(f"after-{API}-yanqing").inner_text() == "100.0%"
                assert "range widths" in page.get_by_test_id("shares-basis").inner_text()
                assert (
                    "changping [0,50) -> [0,0)" in page.get_by_test_id("confirm-diff").inner_text()
                )
                # dry run only: nothing written yet
                assert page.get_by_test_id("version").inner_text() == "1"
                page.screenshot(path=str(tmp_path / "dialog.png"))
                # no reason: the dialog stays open
                page.get_by_test_id("confirm-ok").click()
                assert dialog.is_visible()
                page.get_by_test_id("confirm-reason").fill("changping power work")
                page.get_by_test_id("confirm-ok").click()
                dialog.wait_for(state="hidden")

                page.wait_for_function(
                    "() => document.querySelector('[data-testid=version]').textContent === '2'"
                )
                page.wait_for_function(f"() => {_width(f'seg-{API}-changping')} < 0.5")
                assert cp.get_attribute("data-share") == "0.0000"
                assert yq.get_attribute("data-share") == "1.0000"
                # the yanqing segment fills the whole bar (once the transition ends)
                page.wait_for_function(
                    f"() => {_width(f'seg-{API}-yanqing')} >= {_width(f'split-{API}')} - 3"
                )
                entry = page.get_by_test_id("history-2")
                entry.wait_for()
                assert "changping power work" in entry.inner_text()
                assert "alice" in entry.inner_text()
                assert page.get_by_test_id("rollback-1").is_visible()
                assert errors == []

                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                if os.environ.get("ZONEGATE_UPDATE_SCREENSHOTS") == "1":
                    shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
            finally:
                browser.close()

        # the write went through the API with the operator's name and reason
        history = httpx.get(
            f"{url}/v1/history?since=1", headers={"Authorization": "Bearer r-secret"}
        ).json()
        assert [(e["version"], e["who"], e["why"]) for e in history] == [
            (2, "alice", "changping power work")
        ]
    finally:
        # A long-poll the page left open holds the graceful shutdown until uvicorn's
        # timeout_graceful_shutdown (5 s) cancels it: wait past that.
        assert proc.stop(timeout=10) == 0, proc.describe()
    assert time.monotonic() - started < 60


def test_dashboard_draws_the_state_before_the_history(tmp_path: Path) -> None:
    """Issue 12 item 19: with the history request held back, the page already shows
    the version, "live", the zones and the split maps, and follows a new version;
    the history fills in once its request completes."""
    playwright_sync = pytest.importorskip(
        "playwright.sync_api", reason="the test extra's playwright package is not installed"
    )
    chromium = _chromium()
    tokens = tmp_path / "tokens.yaml"  # no read token: reads are anonymous
    tokens.write_text(f"tokens:\n  - {{name: alice, role: operator, sha256: {hash_token('op')}}}\n")
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(TOPO),
        "--store", "memory://", "--listen", "127.0.0.1:0", "--tokens", str(tokens),
    ]  # fmt: skip
    proc = start_process(argv, READY, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    try:
        assert proc.match is not None
        url = proc.match["url"]
        with playwright_sync.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(10_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                held: list[Any] = []  # history requests, answered only once released
                released = threading.Event()

                def hold(route: Any) -> None:
                    if released.is_set():
                        route.continue_()
                    else:
                        held.append(route)

                page.route("**/v1/history?*", hold)
                page.goto(f"{url}/")

                page.wait_for_function(
                    "() => document.querySelector('[data-testid=version]').textContent === '1'"
                )
                assert page.get_by_test_id("live").inner_text() == "live"
                assert page.get_by_test_id("zone-state-changping").inner_text() == "enabled"
                seg = page.get_by_test_id(f"seg-{API}-changping")
                assert seg.get_attribute("data-share") == "0.5000"
                assert page.get_by_test_id("backend-web-cp-cp-1").is_visible()
                assert page.get_by_test_id("history-loading").is_visible()
                assert held, "the page did not ask for the history"
                page.screenshot(path=str(tmp_path / "before-history.png"), full_page=True)

                # a new version is drawn at once too, the history still held
                r = httpx.post(
                    f"{url}/v1/cutover/{API}",
                    json={"to": "yanqing"},
                    headers={"Authorization": "Bearer op", "X-Reason": "drill"},
                )
                assert r.status_code == 200, r.text
                page.wait_for_function(
                    "() => document.querySelector('[data-testid=version]').textContent === '2'"
                )
                page.wait_for_function(
                    f"() => document.querySelector('[data-testid=\"seg-{API}-changping\"]')"
                    ".dataset.share === '0.0000'"
                )
                assert page.get_by_test_id("history-loading").is_visible()
                assert page.locator("[data-testid^=history-]").count() == 1

                released.set()
                for route in held:
                    route.continue_()
                page.get_by_test_id("history-2").wait_for()
                page.get_by_test_id("history-1").wait_for()
                assert page.get_by_test_id("history-loading").count() == 0
                # each version once, newest first, however many passes the loads took
                versions = page.locator("[data-testid^=history-]").evaluate_all(
                    "nodes => nodes.map(n => n.dataset.testid)"
                )
                assert versions == ["history-2", "history-1"]
                assert page.get_by_test_id("rollback-1").is_visible()
                assert errors == []
            finally:
                browser.close()
    finally:
        assert proc.stop(timeout=10) == 0, proc.describe()
