"""`minipaas platform up|down|ps|logs`: the local platform, as `make up` runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from minipaas.host.backup_archive import Secret

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


PASSPHRASE_ENV = "MINIPAAS_BACKUP_PASSPHRASE"


def _archive_secret(key_file: Path | None, *, confirm: bool) -> Secret:
    """--key-file, else MINIPAAS_BACKUP_PASSPHRASE, else a prompt (asked twice for a backup)."""
    from minipaas.host.backup_archive import Secret

    if key_file is not None:
        return Secret.key_file(key_file)
    # Out of the environment: pg_dump, psql and the platform a restore starts inherit it
    passphrase = os.environ.pop(PASSPHRASE_ENV, None)
    if not passphrase:
        passphrase = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    return Secret.passphrase(passphrase)


_KEY_FILE = typer.Option(
    None,
    "--key-file",
    help=f"a file of at least 32 random bytes instead of a passphrase ({PASSPHRASE_ENV} "
    "or a prompt)",
    dir_okay=False,
)


@app.command()
def backup(
    file: Path | None = typer.Argument(
        None, help="where to write it (default: DATA_DIR/backups/<instance>-<time>.mpbackup)"
    ),
    key_file: Path | None = _KEY_FILE,
) -> None:
    """Write an encrypted backup (database, secret key, manifest) while the platform runs."""
    from minipaas.config import get_settings
    from minipaas.host.backup import make_backup
    from minipaas.host.backup_archive import ArchiveError
    from minipaas.host.errors import HostServiceError

    settings = get_settings()
    try:
        result = make_backup(settings, _archive_secret(key_file, confirm=True), file)
    except (ArchiveError, HostServiceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"backup written to {result.path} ({result.size_bytes / 1e6:.1f} MB, mode 0600, "
        f"schema {result.revision}) in {result.seconds:.1f} s\n"
        "  Copy it off this host; it opens only with the passphrase (or key file) given now."
    )


@app.command()
def restore(
    file: Path = typer.Argument(..., help="a file written by `minipaas platform backup`"),
    key_file: Path | None = _KEY_FILE,
    force: bool = typer.Option(False, "--force", help="replace a database that holds data"),
) -> None:
    """Restore a backup onto this (new, empty) install, then bring its apps back up."""
    from minipaas.config import get_settings
    from minipaas.host.backup import RestoreRefused, restore_backup
    from minipaas.host.backup_archive import ArchiveError
    from minipaas.host.errors import HostServiceError

    settings = get_settings()
    try:
        secret = _archive_secret(key_file, confirm=False)
        result = restore_backup(settings, file, secret, force=force, say=_say)
    except (ArchiveError, RestoreRefused) as exc:
        typer.echo(f"error: {exc}\nnothing was changed.", err=True)
        raise typer.Exit(1) from None
    except HostServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    manifest = result.manifest
    upgraded = f", upgraded from {result.upgraded_from}" if result.upgraded_from else ""
    typer.echo(
        f"restored the backup of '{manifest.get('instance_name')}' made at "
        f"{manifest.get('created_at')} (mini-paas {manifest.get('platform_version')}"
        f"{upgraded}) in {result.seconds:.1f} s.\n"
        f"  {len(result.redeployed)} app(s) are being started from their current release "
        "(follow them with `minipaas apps`)"
        + (f"; {len(result.failed)} had no release to run" if result.failed else "")
        + ".\n  Tokens of the backed-up install work here; this install's own new admin token "
        "does not."
    )
