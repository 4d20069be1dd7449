"""An app's own output, read with `minipaas logs` against the real platform, reaches the
terminal inert: no escape sequence, no Rich markup (tests/unit/test_cli_escaping.py covers
every other place the client prints server text)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# printf's escapes: ESC ] 0 ; evil BEL (retitle), ESC [ 2 J (clear), then Rich markup
HOSTILE = r"printf '\033]0;evil\007 [red]x[/red] \033[2J\n'"


def test_cli_prints_an_apps_hostile_log_line_inert(
    stack: Stack, api: httpx.Client, tmp_path: Path, app_name: str
) -> None:
    command = ["/bin/sh", "-c", f"{HOSTILE}; exec httpd -f -p 80 -h /www"]
    app_id = create_app(api, app_name, HELLO_V1, command=command)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    raw = api.get(f"/apps/{app_id}/logs").json()["logs"]
    assert "\x1b]0;evil\x07" in raw  # the API hands the bytes on as they are

    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": stack.api_url,
        "MINIPAAS_TOKEN": stack.env["ADMIN_TOKEN"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "minipaas", "logs", app_name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;evil\\x07 [red]x[/red] \\x1b[2J" in result.stdout
