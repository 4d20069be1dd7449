"""Every app on its own origin: in a real headless Chromium, a member's app page can neither
read the dashboard's token nor put a service worker in front of the dashboard.

The attack: the dashboard keeps its token in sessionStorage (per origin and per tab), and a
service worker controls every page under its scope on its origin. On one shared origin (the
old layout: /api/ui and /apps/<id>/ both on the router's address) an app page opened in the
same tab reads the token, and an app that answers its worker script with
`Service-Worker-Allowed: /` can register a worker scoped to `/`, dashboard included.

The probe app below tries both and writes what it got into its page. The controls show the
probe is not blind: the same code reads the token on the dashboard's origin, and the same
registration succeeds where the header does reach the browser (the container's own port).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from minipaas.runtime import get_runtime
from minipaas.runtime.base import RuntimeFailure
from minipaas.runtime.busybox_image import build_busybox_image
from tests.support.flows import create_app, deploy
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium")
PROBE_IMAGE = "minipaas-test/origin-probe:v1"
TOKEN_KEY = "minipaas-token"  # what src/minipaas/api/static/ui.html keeps in sessionStorage

# Both run in the app's page; the tests also run them on other origins through page.evaluate
READ_TOKEN_JS = """() => {
  const read = (name) => {
    try { return window[name].getItem("@KEY@"); } catch (error) { return "error: " + error; }
  };
  const keys = [];
  for (const name of ["sessionStorage", "localStorage"]) {
    try {
      for (let i = 0; i < window[name].length; i++) keys.push(name + ":" + window[name].key(i));
    } catch (error) { keys.push(name + ": " + error); }
  }
  return {session: read("sessionStorage"), local: read("localStorage"), keys};
}""".replace("@KEY@", TOKEN_KEY)
REGISTER_WORKER_JS = """async (script) => {
  if (!window.isSecureContext || !("serviceWorker" in navigator)) {
    return "no service worker API here (not a secure context)";
  }
  try {
    const registration = await navigator.serviceWorker.register(script, {scope: "/"});
    return "registered " + registration.scope;
  } catch (error) {
    return "refused " + error.name + ": " + error.message;
  }
}"""
REGISTRATIONS_JS = """async () => {
  const registrations = await navigator.serviceWorker.getRegistrations();
  return registrations.map((registration) => registration.scope);
}"""

PROBE_PAGE = f"""<!doctype html>
<meta charset="utf-8"><title>origin probe</title>
<pre id="token">pending</pre>
<pre id="worker">pending</pre>
<script>
document.getElementById("token").textContent = JSON.stringify(({READ_TOKEN_JS})());
// relative: /cgi-bin/sw on the app's host, /apps/<id>/cgi-bin/sw on its path route
({REGISTER_WORKER_JS})("cgi-bin/sw").then((outcome) => {{
  document.getElementById("worker").textContent = outcome;
}});
</script>
"""
# busybox httpd passes a CGI's headers on as they are: this one allows any scope
WORKER_CGI = """#!/bin/sh
printf 'Content-Type: text/javascript\\r\\nService-Worker-Allowed: /\\r\\n\\r\\n'
echo 'self.addEventListener("fetch", function () {});'
"""
PROBE_CMD = [
    "/bin/sh",
    "-c",
    "chmod 755 /www/cgi-bin/sw && exec httpd -f -v -p 80 -h /www",
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def probe_image(stack: Stack) -> str:
    files = {"index.html": PROBE_PAGE, "cgi-bin/sw": WORKER_CGI}
    for attempt in range(3):
        try:
            build_busybox_image(get_runtime(), PROBE_IMAGE, PROBE_CMD, files)
            break
        except RuntimeFailure:
            # Another run on this engine pruning dangling builds can remove a layer mid-build
            if attempt == 2:
                raise
    return PROBE_IMAGE


@pytest.fixture
def probe_app(
    stack: Stack, api: httpx.Client, probe_image: str, app_name: str
) -> Iterator[dict[str, Any]]:
    """The probe, deployed by a member (not the admin who signs in to the dashboard)."""
    member = new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60) as as_member:
        app = create_app(as_member, app_name, probe_image)
        assert deploy(as_member, app["id"])["status"] == "succeeded"
        yield dict(as_member.get(f"/apps/{app['id']}").json())


def test_router_strips_service_worker_allowed(
    stack: Stack, router: httpx.Client, probe_app: dict[str, Any]
) -> None:
    direct = httpx.get(f"http://127.0.0.1:{probe_app['published_port']}/cgi-bin/sw", timeout=10)
    assert direct.status_code == 200, direct.text
    assert direct.headers.get("service-worker-allowed") == "/"  # the app does send it
    host = f"{probe_app['name']}.{stack.settings.apps_domain}"
    for path, headers in (
        ("/cgi-bin/sw", {"Host": host}),
        (f"/apps/{probe_app['id']}/cgi-bin/sw", {}),
    ):
        routed = router.get(path, headers=headers)
        assert routed.status_code == 200, (path, routed.text)
        assert "addEventListener" in routed.text  # the script itself does get through
        assert "service-worker-allowed" not in routed.headers, (path, dict(routed.headers))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_app_page_cannot_read_the_token_or_take_over_the_dashboard(
    stack: Stack, probe_app: dict[str, Any]
) -> None:
    from playwright.sync_api import Page, expect, sync_playwright

    port = stack.settings.router_port
    dashboard = f"http://{stack.settings.platform_host}:{port}/api/ui"
    by_host = f"http://{probe_app['name']}.{stack.settings.apps_domain}:{port}/"
    by_path = f"http://127.0.0.1:{port}/apps/{probe_app['id']}/"
    direct = f"http://127.0.0.1:{probe_app['published_port']}/"
    admin_token = stack.env["ADMIN_TOKEN"]

    def probe(page: Page, url: str) -> tuple[dict[str, Any], str]:
        """Opens the app page in this tab; what it read, and what its registration did."""
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        assert page.title() == "origin probe", url
        expect(page.locator("#worker")).not_to_have_text("pending", timeout=10_000)
        found = json.loads(page.locator("#token").inner_text())
        return found, page.locator("#worker").inner_text()

    def signed_in(page: Page) -> None:
        expect(page.locator("#who")).to_contain_text("admin")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(dashboard)
            page.fill("#token", admin_token)
            page.click("#login-form button")
            signed_in(page)
            # Control: on the dashboard's origin the probe's code does find the token
            on_dashboard = page.evaluate(READ_TOKEN_JS)
            assert on_dashboard["session"] == admin_token, on_dashboard

            # The member's app, in the same tab: by its host, then by its path route
            for url in (by_host, by_path):
                found, worker = probe(page, url)
                assert found == {"session": None, "local": None, "keys": []}, (url, found)
                # The API was there (a secure context): the browser refused the scope because
                # the router dropped Service-Worker-Allowed, so the max scope is /.../cgi-bin/
                assert worker.startswith("refused SecurityError"), (url, worker)
                assert "scope" in worker, (url, worker)
                assert page.evaluate(REGISTRATIONS_JS) == [], url

            # The dashboard cannot even be loaded on the path routes' origin (127.0.0.1):
            # the router sends it to the platform's own host
            for path in ("/api/ui", "/api/docs"):
                page.goto(f"http://127.0.0.1:{port}{path}")
                assert page.url == f"http://{stack.settings.platform_host}:{port}{path}"

            # Back on the dashboard: still signed in (the token was in this tab all along),
            # and no service worker controls it
            page.goto(dashboard)
            signed_in(page)
            assert page.evaluate(READ_TOKEN_JS)["session"] == admin_token
            assert page.evaluate(REGISTRATIONS_JS) == []
            assert page.evaluate("() => navigator.serviceWorker.controller") is None

            # Control, the old shared origin: a token kept by a page on 127.0.0.1:<router
            # port> (where /api/ui used to be) is read by the app's page on its path route
            page.goto(f"http://127.0.0.1:{port}/api/health")
            page.evaluate(
                "([key, token]) => sessionStorage.setItem(key, token)", [TOKEN_KEY, admin_token]
            )
            found, _ = probe(page, by_path)
            assert found["session"] == admin_token, found
            page.evaluate("() => sessionStorage.clear()")

            # Control: where the header reaches the browser (the container's own port, no
            # router), the same page registers a worker for the whole origin, and
            # getRegistrations() sees it
            _, worker = probe(page, direct)
            assert worker == f"registered {direct}", worker
            assert page.evaluate(REGISTRATIONS_JS) == [direct]
        finally:
            browser.close()
