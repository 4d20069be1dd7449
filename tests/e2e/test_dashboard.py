"""The dashboard in a real headless Chromium: sign in, create, deploy, watch, read logs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.images import HELLO_V1
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_dashboard_sign_in_create_deploy_and_logs(stack: Stack, app_name: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # through the router, as a person would open it
        page.goto(f"{stack.router_url}/api/ui")
        page.fill("#token", "mp_wrong")
        page.click("#login-form button")
        expect(page.locator("#login-error")).to_contain_text("invalid")
        page.fill("#token", stack.env["ADMIN_TOKEN"])
        page.click("#login-form button")
        expect(page.locator("#who")).to_contain_text("admin")
        page.screenshot(path=str(SCREENSHOTS / "1-signed-in.png"))

        page.fill("#new-name", app_name)
        page.fill("#new-image", HELLO_V1)
        page.click("#create-form button")
        row = page.locator(f"tr[data-app='{app_name}']")
        expect(row).to_contain_text("created")
        row.locator("button").click()

        page.click("button[data-action='deploy']")
        expect(page.locator("#app-status")).to_have_text("running", timeout=30_000)
        expect(page.locator("#deployments")).to_contain_text("succeeded")
        expect(page.locator("#releases")).to_contain_text("sha256:")
        page.screenshot(path=str(SCREENSHOTS / "2-deployed.png"))

        # the app's own origin opens in a tab of its own; its domains are managed here
        own_url = page.locator("#app-url a")
        expect(own_url).to_have_attribute("href", re.compile(rf"^http://{app_name}\."))
        expect(own_url).to_have_attribute("target", "_blank")
        expect(own_url).to_have_attribute("rel", "noopener")
        hostname = f"www.{app_name}.example.test"
        page.fill("#new-domain", hostname)
        page.click("#domain-form button")
        domain = page.locator(f"tr[data-domain='{hostname}']")
        expect(domain.locator("a")).to_have_attribute("target", "_blank")
        # its certificate's status (ACME is on in the test stack; no CA answers here)
        expect(domain).to_contain_text(re.compile("pending|failed"))
        page.fill("#new-domain", f"{app_name}.{stack.settings.apps_domain}")
        page.click("#domain-form button")
        expect(page.locator("#domain-error")).to_contain_text("already app")
        page.screenshot(path=str(SCREENSHOTS / "2b-domains.png"))
        domain.locator("button").click()
        expect(domain).to_have_count(0)

        # the app answers through the router, and the live logs show the request
        app_path = page.locator("#app-meta").inner_text().split("route ")[1].split(" ")[0]
        page.request.get(f"{stack.router_url}{app_path}")
        with page.expect_response(lambda r: r.url.endswith("/restart")):
            page.click("button[data-action='restart']")
        expect(page.locator("#app-status")).to_have_text("running")
        page.request.get(f"{stack.router_url}{app_path}")
        expect(page.locator("#logs")).to_contain_text("response:200", timeout=15_000)
        page.screenshot(path=str(SCREENSHOTS / "3-logs.png"))

        with page.expect_response(lambda r: r.url.endswith("/stop")):
            page.click("button[data-action='stop']")
        expect(page.locator("#app-status")).to_have_text("stopped")
        page.click("button[data-action='stop']")
        expect(page.locator("#action-error")).to_contain_text("not running")
        page.screenshot(path=str(SCREENSHOTS / "4-stopped.png"))
        browser.close()
