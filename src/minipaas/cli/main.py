"""The `minipaas` command: run the servers, migrate, manage the local platform."""

from __future__ import annotations

import os

import typer

from minipaas.cli import client_commands, platform

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
    workers: int = typer.Option(2, min=1, help="uvicorn worker processes"),
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from minipaas.config import get_settings

    settings = get_settings()
    _enable_metrics()
    os.environ["MINIPAAS_JSON_LOGS"] = "1"  # the app factory sets up logging in each process
    os.environ["MINIPAAS_DIE_WITH_PARENT"] = "1"  # and ties each worker to this master
    uvicorn.run(
        "minipaas.api.app:create_app",
        factory=True,
        host=host or settings.app_host,
        port=port or settings.app_port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_config=None,  # JSON lines from minipaas.logs, set up in each worker process
        log_level="info",
        access_log=False,
    )


@app.command()
def worker(burst: bool = typer.Option(False, help="exit when the queue is empty")) -> None:
    """Run a worker that carries out deployments and lifecycle actions."""
    _enable_metrics()
    from minipaas.worker.main import run_worker

    run_worker(burst=burst)


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
