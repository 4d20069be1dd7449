"""Tiny local images built from busybox: no registry is needed (or reachable)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

HELLO_V1 = "minipaas-test/hello:v1"
HELLO_V2 = "minipaas-test/hello:v2"
CRASHER = "minipaas-test/crasher:v1"
BINARY_LOGGER = "minipaas-test/binary-logger:v1"
MISSING = "minipaas-test/does-not-exist:v1"


def _busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists():
            return path
    raise RuntimeError("busybox not found: apt-get install busybox-static")


def build_image(tag: str, cmd: list[str], files: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as context:
        root = Path(context)
        shutil.copy(_busybox(), root / "busybox")
        www = root / "www"
        www.mkdir()
        for name, content in (files or {}).items():
            (www / name).write_text(content)
        (root / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            f"CMD {json.dumps(cmd)}\n"
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, str(root)],
            check=True,
            capture_output=True,
            env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"},
        )


def httpd(version: str) -> list[str]:
    del version
    return ["/bin/busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/www"]


def build_test_images() -> None:
    build_image(HELLO_V1, httpd("v1"), {"index.html": "hello from v1\n"})
    build_image(HELLO_V2, httpd("v2"), {"index.html": "hello from v2\n"})
    build_image(CRASHER, ["/bin/sh", "-c", "echo 'crashing on purpose' >&2; exit 3"])
    build_image(
        BINARY_LOGGER,
        [
            "/bin/sh",
            "-c",
            "printf 'before \\377\\376 after\\n'; exec httpd -f -v -p 80 -h /www",
        ],
        {"index.html": "binary logger\n"},
    )
