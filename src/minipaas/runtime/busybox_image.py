"""Builds tiny HTTP images from the host's static busybox: a demo app with no registry."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from docker.errors import BuildError, ImageNotFound

from minipaas.runtime import image_turns
from minipaas.runtime.base import RuntimeFailure
from minipaas.runtime.docker_runtime import DockerRuntime

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
DEMO_IMAGE = "minipaas/hello:latest"
DEMO_PAGE = "<!doctype html><title>hello</title><h1>Hello from mini-paas</h1>\n"
HTTPD = ["/bin/busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/www"]


def _busybox() -> Path:
    for candidate in BUSYBOX_PATHS:
        if Path(candidate).exists():
            return Path(candidate)
    raise RuntimeFailure("busybox is not installed on the host: apt-get install busybox-static")


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def build_busybox_image(
    runtime: DockerRuntime, tag: str, cmd: list[str], files: dict[str, str] | None = None
) -> None:
    """FROM scratch + busybox + files under /www; about 2 MB, builds in under a second."""
    dockerfile = (
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"CMD {json.dumps(cmd)}\n"
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        _add(archive, "Dockerfile", dockerfile.encode())
        _add(archive, "busybox", _busybox().read_bytes(), mode=0o755)
        www = tarfile.TarInfo("www")
        www.type = tarfile.DIRTYPE
        www.mode = 0o755
        archive.addfile(www)
        for name, content in (files or {"index.html": ""}).items():
            _add(archive, f"www/{name}", content.encode())
    context.seek(0)
    try:
        with image_turns.building():  # no install on the host removes an image meanwhile
            runtime.client.images.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
            )
    except BuildError as exc:
        raise RuntimeFailure(f"building {tag} failed: {exc.msg}") from exc


def ensure_demo_image(runtime: DockerRuntime) -> bool:
    """Builds the demo image the README's examples deploy, if missing; True if built."""
    try:
        runtime.client.images.get(DEMO_IMAGE)
        return False
    except ImageNotFound:
        build_busybox_image(runtime, DEMO_IMAGE, HTTPD, {"index.html": DEMO_PAGE})
        return True
