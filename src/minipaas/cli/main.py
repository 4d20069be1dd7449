"""The `minipaas` command: run the servers, migrate, manage the local platform."""

from __future__ import annotations

import os
import sys

import typer

from minipaas.cli import client_commands, cluster_commands, platform

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="mini-paas: a PaaS for one host",
)
migrate_app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic)")
router_app = typer.Typer(no_args_is_help=True, help="The nginx router")
admin_app = typer.Typer(no_args_is_help=True, help="Users and tokens, from the host")
app.add_typer(migrate_app, name="migrate")
app.add_typer(router_app, name="router")
app.add_typer(admin_app, name="admin")
client_commands.register(app)
cluster_commands.register(app)
app.add_typer(platform.app, name="platform")


def _enable_metrics() -> None:
    """API and worker processes share one Prometheus multiprocess directory."""
    from minipaas.config import get_settings

    metrics_dir = get_settings().run_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))


@app.command()
def api(
    host: str | None = typer.Option(None, help="bind address (default APP_HOST)"),
    port: int | None = typer.Option(None, help="port (default APP_PORT)"),
    processes: int = typer.Option(
        0, min=0, help="server processes (default API_PROCESSES; 0: one per CPU)"
    ),
) -> None:
    """Run the HTTP API: several processes, each on its own SO_REUSEPORT socket."""
    from minipaas.host import lifeline

    argv = []
    if host:
        argv += ["--host", host]
    if port:
        argv += ["--port", str(port)]
    if processes:
        argv += ["--processes", str(processes)]
    lifeline.main(argv)


@app.command()
def worker(
    burst: bool = typer.Option(False, help="exit when the queue is empty"),
    builds: bool = typer.Option(False, help="take builds from source only (a builder)"),
) -> None:
    """Run a worker that carries out deployments and lifecycle actions (or builds)."""
    _enable_metrics()
    from minipaas.worker.main import run_worker

    run_worker(burst=burst, builds=builds)


@migrate_app.command("up")
def migrate_up(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION."""
    from minipaas.db import migrate

    migrate.upgrade(revision)


@migrate_app.command("down")
def migrate_down(revision: str = typer.Argument("-1")) -> None:
    """Revert migrations down to REVISION."""
    from minipaas.db import migrate

    migrate.downgrade(revision)


@migrate_app.command("current")
def migrate_current() -> None:
    """Show the database's revision."""
    from minipaas.db import migrate

    migrate.current()


@migrate_app.command("stamp")
def migrate_stamp(revision: str = typer.Argument("head")) -> None:
    """Mark the database as being at REVISION without running migrations."""
    from minipaas.db import migrate

    migrate.stamp(revision)


@migrate_app.command("create")
def migrate_create(message: str, empty: bool = typer.Option(False, help="no autogenerate")) -> None:
    """Create a new migration from the models' differences with the database."""
    from minipaas.db import migrate

    migrate.create(message, autogenerate=not empty)


@admin_app.command("ensure")
def admin_ensure() -> None:
    """Create the first admin when there are no users (token: ADMIN_TOKEN or a 0600 file)."""
    from minipaas.config import get_settings
    from minipaas.services.bootstrap import ensure_admin

    settings = get_settings()
    admin = ensure_admin(settings)
    if not admin.created:
        typer.echo(f"admin '{admin.username}' exists")
    elif admin.from_env:
        typer.echo(f"created admin '{admin.username}' with the token in ADMIN_TOKEN")
    else:
        typer.echo(f"created admin '{admin.username}'; token in {admin.token_file}")


@router_app.command("publish")
def router_publish() -> None:
    """Start the router if needed and make its route table the database's."""
    from minipaas.services.routing import sync_routes

    repaired = sync_routes()
    typer.echo(repaired or "routes unchanged")


if __name__ == "__main__":
    app()


def main() -> None:
    """The console script: a usage error is one `error: ...` line and exit 1, like every
    other error of the CLI (click's framed box and exit 2 are for humans reading help)."""
    try:
        code = app(standalone_mode=False, prog_name="minipaas")
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: a missing argument, an unknown command
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {message}{hint}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
