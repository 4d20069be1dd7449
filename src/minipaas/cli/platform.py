"""`minipaas platform up|down|ps|logs`: the local platform, as `make up` runs it."""

from __future__ import annotations

import subprocess

import typer

app = typer.Typer(no_args_is_help=True, help="Run the whole platform on this host")


def _say(message: str) -> None:
    typer.echo(f"  {message}")


@app.command()
def up() -> None:
    """Start PostgreSQL, Redis, nginx, the API and the worker; wait until ready."""
    from minipaas.config import get_settings
    from minipaas.host import platform
    from minipaas.host.errors import HostServiceError

    settings = get_settings()
    typer.echo(f"starting mini-paas (data in {settings.data_dir})")
    try:
        admin = platform.up(settings, _say)
    except HostServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if admin.from_env:
        where = "the token is the value of ADMIN_TOKEN"
    elif admin.token_file is not None:
        where = f"token in {admin.token_file} (mode 0600)"
    else:
        where = "token was shown when it was created; issue another with POST /tokens"
    port = "" if settings.router_port == 80 else f":{settings.router_port}"
    platform_url = f"http://{settings.platform_host}{port}"
    typer.echo(
        "\nmini-paas is up.\n"
        f"  API:       {settings.api_url}   (docs: {settings.api_url}/docs)\n"
        f"  Dashboard: {platform_url}/api/ui   (or {settings.api_url}/ui)\n"
        f"  Apps:      http://<name>.{settings.apps_domain}{port}/   "
        f"(also {settings.router_url}/apps/<id>/)\n"
        f"  Logs:      {settings.log_dir}\n"
        f"  Admin:     user '{admin.username}', {where}\n"
        f'             e.g. curl -H "Authorization: Bearer $(cat {settings.admin_token_file})" '
        f"{settings.api_url}/me\n"
    )


@app.command()
def down() -> None:
    """Stop everything `up` started (app containers keep their state)."""
    from minipaas.config import get_settings
    from minipaas.host import platform

    platform.down(get_settings(), _say)


@app.command()
def ps() -> None:
    """Show what runs."""
    from minipaas.config import get_settings
    from minipaas.host import platform

    for name, state in platform.status(get_settings()).items():
        typer.echo(f"{name:<18} {state}")


@app.command("install-systemd")
def install_systemd(
    enable: bool = typer.Option(True, help="enable and start it now (when systemd runs)"),
) -> None:
    """Install a systemd unit that starts the platform's supervisor at boot."""
    from minipaas.config import get_settings
    from minipaas.host import systemd

    settings = get_settings()
    path = systemd.install_unit(settings)
    typer.echo(f"wrote {path}")
    if enable and systemd.systemd_runs():
        systemd.enable_now()
        typer.echo(f"enabled and started {systemd.UNIT_NAME}")
    elif enable:
        typer.echo("systemd is not running here (not PID 1): the unit takes effect at its boot")


@app.command()
def logs(lines: int = typer.Option(50, "-n", help="lines per log")) -> None:
    """Show the end of the API, worker and router logs."""
    from minipaas.config import get_settings

    log_dir = get_settings().log_dir
    for path in sorted(log_dir.glob("*.log")):
        typer.echo(f"==> {path} <==")
        subprocess.run(["tail", "-n", str(lines), str(path)], check=False)
