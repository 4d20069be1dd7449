"""Client commands: login, apps, deploy, logs, lifecycle, releases, rollback, env, domains,
stats, scale."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from minipaas.cli.client import (
    Api,
    ClientError,
    Connection,
    follow_deployment,
    load_connection,
    reports_errors,
    save_connection,
    show,
    stream_logs,
)
from minipaas.cli.safe_text import plain
from minipaas.cli.source_deploy import deploy_source

apps_app = typer.Typer(no_args_is_help=True, help="Your apps")
env_app = typer.Typer(no_args_is_help=True, help="An app's env vars (values are never shown)")
domains_app = typer.Typer(no_args_is_help=True, help="An app's own domains (besides its url)")

JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")
APP_COLUMNS = ["id", "name", "status", "image", "url", "status_detail"]
# What a crashed app shows besides (the platform restarts it with a backoff)
CRASH_COLUMNS = ["restart_count", "last_exit_code", "next_restart_at"]
DEPLOYMENT_COLUMNS = ["id", "status", "image", "release_number", "duration_seconds", "error"]
BUILD_COLUMNS = ["number", "status", "image_tag", "duration_seconds", "deployment_id", "error"]
DOMAIN_COLUMNS = ["hostname", "url", "https", "https_detail", "created_at"]
TRAFFIC_COLUMNS = ["start", "requests", "4xx", "5xx", "5xx_rate", "p50_ms", "p95_ms", "p99_ms"]


def _api() -> Api:
    return Api(load_connection())


def register(app: typer.Typer) -> None:
    app.add_typer(apps_app, name="apps")
    app.add_typer(env_app, name="env")
    app.add_typer(domains_app, name="domains")
    app.command("login")(login)
    app.command("deploy")(deploy)
    app.command("logs")(logs)
    app.command("deployments")(deployments)
    app.command("releases")(releases)
    app.command("builds")(builds)
    app.command("rollback")(rollback)
    app.command("stats")(stats)
    app.command("scale")(scale)
    for action in ("stop", "start", "restart", "remove"):
        app.command(action, help=f"{action.capitalize()} an app's container")(_lifecycle(action))


@reports_errors
def login(
    url: str = typer.Option(..., "--url", help="the API, e.g. http://127.0.0.1:8081"),
    token: str = typer.Option(
        "",
        prompt="API token (mp_...)",
        hide_input=True,
        show_default=False,
        help="an API token (mp_...); asked for when not given",
    ),
) -> None:
    """Store the API address and a token (in a 0600 file) after checking them."""
    connection = Connection(url.rstrip("/"), token)
    me = Api(connection).call("GET", "/me")
    save_connection(connection)
    typer.echo(f"logged in to {connection.url} as {plain(me['username'])} ({plain(me['role'])})")


@apps_app.command("list")
@reports_errors
def apps_list(as_json: bool = JsonOption) -> None:
    """The apps you can see."""
    show(_api().call("GET", "/apps", params={"limit": 500}), as_json, APP_COLUMNS)


@apps_app.command("show")
@reports_errors
def apps_show(app: str, as_json: bool = JsonOption) -> None:
    """One app (by name or id)."""
    api = _api()
    data = api.call("GET", f"/apps/{api.app_id(app)}")
    details = [
        "path",
        "domains",
        "internal_port",
        "memory_mb",
        "cpus",
        "env",
        "published_port",
        "replicas",
        "replicas_serving",
        "delete_requested_at",
    ]
    columns = [*APP_COLUMNS, *CRASH_COLUMNS, *details]
    show(data, as_json, columns)


@apps_app.command("create")
@reports_errors
def apps_create(
    name: str,
    image: str = typer.Option(..., help="image reference, e.g. nginx:1.27"),
    port: int = typer.Option(..., help="the port the app listens on inside its container"),
    memory_mb: int | None = typer.Option(None, help="memory limit in MB"),
    replicas: int = typer.Option(1, min=1, help="containers serving the app side by side"),
    as_json: bool = JsonOption,
) -> None:
    """Register an app."""
    body: dict[str, Any] = {"name": name, "image": image, "internal_port": port}
    if memory_mb is not None:
        body["memory_mb"] = memory_mb
    if replicas != 1:
        body["replicas"] = replicas
    show(_api().call("POST", "/apps", json=body), as_json, APP_COLUMNS)


@apps_app.command("delete")
@reports_errors
def apps_delete(app: str, yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Delete an app with its container, route and history."""
    api = _api()
    app_id = api.app_id(app)
    if not yes:
        typer.confirm(f"delete app {app} and all it owns?", abort=True)
    api.call("DELETE", f"/apps/{app_id}")
    typer.echo(f"deleted app {app}")


