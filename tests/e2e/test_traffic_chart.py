"""The dashboard's traffic chart in a real headless Chromium, after real requests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from minipaas.router.traffic import FLUSH_SECONDS
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_app_page_draws_requests_per_minute_and_the_hours_figures(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    for path in ["/"] * 12 + ["/missing"] * 3:
        router.get(f"/apps/{app_id}{path}")
    time.sleep(FLUSH_SECONDS * 4)  # nginx workers add their counts to the shared dict

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{stack.router_url}/api/ui")
        page.fill("#token", stack.env["ADMIN_TOKEN"])
        page.click("#login-form button")
        page.locator(f"tr[data-app='{app_name}'] button").click()
        expect(page.locator("#traffic-summary")).to_contain_text("15 requests")
        expect(page.locator("#traffic-summary")).to_contain_text("5xx 0.0%")
        # one group per minute of the window; the busy minute has a bar taller than nothing
        assert page.locator("#traffic-chart g").count() >= 61
        page.locator("#traffic-chart").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "traffic-chart.png"))
        browser.close()
