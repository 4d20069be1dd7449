"""`minipaas deploy APP --source DIR`: pack, upload with progress, follow the build's log,
then its deployment."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from minipaas.cli.client import Api, ClientError, _error_text, console, fail, follow_deployment
from minipaas.cli.safe_text import plain
from minipaas.cli.source_context import pack_context

_CHUNK = 256 * 1024
_MB = 1024 * 1024


def deploy_source(
    api: Api,
    app_id: int,
    source: Path,
    *,
    dockerfile: str,
    build_args: list[str],
    deploy: bool,
    as_json: bool,
) -> None:
    if not source.is_dir():
        raise ClientError(f"--source {source}: not a directory")
    if not (source / dockerfile).is_file():
        raise ClientError(
            f"--source {source}: no {dockerfile} in it (or name it with --dockerfile)"
        )
    with tempfile.TemporaryDirectory(prefix="minipaas-context-") as scratch:
        archive = Path(scratch) / "context.tar.gz"
        packed = pack_context(source, archive, dockerfile=dockerfile)
        _say(
            f"context: {packed.files} entries, {packed.bytes / _MB:.1f} MB "
            f"({archive.stat().st_size / _MB:.1f} MB compressed)",
            as_json,
        )
        build = _upload(api, app_id, archive, dockerfile, build_args, deploy, as_json)
    number = build["number"]
    _say(f"build {number} {build['status']}", as_json)
    try:
        _follow_log(api, app_id, number, as_json)
        build = _ended_build(api, app_id, number)
    except KeyboardInterrupt:
        fail(
            f"stopped following; build {number} goes on (`minipaas builds APP` shows it; "
            f"POST /apps/{app_id}/builds/{number}/cancel stops it)"
        )
    if build["status"] != "succeeded":
        fail(f"build {number} {build['status']}: {build['error']}")
    _say(
        f"build {number} succeeded in {build['duration_seconds']:.1f} s: {build['image_tag']}",
        as_json,
    )
    if not deploy:
        if as_json:
            sys.stdout.write(f"{_json(build)}\n")
        return
    if build["deployment_id"] is None:
        fail(f"build {number} was not deployed: {build['error']}")
    deployment = api.call("GET", f"/apps/{app_id}/deployments/{build['deployment_id']}")
    follow_deployment(api, app_id, deployment, as_json)


def _say(message: str, as_json: bool) -> None:
    if not as_json:
        console.print(plain(message), highlight=False)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2)


def _upload(
    api: Api,
    app_id: int,
    archive: Path,
    dockerfile: str,
    build_args: list[str],
    deploy: bool,
    as_json: bool,
) -> dict[str, Any]:
    total = archive.stat().st_size
    show = not as_json and sys.stderr.isatty()

    def chunks() -> Iterator[bytes]:
        sent = 0
        with archive.open("rb") as handle:
            while data := handle.read(_CHUNK):
                sent += len(data)
                if show:
                    sys.stderr.write(
                        f"\ruploading {sent / _MB:.1f}/{total / _MB:.1f} MB "
                        f"({100 * sent // max(total, 1)}%)"
                    )
                yield data
        if show:
            sys.stderr.write("\n")

    params: dict[str, Any] = {"dockerfile": dockerfile, "deploy": str(deploy).lower()}
    if build_args:
        params["build_arg"] = build_args
    try:
        response = api.http.post(
            f"/apps/{app_id}/builds",
            content=chunks(),
            params=params,
            headers={"Content-Type": "application/gzip", "Content-Length": str(total)},
            timeout=httpx.Timeout(60, write=600, read=600),
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"the upload to {api.http.base_url} failed: {exc}") from None
    if response.status_code >= 400:
        raise ClientError(_error_text(response))
    return dict(response.json())


def _follow_log(api: Api, app_id: int, number: int, as_json: bool) -> None:
    """Prints the build's log as it comes; a cut stream resumes after the last line seen."""
    seen = 0
    path = f"/apps/{app_id}/builds/{number}/log"
    while True:
        try:
            with api.http.stream(
                "GET",
                path,
                params={"follow": "true", "after": seen},
                timeout=httpx.Timeout(10, read=None),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(_error_text(response))
                for line in response.iter_lines():
                    seen += 1
                    if not as_json:
                        sys.stdout.write(f"  {plain(line)}\n")
                        sys.stdout.flush()
        except httpx.HTTPError:
            time.sleep(1)
        if api.call("GET", f"/apps/{app_id}/builds/{number}")["status"] not in (
            "queued",
            "running",
        ):
            return


def _ended_build(api: Api, app_id: int, number: int) -> dict[str, Any]:
    """The build once it ended, with its deployment recorded when it made one."""
    deadline = time.monotonic() + 30
    while True:
        build: dict[str, Any] = api.call("GET", f"/apps/{app_id}/builds/{number}")
        settled = build["status"] != "succeeded" or not build["deploy_on_success"]
        if settled or build["deployment_id"] or build["error"] or time.monotonic() > deadline:
            return build
        time.sleep(0.2)