@reports_errors
def deploy(
    app: str,
    image: str | None = typer.Option(None, help="deploy this image (saved on the app)"),
    source: Path | None = typer.Option(
        None, help="build this directory (its Dockerfile; .dockerignore honoured), then deploy"
    ),
    dockerfile: str = typer.Option("Dockerfile", help="with --source: the Dockerfile's path"),
    build_arg: list[str] = typer.Option([], help="with --source: NAME=VALUE, repeatable"),
    as_json: bool = JsonOption,
) -> None:
    """Deploy an app and follow it until it succeeds or fails (exit 1 on failure)."""
    api = _api()
    app_id = api.app_id(app)
    if source is not None:
        if image is not None:
            raise ClientError("give --image or --source, not both")
        deploy_source(
            api,
            app_id,
            source,
            dockerfile=dockerfile,
            build_args=build_arg,
            deploy=True,
            as_json=as_json,
        )
        return
    if image is not None:
        api.call("PATCH", f"/apps/{app_id}", json={"image": image})
    follow_deployment(api, app_id, api.call("POST", f"/apps/{app_id}/deploy"), as_json)


@reports_errors
def rollback(
    app: str,
    release: int | None = typer.Argument(None, help="default: the release before the current"),
    as_json: bool = JsonOption,
) -> None:
    """Deploy an earlier release again and follow it; the app takes that release's settings
    (image, env, command, limits, health check), as Heroku's rollback does."""
    api = _api()
    app_id = api.app_id(app)
    body = {"release": release} if release is not None else {}
    deployment = api.call("POST", f"/apps/{app_id}/rollback", json=body)
    if not as_json:
        number = deployment.get("rollback_to_release")
        typer.echo(
            f"rolling back to release {number}: the app takes its image, env, command, "
            "limits and health check"
        )
    follow_deployment(api, app_id, deployment, as_json)


@reports_errors
def logs(
    app: str,
    follow: bool = typer.Option(False, "-f", "--follow", help="keep printing new lines"),
    tail: int = typer.Option(100, "--tail", min=1, help="lines from the end"),
) -> None:
    """An app's output."""
    api = _api()
    app_id = api.app_id(app)
    if follow:
        stream_logs(api, app_id, tail)
    else:
        text = api.call("GET", f"/apps/{app_id}/logs", params={"tail": tail})["logs"]
        typer.echo(plain(text), nl=False)  # the app's own bytes: no escape sequence gets through


@reports_errors
def deployments(app: str, as_json: bool = JsonOption) -> None:
    """An app's deployment history, newest first."""
    api = _api()
    show(api.call("GET", f"/apps/{api.app_id(app)}/deployments"), as_json, DEPLOYMENT_COLUMNS)


@reports_errors
def builds(app: str, as_json: bool = JsonOption) -> None:
    """An app's builds from source, newest first."""
    api = _api()
    show(api.call("GET", f"/apps/{api.app_id(app)}/builds"), as_json, BUILD_COLUMNS)


@reports_errors
def releases(app: str, as_json: bool = JsonOption) -> None:
    """An app's releases, newest first."""
    api = _api()
    columns = ["number", "image", "image_id", "env", "memory_mb", "created_at"]
    show(api.call("GET", f"/apps/{api.app_id(app)}/releases"), as_json, columns)


@reports_errors
def stats(
    app: str,
    as_json: bool = JsonOption,
    every: bool = typer.Option(False, "--all", help="also the minutes without requests"),
) -> None:
    """An app's traffic per minute for the last hour, as the router counted it."""
    api = _api()
    data = api.call("GET", f"/apps/{api.app_id(app)}/metrics")
    if as_json:
        show(data, True, [])
        return
    if not data["enabled"]:
        raise ClientError("the router counts no traffic (ROUTER_METRICS=false)")
    rows = [m for m in data["minutes"] if every or m["requests"]]
    for row in [*rows, *([data["total"]] if data["total"] else [])]:
        row["5xx_rate"] = f"{row['rate_5xx']:.1%}"
        row["4xx"], row["5xx"] = row["status_classes"]["4xx"], row["status_classes"]["5xx"]
    if data["total"]:
        data["total"]["start"] = "last hour"
        rows.append(data["total"])
    show(rows, False, TRAFFIC_COLUMNS, title=f"in flight now: {data['in_flight']}")


