"""Build contexts made in memory, and waiting for builds: shared by the build tests and bench."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import eventually

BUSYBOX = Path("/bin/busybox")
ENDED = {"succeeded", "failed", "cancelled"}


def tar_bytes(files: dict[str, bytes | str], *, mode: str = "w") -> bytes:
    """A tar of `files` (name -> content; executables are the ones named busybox)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith("busybox") else 0o644
            info.mtime = 1_700_000_000  # the same bytes every time: the engine's cache holds
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def scratch_context(page: str, *, run: str | None = None) -> dict[str, bytes | str]:
    """FROM scratch + the host's static busybox serving `page`; `run`: a shell step first."""
    steps = ["FROM scratch", "COPY busybox /bin/busybox", "COPY index.html /www/index.html"]
    if run is not None:
        steps.append(f"RUN {json.dumps(['/bin/busybox', 'sh', '-c', run])}")
    steps.append('CMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]')
    return {
        "Dockerfile": "\n".join(steps) + "\n",
        "busybox": BUSYBOX.read_bytes(),
        "index.html": page,
    }


def start_build(api: httpx.Client, app_id: int, body: bytes, **params: Any) -> httpx.Response:
    return api.post(
        f"/apps/{app_id}/builds",
        content=body,
        params=params,
        headers={"Content-Type": "application/x-tar"},
        timeout=120,
    )


def wait_for_build(
    api: httpx.Client, app_id: int, number: int, timeout: float = 120.0
) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        response = api.get(f"/apps/{app_id}/builds/{number}")
        assert response.status_code == 200, response.text
        body = dict(response.json())
        if body["status"] not in ENDED:
            return None
        # A successful build that deploys records its deployment right after it ends
        if (
            body["status"] == "succeeded"
            and body["deploy_on_success"]
            and not (body["deployment_id"] or body["error"])
        ):
            return None
        return body

    return eventually(ended, timeout=timeout, interval=0.1, message=f"build {number} did not end")


def build_log(api: httpx.Client, app_id: int, number: int) -> str:
    response = api.get(f"/apps/{app_id}/builds/{number}/log")
    assert response.status_code == 200, response.text
    return response.text
