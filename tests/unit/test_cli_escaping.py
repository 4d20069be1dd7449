"""The client prints what the server says (much of it written by apps) without letting escape
sequences reach the terminal or Rich markup be interpreted.

The `minipaas` command runs as a user runs it, against a stand-in API on loopback that answers
with hostile text everywhere an app or a user controls it (tests/e2e/test_cli_escaping.py
does the same with a real app's log lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from minipaas.cli import client
from minipaas.cli.safe_text import markup, plain

# Retitles the terminal, clears it, colours through Rich, reorders text (bidi override)
EVIL = "[red]x[/red] \x1b]0;evil\x07 \x1b[2J \x9b31m \u202egnp.exe"
SAFE_FORM = "[red]x[/red] \\x1b]0;evil\\x07 \\x1b[2J \\x9b31m \\u202egnp.exe"


def test_plain_shows_every_control_character_and_keeps_lines() -> None:
    assert plain(EVIL) == SAFE_FORM
    assert plain("a\tb\r\nc\rd\x00") == "a\tb\nc\\x0dd\\x00"
    assert markup("[red]x[/red]\x1b") == "\\[red]x\\[/red]\\x1b"


def _app(**extra: Any) -> dict[str, Any]:
    return {"id": 1, "name": "web", "status": "running", "image": "img", "url": "u", **extra}


class _StubApi(BaseHTTPRequestHandler):
    """Answers the few calls the commands below make; every text field carries EVIL."""

    log_streams = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/apps":
            self._json([_app(status_detail=EVIL)])
        elif path == "/apps/1/logs" and "follow=true" in query:
            type(self).log_streams += 1
            if type(self).log_streams > 1:  # the client reconnects: end it with an error
                self._json({"detail": f"gone {EVIL}"}, status=401)
                return
            data = f"line {EVIL}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/apps/1/logs":
            self._json({"logs": f"line {EVIL}\n"})
        elif path == "/apps/1/deployments/7/events":
            at = "2026-01-01T00:00:00Z"
            events = [{"id": 1, "kind": "health", "message": f"GET /{EVIL}", "at": at}]
            self._json([] if "after=1" in query else events)
        elif path == "/apps/1/deployments/7":
            self._json({"id": 7, "status": "failed", "error": f"exited: {EVIL}"})
        else:
            self._json({"detail": "not here"}, status=404)

    def do_POST(self) -> None:
        if self.path == "/apps/1/deploy":
            self._json({"id": 7, "status": "queued"}, status=202)
        else:
            self._json({"detail": "not here"}, status=404)


@pytest.fixture
def stub_url() -> Iterator[str]:
    _StubApi.log_streams = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _cli(url: str, tmp_path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": url,
        "MINIPAAS_TOKEN": "mp_test",
        "COLUMNS": "400",
    }
    result = subprocess.run(
        [sys.executable, "-m", "minipaas", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("logs", "1"),
        ("logs", "1", "--follow"),
        ("apps", "list"),
        ("deploy", "1"),
    ],
    ids=["logs", "logs-follow", "apps-table", "deploy-events-and-error"],
)
def test_server_text_reaches_the_terminal_inert(
    stub_url: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    output = _cli(stub_url, tmp_path, *args)
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in output, (args, output)
    # shown as sent: neither interpreted as markup nor dropped
    assert "[red]x[/red]" in output, (args, output)
    assert "\\x1b]0;evil\\x07" in output and "\\x1b[2J" in output, (args, output)


def test_the_saved_token_is_never_in_a_file_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing config file kept its mode when opened for writing: a 0644 one held the new
    token readable by anyone until the chmod after it."""
    config = tmp_path / "config.json"
    config.write_text("{}")
    config.chmod(0o644)
    monkeypatch.setattr(client, "CONFIG_FILE", config)
    client.save_connection(client.Connection("http://127.0.0.1:8000", "mp_secret"))
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["token"] == "mp_secret"
