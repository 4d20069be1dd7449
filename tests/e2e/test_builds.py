"""Builds from source on the real engine: upload, build, deploy, serve; failures, limits,
cancel, unsafe contexts, the upload cap, the cache, and rollback to an earlier build."""

from __future__ import annotations

import gzip
import io
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import docker
import httpx
import pytest

from minipaas.host.platform import service
from minipaas.runtime import get_runtime
from minipaas.runtime.builder import build_networks
from minipaas.services.builds import naming
from tests.support.builds import (
    build_log,
    scratch_context,
    start_build,
    tar_bytes,
    wait_for_build,
)
from tests.support.engine import containers_whose_command_holds
from tests.support.flows import create_app, wait_for_deployment
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_BASE = "minipaas-base:bookworm"
SCREENSHOTS = ROOT / "test-artifacts" / "dashboard"


def _build_and_deploy(api: httpx.Client, app_id: int, body: bytes) -> tuple[dict, dict, float]:
    began = time.monotonic()
    answer = start_build(api, app_id, body)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"].endswith(f"/builds/{answer.json()['number']}")
    build = wait_for_build(api, app_id, answer.json()["number"])
    assert build["status"] == "succeeded", build["error"]
    assert build["deployment_id"], build["error"]
    deployment = wait_for_deployment(api, app_id, build["deployment_id"])
    assert deployment["status"] == "succeeded", deployment["error"]
    return build, deployment, time.monotonic() - began