@reports_errors
def scale(
    app: str,
    replicas: int = typer.Argument(..., min=1, help="how many containers serve the app"),
    as_json: bool = JsonOption,
) -> None:
    """Run this many replicas of the app: started or stopped now if it runs (no deploy, no
    new release), else at its next start or deploy."""
    api = _api()
    app_id = api.app_id(app)
    changed = api.call("PATCH", f"/apps/{app_id}", json={"replicas": replicas})
    latest = api.call("GET", f"/apps/{app_id}/actions", params={"limit": 1})
    if changed.get("notice") and latest and latest[0]["action"] == "scale":
        ended = _follow_action(api, app_id, latest[0]["id"])
        if ended["status"] == "failed":
            raise ClientError(f"scale failed: {ended['detail']}")
        changed = api.call("GET", f"/apps/{app_id}")
    elif not as_json:
        typer.echo(f"{replicas} replica(s) from the app's next start or deploy")
    show(changed, as_json, [*APP_COLUMNS[:3], "replicas", "replicas_serving"])


def _lifecycle(action: str) -> Callable[[str, bool], None]:
    def command(app: str, as_json: bool = JsonOption) -> None:
        api = _api()
        app_id = api.app_id(app)
        result = api.call("POST", f"/apps/{app_id}/{action}")
        if not result["done"]:  # 202: the worker is still on it; follow the action
            ended = _follow_action(api, app_id, result["id"])
            if ended["status"] == "failed":
                raise ClientError(f"{action} failed: {ended['detail']}")
            result["app"] = api.call("GET", f"/apps/{app_id}")
        show(result["app"], as_json, APP_COLUMNS)

    command.__name__ = action
    command.__doc__ = f"{action.capitalize()} an app's container."
    return reports_errors(command)


def _follow_action(api: Api, app_id: int, action_id: int) -> dict[str, Any]:
    """Polls the action until it ended (a start may wait minutes for health)."""
    delay = 0.2
    while True:
        action: dict[str, Any] = api.call("GET", f"/apps/{app_id}/actions/{action_id}")
        if action["status"] in ("succeeded", "failed"):
            return action
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


@env_app.command("list")
@reports_errors
def env_list(app: str, as_json: bool = JsonOption) -> None:
    """Names of an app's env vars."""
    api = _api()
    names = sorted(api.call("GET", f"/apps/{api.app_id(app)}")["env"])
    show([{"name": n} for n in names], as_json, ["name"])


@env_app.command("set")
@reports_errors
def env_set(app: str, pairs: list[str] = typer.Argument(..., help="KEY=VALUE ...")) -> None:
    """Set env vars (applied by the next deploy); others are kept."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ClientError(f"'{pair}' is not KEY=VALUE")
        values[key] = value
    api = _api()
    api.call("PATCH", f"/apps/{api.app_id(app)}", json={"env_set": values})
    typer.echo(f"set {', '.join(sorted(values))} on {app}; deploy to apply")


@env_app.command("unset")
@reports_errors
def env_unset(app: str, names: list[str] = typer.Argument(..., help="KEY ...")) -> None:
    """Remove env vars (applied by the next deploy)."""
    api = _api()
    api.call("PATCH", f"/apps/{api.app_id(app)}", json={"env_unset": names})
    typer.echo(f"unset {', '.join(names)} on {app}; deploy to apply")


@domains_app.command("add")
@reports_errors
def domains_add(app: str, hostname: str, as_json: bool = JsonOption) -> None:
    """Give an app one more host name (point its DNS at the router)."""
    api = _api()
    body = {"hostname": hostname}
    added = api.call("POST", f"/apps/{api.app_id(app)}/domains", json=body)
    show(added if as_json else _https_cells(added), as_json, DOMAIN_COLUMNS)


def _https_cells(domain: dict[str, Any]) -> dict[str, Any]:
    """The domain's certificate status in two table cells: status, then expiry or reason."""
    tls = domain.get("tls") or {}
    if tls.get("status") == "issued":
        detail = f"expires {tls.get('expires_at')}"
    elif tls.get("reason"):
        retry = f"; next try {tls['next_attempt_at']}" if tls.get("next_attempt_at") else ""
        detail = f"{tls['reason']}{retry}"
    else:
        detail = None
    return {**domain, "https": tls.get("status"), "https_detail": detail}


@domains_app.command("list")
@reports_errors
def domains_list(app: str, as_json: bool = JsonOption) -> None:
    """An app's own domains."""
    api = _api()
    rows = api.call("GET", f"/apps/{api.app_id(app)}/domains", params={"limit": 500})
    show(rows if as_json else [_https_cells(row) for row in rows], as_json, DOMAIN_COLUMNS)


@domains_app.command("remove")
@reports_errors
def domains_remove(app: str, hostname: str) -> None:
    """Take a host name from an app."""
    api = _api()
    api.call("DELETE", f"/apps/{api.app_id(app)}/domains/{quote(hostname, safe='')}")
    typer.echo(f"removed {hostname} from {app}")
