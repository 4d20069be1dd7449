"""The whole flow through the real API, worker, Docker engine and nginx."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from tests.support.flows import create_app, deploy, platform_containers
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]


def test_create_deploy_route_logs_stop_start_restart_redeploy_remove(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app = create_app(api, app_name, HELLO_V1)
    app_id = app["id"]
    assert app["status"] == "created"
    assert app["path"] == f"/apps/{app_id}/"

    first = deploy(api, app_id)
    assert first["status"] == "succeeded", first["error"]
    assert first["image"] == HELLO_V1 and first["container_id"]
    assert first["finished_at"] and first["duration_seconds"] is not None
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"

    page = router.get(f"/apps/{app_id}/index.html")
    assert (page.status_code, page.text) == (200, "hello from v1\n")
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"
    # without the trailing slash the router redirects to the app's root
    assert router.get(f"/apps/{app_id}").status_code == 308

    logs = api.get(f"/apps/{app_id}/logs", params={"tail": 50}).json()["logs"]
    assert "response:200" in logs  # busybox httpd -v logs each request it served
    stamped = api.get(f"/apps/{app_id}/logs", params={"timestamps": "true"}).json()["logs"]
    assert stamped.split(" ", 1)[0].startswith("20")  # RFC 3339 time first

    stopped = api.post(f"/apps/{app_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["app"]["status"] == "stopped"
    unavailable = router.get(f"/apps/{app_id}/")
    assert unavailable.status_code == 503
    assert "not running" in unavailable.text
    assert api.post(f"/apps/{app_id}/stop").status_code == 409

    started = api.post(f"/apps/{app_id}/start")
    assert started.status_code == 200, started.text
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"

    restarted = api.post(f"/apps/{app_id}/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["app"]["status"] == "running"
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"

    assert api.patch(f"/apps/{app_id}", json={"image": HELLO_V2}).status_code == 200
    # the change waits for the next deploy
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"
    second = deploy(api, app_id)
    assert second["status"] == "succeeded", second["error"]
    assert router.get(f"/apps/{app_id}/").text == "hello from v2\n"
    # the old container is gone, only the new one is left
    assert platform_containers(stack.settings.instance_name, app_id) == [second["container_id"]]

    removed = api.post(f"/apps/{app_id}/remove")
    assert removed.status_code == 200, removed.text
    assert removed.json()["app"]["container_name"] is None
    assert router.get(f"/apps/{app_id}/").status_code == 404
    assert platform_containers(stack.settings.instance_name, app_id) == []
    assert api.post(f"/apps/{app_id}/start").status_code == 409

    history = api.get(f"/apps/{app_id}/deployments")
    assert history.headers["x-total-count"] == "2"
    assert [(d["id"], d["status"], d["image"]) for d in history.json()] == [
        (second["id"], "succeeded", HELLO_V2),
        (first["id"], "succeeded", HELLO_V1),
    ]


def test_delete_removes_container_route_and_history(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    assert router.get(f"/apps/{app_id}/").status_code == 200

    assert api.delete(f"/apps/{app_id}").status_code == 204
    assert api.get(f"/apps/{app_id}").status_code == 404
    assert api.get(f"/apps/{app_id}/deployments").status_code == 404
    assert router.get(f"/apps/{app_id}/").status_code == 404
    assert platform_containers(stack.settings.instance_name, app_id) == []
    # the name is free again
    assert (
        api.post(
            "/apps", json={"name": app_name, "image": HELLO_V1, "internal_port": 80}
        ).status_code
        == 201
    )


def test_stopped_app_does_not_affect_others(
    api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    first = create_app(api, app_name, HELLO_V1)["id"]
    second = create_app(api, f"{app_name}-b", HELLO_V2)["id"]
    assert deploy(api, first)["status"] == "succeeded"
    assert deploy(api, second)["status"] == "succeeded"
    assert api.post(f"/apps/{first}/stop").status_code == 200
    assert router.get(f"/apps/{first}/").status_code == 503
    assert router.get(f"/apps/{second}/").text == "hello from v2\n"


def test_forwarded_headers_and_prefix_reach_the_app(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    # busybox httpd runs CGI scripts: one that echoes the headers it got
    app_id = create_app(
        api,
        app_name,
        HELLO_V1,
        command=[
            "/bin/sh",
            "-c",
            "mkdir -p /tmp/www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\n"
            "echo\\nenv\\n' > /tmp/www/cgi-bin/env && chmod +x /tmp/www/cgi-bin/env "
            "&& exec httpd -f -v -p 80 -h /tmp/www",
        ],
    )["id"]
    app = api.get(f"/apps/{app_id}").json()
    assert deploy(api, app_id)["status"] == "succeeded"
    # by path, on the router's own address
    response = router.get(f"/apps/{app_id}/cgi-bin/env")
    assert response.status_code == 200, response.text
    assert f"HTTP_X_FORWARDED_PREFIX=/apps/{app_id}" in response.text
    assert "HTTP_X_FORWARDED_FOR=127.0.0.1" in response.text
    assert "HTTP_X_FORWARDED_PROTO=http" in response.text
    assert f"HTTP_X_FORWARDED_HOST=127.0.0.1:{stack.settings.router_port}" in response.text
    # the prefix is stripped before the request reaches the app
    assert "REQUEST_URI=/cgi-bin/env" in response.text
    # by host, on the app's own origin: no prefix, whatever a client claims
    host = f"{app['name']}.{stack.settings.apps_domain}"
    by_host = router.get(
        "/cgi-bin/env", headers={"Host": host.upper(), "X-Forwarded-Prefix": "/evil"}
    )
    assert by_host.status_code == 200, by_host.text
    assert "HTTP_X_FORWARDED_PREFIX" not in by_host.text
    assert f"HTTP_X_FORWARDED_HOST={host.upper()}" in by_host.text
    assert "REQUEST_URI=/cgi-bin/env" in by_host.text
    # a platform token sent to the router never reaches the app; other credentials do
    for path, headers in ((f"/apps/{app_id}/cgi-bin/env", {}), ("/cgi-bin/env", {"Host": host})):
        leaked = router.get(path, headers={**headers, "Authorization": "Bearer mp_x"})
        assert leaked.status_code == 200 and "HTTP_AUTHORIZATION" not in leaked.text
        own = router.get(path, headers={**headers, "Authorization": "Bearer app-own"})
        assert "HTTP_AUTHORIZATION=Bearer app-own" in own.text


def test_logs_follow_streams_new_lines_until_the_client_leaves(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    seen: list[str] = []
    with api.stream(
        "GET", f"/apps/{app_id}/logs", params={"follow": "true", "tail": 1}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/plain")
        lines = stream.iter_lines()
        seen.append(next(lines))  # the tail comes first
        # a request made now shows up in the stream
        router.get(f"/apps/{app_id}/index.html")

        def served_line_arrived() -> bool:
            seen.append(next(lines))  # blocks until the stream has a line: no sleep needed
            assert "response:200" in seen[-1], seen
            return True

        eventually(
            served_line_arrived,
            timeout=15,
            interval=0,
            retry_on=(AssertionError,),
            message="the request did not show up in the followed logs",
        )
    assert len(seen) >= 2 and "response:200" in seen[-1], seen
    # the API is fine after the client went away
    assert api.get(f"/apps/{app_id}").status_code == 200


def test_an_app_being_deleted_answers_404_never_502(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """The app is stopped (503 page) before its containers go: requests meanwhile get the
    stopped page, then 404, never a 502 from a container removed while still routed to."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def get_until_stopped() -> None:
        with httpx.Client(base_url=stack.router_url, timeout=10) as client:
            while not stop.is_set():
                statuses[client.get("/", headers=host).status_code] += 1

    clients = [threading.Thread(target=get_until_stopped) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        eventually(lambda: statuses[200] > 20, timeout=10, message="no request was served")
        assert api.delete(f"/apps/{app_id}").status_code == 204
        eventually(lambda: statuses[404] > 20, timeout=10, message="the route outlived the app")
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=10)
    assert set(statuses) <= {200, 503, 404}, statuses