def test_a_scratch_build_is_deployed_served_cached_and_rolled_back(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    first, deployment, seconds = _build_and_deploy(
        api, app_id, tar_bytes(scratch_context("built v1\n"))
    )
    print(f"\nFROM scratch build + deploy: {seconds:.2f} s")
    assert router.get(f"/apps/{app_id}/").text == "built v1\n"
    assert deployment["image"] == first["image_tag"] and first["image_tag"].endswith(":1")
    assert deployment["image_id"] == first["image_id"]
    assert len(first["upload_sha256"]) == 64 and first["context_files"] == 3
    log = build_log(api, app_id, 1)
    assert log.startswith("Step 1/") and "FROM scratch" in log and "Successfully tagged" in log
    # Not labelled (the GC knows builds by the image ids recorded here): the Dockerfile's
    # steps and the one that tags it, no extra step
    image = docker.from_env().images.get(first["image_id"])
    assert not any(name.startswith("io.minipaas") for name in image.labels or {})
    assert "LABEL" not in log

    second, _, _ = _build_and_deploy(
        api, app_id, tar_bytes(scratch_context("built v2\n"), mode="w:gz")
    )
    assert second["number"] == 2
    assert router.get(f"/apps/{app_id}/").text == "built v2\n"

    # The same context again: every step comes from the engine's cache, the same image
    began = time.monotonic()
    third, _, _ = _build_and_deploy(api, app_id, tar_bytes(scratch_context("built v2\n")))
    print(f"unchanged rebuild + deploy: {time.monotonic() - began:.2f} s")
    assert third["image_id"] == second["image_id"]
    assert "Using cache" in build_log(api, app_id, 3)

    # Back to the first build's release, by its exact image
    listed = api.get(f"/apps/{app_id}/builds").json()
    assert [b["number"] for b in listed] == [3, 2, 1]
    rollback = api.post(f"/apps/{app_id}/rollback", json={"release": 1})
    assert rollback.status_code == 202, rollback.text
    done = wait_for_deployment(api, app_id, rollback.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["image_id"] == first["image_id"]
    assert router.get(f"/apps/{app_id}/").text == "built v1\n"


def test_a_failing_run_step_says_which_step_its_message_and_code(
    api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    body = tar_bytes(
        scratch_context("x", run=f"echo 'cannot find libfoo' >&2; exit 7 # {app_name}")
    )
    answer = start_build(api, app_id, body)
    assert answer.status_code == 202, answer.text
    build = wait_for_build(api, app_id, answer.json()["number"])
    assert build["status"] == "failed"
    assert build["failed_step"].startswith("Step 4/") and " : RUN " in build["failed_step"]
    assert "returned a non-zero code: 7" in build["error"]
    assert "cannot find libfoo" in build["error"]
    assert build["deployment_id"] is None and build["image_id"] is None
    assert api.get(f"/apps/{app_id}").json()["image"] == HELLO_V1  # nothing was deployed


def test_a_failed_build_leaves_no_image_of_its_steps(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    # A page of its own: the COPY steps commit new images, not another build's cached ones
    body = tar_bytes(scratch_context(f"page of {app_name}\n", run="exit 3"))
    answer = start_build(api, app_id, body)
    assert answer.status_code == 202, answer.text
    number = answer.json()["number"]
    assert wait_for_build(api, app_id, number)["status"] == "failed"
    # The two COPY steps' images (FROM scratch has none); one the builder took from its cache
    # ("Using cache": the busybox layer every test build shares) may stand under other builds
    found = re.findall(
        r"^( ---> Using cache\n)? ---> ([0-9a-f]{12})$", build_log(api, app_id, number), re.M
    )
    assert len(found) == 2, found
    committed = [image for cached, image in found if not cached]
    assert committed, "the page's COPY step was new to this build"
    client = docker.from_env()

    def gone(image: str) -> bool:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            return True
        return False

    # Removed when no build runs on the host (image_turns): other tests' builds may
    eventually(
        lambda: all(gone(image) for image in committed),
        timeout=150,
        interval=0.5,
        message=f"a failed build's step images are still there: {committed}",
    )


def test_binary_and_endless_output_is_kept_within_bounds_and_the_build_succeeds(
    api: httpx.Client, app_name: str
) -> None:
    """A NUL printed by a step failed the build (PostgreSQL text refuses it); a step printing
    without end filled the database, for every app. Both now end in a bounded, readable log."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    run = (
        "printf 'before\\000after\\n'; "
        # 7,000 lines of 3,001 characters: 21 MB, over the 16 MB a build's log may hold
        "yes \"$(printf '%3000s' x)\" | head -n 7000; "
        f"echo {app_name}"
    )
    answer = start_build(api, app_id, tar_bytes(scratch_context("x", run=run)), deploy="false")
    assert answer.status_code == 202, answer.text
    build = wait_for_build(api, app_id, answer.json()["number"], timeout=240)
    assert build["status"] == "succeeded", build
    log = api.get(f"/apps/{app_id}/builds/{build['number']}/log", timeout=60).text
    assert "before\\x00after" in log
    assert "later lines are not kept" in log
    assert 15 * 2**20 < len(log.encode()) < 17 * 2**20
    assert app_name not in log.split("later lines are not kept")[1]  # dropped, not kept


def test_a_missing_base_image_is_never_pulled_and_says_so(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    body = tar_bytes({"Dockerfile": f"FROM minipaas-test/no-such-base-{app_name}:1\n"})
    answer = start_build(api, app_id, body)
    assert answer.status_code == 202, answer.text
    build = wait_for_build(api, app_id, answer.json()["number"])
    # Refused before the engine sees it: the classic builder would pull it, pull=false or not
    assert build["status"] == "failed", build
    assert "is not on this host; base images are never pulled" in build["error"], build
    assert "registry" not in build["error"] and "docker.io" not in build["error"], build


def test_a_step_over_the_memory_limit_fails_as_oom_and_the_api_stays_responsive(
    api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    eat = f"echo {app_name}; x=0123456789; while true; do x=$x$x; done"
    answer = start_build(api, app_id, tar_bytes(scratch_context("x", run=eat)))
    assert answer.status_code == 202, answer.text
    number = answer.json()["number"]
    slowest = 0.0
    while api.get(f"/apps/{app_id}/builds/{number}").json()["status"] in ("queued", "running"):
        began = time.monotonic()
        assert api.get("/health").status_code == 200
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.1)
    build = wait_for_build(api, app_id, number)
    print(f"\nslowest /health during the OOM build: {slowest * 1000:.0f} ms")
    assert build["status"] == "failed"
    assert "out of memory" in build["error"] and "BUILD_MEMORY_MB" in build["error"]
    assert slowest < 2.0


def test_cancel_stops_a_running_build_within_ten_seconds(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    answer = start_build(
        api, app_id, tar_bytes(scratch_context("x", run=f"echo {app_name}; sleep 120"))
    )
    assert answer.status_code == 202, answer.text
    number = answer.json()["number"]
    eventually(
        lambda: "Running in" in build_log(api, app_id, number),
        timeout=60,
        message="the RUN step did not start",
    )
    # One build per app at a time
    again = start_build(api, app_id, tar_bytes(scratch_context("y")))
    assert again.status_code == 409 and "cancel" in again.json()["detail"]

    began = time.monotonic()
    cancelled = api.post(f"/apps/{app_id}/builds/{number}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    build = wait_for_build(api, app_id, number, timeout=15)
    elapsed = time.monotonic() - began
    print(f"\ncancel took {elapsed:.2f} s")
    assert build["status"] == "cancelled" and elapsed < 10
    assert api.post(f"/apps/{app_id}/builds/{number}/cancel").status_code == 409
    # The step's container is gone, and a new build may start
    assert containers_whose_command_holds(app_name) == []
    assert start_build(api, app_id, tar_bytes(scratch_context("y"))).status_code == 202
    wait_for_build(api, app_id, number + 1)


def _tar_with(member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dockerfile = b"FROM scratch\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
        archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../../etc/cron.d/evil"),
        _member("/etc/passwd"),
        _member("escape", tarfile.SYMTYPE, "../../../etc"),
        _member("hard", tarfile.LNKTYPE, "../etc/shadow"),
        _member("tty", tarfile.CHRTYPE),
    ],
    ids=["traversal", "absolute", "symlink-escape", "hardlink-escape", "device"],
)
def test_unsafe_contexts_are_refused_naming_the_entry(
    stack: Stack, api: httpx.Client, app_name: str, member: tarfile.TarInfo
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    answer = start_build(api, app_id, _tar_with(member))
    assert answer.status_code == 422, answer.text
    assert member.name in answer.json()["detail"][0]["msg"]
    assert api.get(f"/apps/{app_id}/builds").json() == []
    assert list((stack.settings.builds_dir / "incoming").iterdir()) == []


def test_options_are_checked(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    body = tar_bytes(scratch_context("x"))
    assert start_build(api, app_id, body, dockerfile="../Dockerfile").status_code == 422
    assert start_build(api, app_id, body, build_arg="no equals sign").status_code == 422
    # PostgreSQL's JSON cannot store a NUL: a clear 422 before the upload, not a 500 after
    nul = start_build(api, app_id, body, build_arg="A=x\x00y")
    assert nul.status_code == 422 and "NUL" in nul.text
    missing = start_build(api, app_id, body, dockerfile="docker/Dockerfile.prod")
    assert missing.status_code == 422 and "docker/Dockerfile.prod" in missing.text
    assert start_build(api, app_id, b"").status_code == 422
    # A gzip header over a corrupt deflate stream (zlib's own error): a 422, not a 500
    packed = gzip.compress(body)
    corrupt = start_build(api, app_id, packed[:10] + b"\xff" * 64 + packed[-8:])
    assert corrupt.status_code == 422 and "tar.gz" in corrupt.text, corrupt.text


def _answer(sock: socket.socket) -> str:
    """An HTTP answer read off the socket: its head and its whole body."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_an_upload_over_the_cap_is_answered_413_without_reading_it_all(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    cap = stack.settings.build_max_upload_mb * 1024 * 1024
    token = stack.admin_headers["Authorization"]
    # Declared too large: refused before a byte of the body is sent
    with socket.create_connection(("127.0.0.1", stack.settings.app_port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /apps/{app_id}/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {token}\r\nContent-Type: application/x-tar\r\n"
                f"Content-Length: {cap * 5}\r\n\r\n"
            ).encode()
        )
        head = _answer(sock)
    assert head.startswith("HTTP/1.1 413"), head
    assert "BUILD_MAX_UPLOAD_MB" in head

    # Streamed without a length: answered once past the cap, while the client still sends
    sent = 0
    piece = b"\0" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", stack.settings.app_port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /apps/{app_id}/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {token}\r\nContent-Type: application/x-tar\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        while sent < 5 * cap and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:
                break  # the server closed: its answer is waiting
            sent += len(piece)
        head = _answer(sock)
    assert head.startswith("HTTP/1.1 413"), head
    print(f"\n413 after {sent / 1024 / 1024:.0f} MB sent (cap {cap / 1024 / 1024:.0f} MB)")
    assert sent < 2 * cap
    assert list((stack.settings.builds_dir / "incoming").iterdir()) == []
    assert api.get(f"/apps/{app_id}/builds").json() == []


def test_a_python_web_app_on_a_local_debian_base(
    api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """The path a real user takes: a Debian base made on this host, python3 from apt."""
    made = subprocess.run(
        [str(ROOT / "scripts" / "compose-images.sh"), "--base-only"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert made.returncode == 0, made.stderr
    server = (
        "import json, os\n"
        "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
        "from greetings import greet\n\n"
        "class Handler(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'greeting': greet(os.environ.get('NAME', 'world')),\n"
        "                           'path': self.path}).encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Type', 'application/json')\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n\n"
        "ThreadingHTTPServer(('0.0.0.0', 8000), Handler).serve_forever()\n"
    )
    context = {
        "Dockerfile": (
            f"FROM {DEBIAN_BASE}\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
            "&& rm -rf /var/lib/apt/lists/*\n"
            "RUN useradd --create-home app\n"
            "WORKDIR /srv/app\n"
            "COPY app/ /srv/app/\n"
            "ARG GREETING_NAME=builder\n"
            "ENV NAME=$GREETING_NAME PYTHONUNBUFFERED=1\n"
            "USER app\n"
            "EXPOSE 8000\n"
            'CMD ["python3", "server.py"]\n'
        ),
        "app/server.py": server,
        "app/greetings.py": "def greet(name):\n    return f'hello, {name}'\n",
    }
    response = api.post("/apps", json={"name": app_name, "image": HELLO_V1, "internal_port": 8000})
    assert response.status_code == 201, response.text
    app_id = response.json()["id"]
    began = time.monotonic()
    answer = start_build(
        api, app_id, tar_bytes(context, mode="w:gz"), build_arg="GREETING_NAME=debian"
    )
    assert answer.status_code == 202, answer.text
    build = wait_for_build(api, app_id, answer.json()["number"], timeout=600)
    assert build["status"] == "succeeded", build["error"]
    assert build["build_args"] == ["GREETING_NAME"]
    print(f"\nPython app on the Debian base: built in {build['duration_seconds']:.1f} s")
    deployment = wait_for_deployment(api, app_id, build["deployment_id"], timeout=120)
    assert deployment["status"] == "succeeded", deployment["error"]
    print(f"built and deployed in {time.monotonic() - began:.1f} s")
    served = router.get(f"/apps/{app_id}/hello").json()
    assert served["greeting"] == "hello, debian"


def test_the_log_follows_live_and_resumes(api: httpx.Client, stack: Stack, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    answer = start_build(
        api,
        app_id,
        tar_bytes(
            scratch_context(
                "x", run=f"for i in 1 2 3; do echo tick$i; sleep 1; done; echo {app_name}"
            )
        ),
    )
    number = answer.json()["number"]
    received: list[str] = []

    def follow() -> None:
        with api.stream("GET", f"/apps/{app_id}/builds/{number}/log", params={"follow": True}) as s:
            for line in s.iter_lines():
                received.append(line)

    reader = threading.Thread(target=follow)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the followed log did not end with the build"
    assert {"tick1", "tick2", "tick3"} <= set(received)
    assert received[-1].startswith("Successfully tagged")
    whole = api.get(f"/apps/{app_id}/builds/{number}/log")
    assert whole.text.splitlines() == received
    rest = api.get(f"/apps/{app_id}/builds/{number}/log", params={"after": 3})
    assert rest.text.splitlines() == received[3:]
    assert rest.headers["x-log-lines"] == str(len(received))
    wait_for_build(api, app_id, number)


def _cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": stack.api_url,
        "MINIPAAS_TOKEN": stack.env["ADMIN_TOKEN"],
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "minipaas", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def test_cli_deploys_a_directory_honouring_dockerignore(
    stack: Stack, api: httpx.Client, router: httpx.Client, tmp_path: Path, app_name: str
) -> None:
    source = tmp_path / "site"
    (source / "node_modules" / "big").mkdir(parents=True)
    (source / "node_modules" / "big" / "blob.bin").write_bytes(b"\0" * 1_000_000)
    for name, content in scratch_context(f"from the cli {app_name}\n").items():
        (source / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    (source / "busybox").chmod(0o755)
    (source / ".env").write_text("SECRET=do-not-upload\n")
    (source / ".dockerignore").write_text("# local only\nnode_modules\n.env\n")
    app_id = create_app(api, app_name, HELLO_V1)["id"]

    result = _cli(stack, tmp_path, "deploy", app_name, "--source", str(source))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "context: 4 entries" in result.stdout  # Dockerfile, busybox, index.html, .dockerignore
    assert "Successfully tagged" in result.stdout and "succeeded" in result.stdout
    # By id: the list's first page holds only the session's first apps
    assert router.get(f"/apps/{app_id}/").text == f"from the cli {app_name}\n"
    listed = _cli(stack, tmp_path, "builds", app_name)
    assert listed.returncode == 0 and "succeeded" in listed.stdout

    # A failing step: exit 1 with the step and the reason
    (source / "Dockerfile").write_text("FROM scratch\nCOPY missing-file /x\n")
    failed = _cli(stack, tmp_path, "deploy", app_name, "--source", str(source))
    assert failed.returncode == 1
    assert "build 2 failed" in failed.stderr and "COPY missing-file" in failed.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_dashboard_lists_builds_with_their_live_log(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    app_id = create_app(api, app_name, HELLO_V1)["id"]
    run = f"for i in 1 2 3 4; do echo tick$i; sleep 1; done; echo {app_name}"
    answer = start_build(api, app_id, tar_bytes(scratch_context("x", run=run)))
    assert answer.status_code == 202, answer.text
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(f"{stack.router_url}/api/ui")
        page.fill("#token", stack.env["ADMIN_TOKEN"])
        page.click("#login-form button")
        page.locator(f"tr[data-app='{app_name}'] button").click()
        build = page.locator("tr[data-build='1']")
        expect(build).to_contain_text("running", timeout=20_000)
        build.locator("button", has_text="Log").click()
        expect(page.locator("#build-log")).to_contain_text("tick1", timeout=20_000)
        expect(build).to_contain_text("succeeded", timeout=30_000)
        expect(page.locator("#build-log")).to_contain_text("Successfully tagged")
        expect(page.locator("#deployments")).to_contain_text("succeeded", timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "5-builds.png"), full_page=True)
        browser.close()


def test_a_members_builds_are_capped_and_private(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    alice, bob = new_member(api), new_member(api)
    slow = tar_bytes(scratch_context("x", run=f"echo {app_name}; sleep 60"))
    with (
        httpx.Client(base_url=stack.api_url, headers=alice.headers, timeout=60) as owner,
        httpx.Client(base_url=stack.api_url, headers=bob.headers, timeout=60) as other,
    ):
        ids = [create_app(owner, f"{app_name}-{i}", HELLO_V1)["id"] for i in range(3)]
        for app_id in ids[:2]:
            assert start_build(owner, app_id, slow).status_code == 202
        third = start_build(owner, ids[2], slow)
        assert third.status_code == 429, third.text
        assert "BUILDS_PER_MEMBER" in third.json()["detail"] and third.headers["retry-after"]
        # Another member sees none of it, exactly as a missing app
        assert other.get(f"/apps/{ids[0]}/builds").status_code == 404
        assert other.get(f"/apps/{ids[0]}/builds/1/log").status_code == 404
        assert other.post(f"/apps/{ids[0]}/builds/1/cancel").status_code == 404
        assert start_build(other, ids[0], slow).status_code == 404
        for app_id in ids[:2]:
            assert owner.post(f"/apps/{app_id}/builds/1/cancel").status_code == 202
        for app_id in ids[:2]:
            assert wait_for_build(owner, app_id, 1, timeout=20)["status"] == "cancelled"
        # A member may not run another app's build by naming its tag
        theirs = f"{stack.settings.instance_name}-builds/app-{ids[0]}:1"
        # ... also as Docker Hub's name of it, which the engine finds locally all the same
        for name in (theirs, f"docker.io/{theirs}"):
            refused = other.post(
                "/apps", json={"name": f"{app_name}-x", "image": name, "internal_port": 80}
            )
            assert refused.status_code == 422 and "another app's build" in refused.text
        # ... nor build on it, nor copy out of it (it holds that app's source)
        own = create_app(other, f"{app_name}-y", HELLO_V1)["id"]
        patched = other.patch(f"/apps/{own}", json={"image": f"index.docker.io/{theirs}"})
        assert patched.status_code == 422 and "another app's build" in patched.text
        # The answer is the same whether such an image is on the host or not: the rules come
        # before the engine is asked (else a member learns which images and ids the host has)
        absent = f"{stack.settings.instance_name}-builds/app-{ids[0]}:999"
        for name, said in ((absent, "another app's build"), ("3f2a9c", "names an image by id")):
            body = {"image": name, "pull_policy": "never"}
            for answer in (
                other.patch(f"/apps/{own}", json=body),
                other.post("/apps", json={**body, "name": f"{app_name}-z", "internal_port": 80}),
            ):
                assert answer.status_code == 422 and said in answer.text, answer.text
        for dockerfile in (
            f"FROM {theirs}\n",
            f"FROM scratch\nCOPY --from={theirs} / /\n",
            f"FROM docker.io/{theirs}\n",
            f'ARG IMG="{theirs}"\nFROM $IMG\n',
        ):
            context = tar_bytes({"Dockerfile": dockerfile})
            answer = start_build(other, own, context)
            assert answer.status_code == 422 and "another app's build" in answer.text, answer.text


def test_a_base_image_whose_trigger_copies_from_another_image_is_refused(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """An image on the host (pulled by anyone) may carry ONBUILD triggers, which run in a
    build FROM it: `COPY --from=<another app's build>` there would copy that app's source
    out, so such an image is refused as a base, as the Dockerfile's own ONBUILD would be."""
    theirs = f"{stack.settings.instance_name}-builds/app-1:1"
    base = f"minipaas-test/hostile-base:{app_name}"
    dockerfile = f"FROM scratch\nONBUILD RUN true\nONBUILD COPY --from={theirs} / /stolen\n"
    client = docker.from_env()
    list(client.api.build(fileobj=io.BytesIO(tar_bytes({"Dockerfile": dockerfile})),
                          custom_context=True, tag=base, rm=True, decode=True))  # fmt: skip
    try:
        app_id = create_app(api, app_name, HELLO_V1)["id"]
        answer = start_build(api, app_id, tar_bytes({"Dockerfile": f"FROM {base}\n"}))
        assert answer.status_code == 422, answer.text
        assert f"image '{base}' has ONBUILD trigger 2" in answer.text, answer.text
        assert "--from is not supported" in answer.text
    finally:
        client.images.remove(base, force=True)


def test_a_builder_killed_mid_build_fails_the_build_and_ends_its_step(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    answer = start_build(
        api, app_id, tar_bytes(scratch_context("x", run=f"echo {app_name}; sleep 120"))
    )
    number = answer.json()["number"]
    eventually(
        lambda: "Running in" in build_log(api, app_id, number),
        timeout=60,
        message="the RUN step did not start",
    )
    builder = service(stack.settings, "builder")
    pid = builder.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    build = wait_for_build(api, app_id, number, timeout=60)
    assert build["status"] == "failed" and "builder stopped" in build["error"]

    def step_gone() -> bool:
        return not containers_whose_command_holds(app_name)

    eventually(step_gone, timeout=20, message="the build step's container still runs")
    key = naming.build_key(stack.settings, answer.json()["id"])
    eventually(
        lambda: not build_networks(get_runtime(), key),
        timeout=30,
        message="the build's network is left",
    )
    # supervisord started a new builder: the next build runs
    again = start_build(api, app_id, tar_bytes(scratch_context(f"after {app_name}\n")))
    assert again.status_code == 202, again.text
    assert wait_for_build(api, app_id, number + 1, timeout=60)["status"] == "succeeded"


def test_old_build_images_are_collected_beyond_keep_build_images(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    keep = stack.settings.keep_build_images
    tags = []
    for number in range(1, keep + 2):
        body = tar_bytes(scratch_context(f"{app_name} build {number}\n"))
        answer = start_build(api, app_id, body, deploy="false")
        assert answer.status_code == 202, answer.text
        build = wait_for_build(api, app_id, number)
        assert build["status"] == "succeeded" and build["deployment_id"] is None
        tags.append(build["image_tag"])
    assert api.get(f"/apps/{app_id}").json()["image"] == HELLO_V1  # deploy=false: not run
    client = docker.from_env()

    def oldest_gone() -> bool:
        try:
            client.images.get(tags[0])
        except docker.errors.ImageNotFound:
            return True
        return False

    eventually(oldest_gone, timeout=30, message="the oldest build's image was not collected")
    for tag in tags[1:]:
        client.images.get(tag)  # the newest KEEP_BUILD_IMAGES stay


def test_an_image_built_from_a_build_by_someone_else_is_never_collected(
    stack: Stack, api: httpx.Client, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minipaas.config import get_settings
    from minipaas.services.builds import recovery
    from minipaas.worker import reconciler

    monkeypatch.setattr(get_settings(), "keep_build_images", 1)
    client = docker.from_env()
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    # An old build nothing runs: beyond KEEP_BUILD_IMAGES, its image is collected
    unused = start_build(api, app_id, tar_bytes(scratch_context(f"{app_name} 0\n")), deploy="false")
    assert unused.status_code == 202, unused.text
    unused_build = wait_for_build(api, app_id, unused.json()["number"])
    assert unused_build["status"] == "succeeded", unused_build["error"]
    base, _, _ = _build_and_deploy(api, app_id, tar_bytes(scratch_context(f"{app_name} 1\n")))
    # Someone with the host's Docker builds FROM the platform's build (it inherits all its
    # labels and layers), and the app runs it for a release
    derived = f"minipaas-test/{app_name}:derived"
    context = tar_bytes(
        {
            "Dockerfile": f"FROM {base['image_tag']}\nCOPY index.html /www/index.html\n",
            "index.html": f"{app_name} derived\n",
        }
    )
    derived_image, _ = client.images.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=derived, rm=True
    )
    assert api.patch(f"/apps/{app_id}", json={"image": derived}).status_code == 200
    release = api.post(f"/apps/{app_id}/deploy")
    assert release.status_code == 202, release.text
    assert wait_for_deployment(api, app_id, release.json()["id"])["status"] == "succeeded"
    # Two newer builds: the derived image's release is older than KEEP_RELEASE_IMAGES (2)
    for number in (2, 3):
        _build_and_deploy(api, app_id, tar_bytes(scratch_context(f"{app_name} {number}\n")))
    eventually(
        lambda: not client.containers.list(all=True, filters={"ancestor": derived_image.id}),
        timeout=15,
        message="the derived image's container was not removed",
    )

    def unused_collected() -> bool:
        reconciler._remove_old_release_images()  # what the worker's reconciler runs each pass
        recovery.remove_old_build_images()
        try:
            client.images.get(unused_build["image_id"])
        except docker.errors.ImageNotFound:
            return True
        return False

    eventually(unused_collected, timeout=20, message="the old unused build was not collected")
    # (on Swarm the platform's push also named it in the cluster registry: its name, not theirs)
    registry = f"127.0.0.1:{stack.settings.registry_port}/"
    tags = [t for t in client.images.get(derived_image.id).tags if not t.startswith(registry)]
    assert tags == [derived], "the GC took someone's image"
    assert api.delete(f"/apps/{app_id}").status_code == 204
    client.images.remove(derived)


def test_a_build_whose_builder_died_before_deploying_it_is_deployed_by_the_reconciler(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """The builder records the success, then asks for the deployment: a builder killed in
    between leaves a succeeded build with no deployment, which the reconciler deploys."""
    from sqlalchemy import update

    from minipaas.db.models import Build
    from minipaas.db.session import get_session

    app_id = create_app(api, app_name, HELLO_V1)["id"]
    started = start_build(api, app_id, tar_bytes(scratch_context("late\n")), deploy="false")
    assert started.status_code == 202, started.text
    built = wait_for_build(api, app_id, 1)
    assert built["status"] == "succeeded" and built["deployment_id"] is None
    # As the builder left it when killed between the two steps, some time ago
    with get_session() as db:
        db.execute(
            update(Build)
            .where(Build.app_id == app_id, Build.number == 1)
            .values(deploy_on_success=True, finished_at=Build.finished_at - timedelta(minutes=5))
        )
        db.commit()

    def deployed() -> int | None:
        deployment_id: int | None = api.get(f"/apps/{app_id}/builds/1").json()["deployment_id"]
        return deployment_id

    deployment_id = eventually(deployed, timeout=60, interval=0.5, message="never deployed")
    assert wait_for_deployment(api, app_id, deployment_id)["status"] == "succeeded"
    assert router.get(f"/apps/{app_id}/").text == "late\n"
