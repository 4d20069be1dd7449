"""The client side of `minipaas`: talks to a mini-paas API with a token, like curl would."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, ParamSpec

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from minipaas.cli.safe_text import markup, plain, rich_text
from minipaas.files import write_atomically

CONFIG_FILE = Path(os.environ.get("MINIPAAS_CONFIG", Path.home() / ".config/minipaas/config.json"))
console = Console()
P = ParamSpec("P")


class ClientError(Exception):
    """One line for the user; never a traceback."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str


def load_connection() -> Connection:
    saved: dict[str, str] = {}
    if CONFIG_FILE.exists():
        saved = json.loads(CONFIG_FILE.read_text())
    url = os.environ.get("MINIPAAS_URL") or saved.get("url")
    token = os.environ.get("MINIPAAS_TOKEN") or saved.get("token")
    if not url or not token:
        raise ClientError(
            "not logged in: run `minipaas login --url URL` (or set MINIPAAS_URL and MINIPAAS_TOKEN)"
        )
    return Connection(url.rstrip("/"), token)


def save_connection(connection: Connection) -> None:
    # A new file, private from its first byte, renamed over the old one: opening the old
    # one would keep its mode (0644, say) while the token is written into it
    text = json.dumps({"url": connection.url, "token": connection.token})
    write_atomically(CONFIG_FILE, text, mode=0o600)


class Api:
    def __init__(self, connection: Connection) -> None:
        self.http = httpx.Client(
            base_url=connection.url,
            headers={"Authorization": f"Bearer {connection.token}"},
            timeout=60,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise ClientError(_error_text(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def app_id(self, ref: str) -> int:
        """An app by id (digits: names cannot be all digits) or by name.

        An app named with digits only from before that rule would be ambiguous: refused,
        so a command never acts on another app than the one the user meant.
        """
        apps = self.call("GET", "/apps", params={"limit": 500})
        if ref.isdigit():
            named = [app for app in apps if app["name"] == ref and app["id"] != int(ref)]
            if not named:
                return int(ref)
            if any(app["id"] == int(ref) for app in apps):
                raise ClientError(
                    f"'{ref}' is both the name of app {named[0]['id']} and the id of app {ref}; "
                    f"use the id {named[0]['id']} for the first, or the other app's name"
                )
            return int(named[0]["id"])
        for app in apps:
            if app["name"] == ref:
                return int(app["id"])
        raise ClientError(f"no app named '{ref}' (that you can see)")


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text.strip()[:300]
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(_field_message(e) for e in detail)
    return f"{response.status_code}: {detail}"


def _field_message(error: dict[str, Any]) -> str:
    """`field: message`, or the message alone when the error names no field."""
    field = ".".join(str(part) for part in error.get("loc", [])[1:])
    return f"{field}: {error.get('msg')}" if field else str(error.get("msg"))


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {plain(message)}", err=True)  # often the server's words
    raise typer.Exit(1)


def show(data: Any, as_json: bool, columns: list[str], title: str | None = None) -> None:
    """A table on a terminal, JSON for scripts."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    if not console.is_terminal:
        # Piped or redirected: full values, tab-separated, never cut to a terminal's width
        typer.echo("\t".join(columns))
        for row in rows:
            typer.echo("\t".join(plain(_cell_text(row.get(column))) for column in columns))
        return
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")  # long digests wrap, never end in "…"
    for row in rows:
        table.add_row(*[rich_text(_cell_text(row.get(column))) for column in columns])
    console.print(table)


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(str(key) for key in value) or "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def follow_deployment(api: Api, app_id: int, deployment: dict[str, Any], as_json: bool) -> None:
    """Prints a deployment's events as they happen until it ends; exit 1 with the reason if it
    failed."""
    base = f"/apps/{app_id}/deployments/{deployment['id']}"
    seen = 0
    while True:
        for event in api.call("GET", f"{base}/events", params={"after": seen}):
            seen = event["id"]
            if not as_json and event["kind"] not in ("succeeded", "failed"):
                at = rich_text(str(event["at"])[11:19], style="dim")
                console.print(Text.assemble("  ", at, " ", rich_text(event["message"])))
        deployment = api.call("GET", base)
        if deployment["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    if as_json:
        typer.echo(json.dumps(deployment, indent=2))
    if deployment["status"] == "failed":
        fail(f"deployment {deployment['id']} failed: {deployment['error']}")
    if not as_json:
        took = deployment.get("duration_seconds")
        console.print(
            f"deployment {markup(deployment['id'])} succeeded"
            + (f" in {took:.1f} s" if isinstance(took, int | float) else "")
            + f" (release {markup(deployment.get('release_number'))})"
        )


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """For a command: a ClientError (an API error, an unreachable API, no login) becomes one
    `error: ...` line and exit code 1, never a traceback.

    functools.wraps keeps the name, the help text and (through __wrapped__, which
    inspect.signature follows) the parameters Typer reads its options and arguments from.
    """

    @functools.wraps(command)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except ClientError as exc:
            fail(str(exc))

    return reporting


def stream_logs(api: Api, app_id: int, tail: int) -> None:
    """Follows the logs until Ctrl-C; reconnects when the router closes the stream (reloads
    close long-lived connections), without printing the last line twice."""
    last_line: str | None = None
    try:
        while True:
            with api.http.stream(
                "GET",
                f"/apps/{app_id}/logs",
                params={"follow": "true", "tail": tail if last_line is None else 1},
                timeout=httpx.Timeout(10, read=None),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(_error_text(response))
                if not response.headers.get("content-type", "").startswith("text/plain"):
                    return  # the app has no container: nothing to follow
                first = True
                try:
                    for line in response.iter_lines():
                        if first and line == last_line:
                            first = False
                            continue  # printed before the reconnect
                        first = False
                        last_line = line
                        sys.stdout.write(plain(line) + "\n")
                        sys.stdout.flush()
                except httpx.HTTPError:
                    pass  # cut: reconnect
            time.sleep(1)
    except KeyboardInterrupt:
        return
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {api.http.base_url}: {exc}") from None
