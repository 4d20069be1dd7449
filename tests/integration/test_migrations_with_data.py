"""Upgrades with data (issue 18): for every earlier revision, a database at that revision is
filled with realistic rows (users, tokens, apps with secret env, deployments, events,
releases, audit), upgraded to head, and read back through the services and the API's schemas.

Generic over the chain: rows go only into the tables and columns a revision has (reflected),
so revisions added later (the reserved ones included) need no change here. A NOT NULL column
this test does not know gets a plain value of its type.

The same rows serve the database half of `platform restore` (host/backup.py): a dump of an
older schema loaded onto a new install and upgraded, and the apps queued afterwards.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    URL,
    Boolean,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    select,
    update,
)
from sqlalchemy.orm import Session

from minipaas import security
from minipaas.api.schemas import AppOut, DeploymentOut, ReleaseOut, UserOut
from minipaas.config import Settings, get_settings
from minipaas.db import migrate
from minipaas.db.models import (
    ApiToken,
    App,
    AppStatus,
    AuditEvent,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Release,
)
from minipaas.host import backup
from minipaas.host.backup import known_revisions
from minipaas.host.postgres import LocalPostgres, postgres_bin_dir
from minipaas.runtime.base import Endpoint
from minipaas.services import restored_apps, users
from minipaas.services.endpoints import endpoint_of
from tests.support.postgres import throwaway_postgres

pytestmark = [pytest.mark.postgres]

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TOKENS = {1: f"mp_{secrets.token_urlsafe(32)}", 2: f"mp_{secrets.token_urlsafe(32)}"}
SHOP_ENV = {"DATABASE_URL": "postgres://shop:s3cret@db.internal/shop", "API_KEY": "k-9f2c"}
IMAGE_IDS = {1: "sha256:" + "a1" * 32, 2: "sha256:" + "b2" * 32}


def _users() -> list[dict[str, Any]]:
    return [
        {"id": 1, "username": "alice", "role": "admin", "disabled": False, "created_at": AT},
        {"id": 2, "username": "bob", "role": "member", "disabled": False, "created_at": AT},
    ]


def _tokens() -> list[dict[str, Any]]:
    return [
        {
            "id": user_id,
            "user_id": user_id,
            "name": f"laptop-{user_id}",
            "prefix": security.shown_prefix(token),
            "token_hash": security.token_hash(token),
            "created_at": AT,
            "expires_at": AT + timedelta(days=3650),
            "issued_by_id": 1,
        }
        for user_id, token in TOKENS.items()
    ]


def _run_settings(env: dict[str, str], image: str) -> dict[str, Any]:
    """The run columns apps, deployments and releases share (each revision has some)."""
    return {
        "image": image,
        "internal_port": 8080,
        "command": ["gunicorn", "-b", "0.0.0.0:8080", "shop:app"],
        "env": env,  # before env was encrypted
        "env_ciphertext": security.encrypt_env(env),
        "env_names": sorted(env),
        "memory_mb": 384,
        "cpus": 0.75,
        "pids": 200,
        "pull_policy": "if-not-present",
        "health_check_path": "/healthz",
        "health_check_running_seconds": None,
    }


def _apps() -> list[dict[str, Any]]:
    shop = {
        "id": 1,
        "name": "shop",
        "owner_id": 2,
        "status": "running",
        "container_id": "c" * 64,
        "container_name": "minipaas-app-1-2",
        "published_port": 32768,
        "created_at": AT,
        "updated_at": AT,
        **_run_settings(SHOP_ENV, "registry.example.com/shop:1.4"),
    }
    blog = {
        "id": 2,
        "name": "blog",
        "owner_id": 1,
        "status": "stopped",
        "status_detail": "stopped by its owner",
        "created_at": AT,
        "updated_at": AT,
        **_run_settings({}, "ghost:5"),
    }
    return [shop, blog]


def _deployments() -> list[dict[str, Any]]:
    rows = []
    for number, tag in ((1, "1.3"), (2, "1.4")):
        rows.append(
            {
                "id": number,
                "app_id": 1,
                "status": "succeeded",
                "image_id": IMAGE_IDS[number],
                "app_status_before": "running" if number == 2 else "created",
                "release_number": number,
                "container_id": ("d" if number == 1 else "c") * 64,
                "container_name": f"minipaas-app-1-{number}",
                "published_port": 32767 + number,
                "created_at": AT + timedelta(minutes=number),
                "dispatched_at": AT + timedelta(minutes=number),
                "started_at": AT + timedelta(minutes=number),
                "finished_at": AT + timedelta(minutes=number, seconds=3),
                "duration_seconds": 3.0,
                **_run_settings(SHOP_ENV, f"registry.example.com/shop:{tag}"),
            }
        )
    rows.append(
        {
            "id": 3,
            "app_id": 2,
            "status": "failed",
            "error": "the image ghost:5 could not be pulled: not found",
            "app_status_before": "created",
            "created_at": AT,
            "finished_at": AT + timedelta(seconds=1),
            **_run_settings({}, "ghost:5"),
        }
    )
    return rows


def _releases() -> list[dict[str, Any]]:
    return [
        {
            "id": number,
            "app_id": 1,
            "number": number,
            "deployment_id": number,
            "image_id": IMAGE_IDS[number],
            "created_at": AT + timedelta(minutes=number),
            **_run_settings(SHOP_ENV, f"registry.example.com/shop:{tag}"),
        }
        for number, tag in ((1, "1.3"), (2, "1.4"))
    ]


EVENT_KINDS = ["queued", "started", "image", "container", "healthy", "route", "succeeded"]


def _events() -> list[dict[str, Any]]:
    return [
        {"id": i + 1, "deployment_id": 2, "kind": kind, "message": f"{kind}: step {i}", "at": AT}
        for i, kind in enumerate(EVENT_KINDS)
    ]


def _audit() -> list[dict[str, Any]]:
    return [
        {
            "id": 1,
            "actor_id": 1,
            "actor": "alice",
            "action": "POST /users",
            "target": "/users",
            "outcome": "201",
            "client_ip": "127.0.0.1",
            "created_at": AT,
        },
        {
            "id": 2,
            "actor_id": 2,
            "actor": "bob",
            "action": "POST /apps/{app_id}/deploy",
            "target": "/apps/1/deploy",
            "outcome": "202",
            "client_ip": "10.0.0.7",
            "created_at": AT + timedelta(minutes=2),
        },
    ]


# Parents first; apps.current_deployment_id is set once the deployments exist
ROWS = (
    ("users", _users),
    ("api_tokens", _tokens),
    ("apps", _apps),
    ("deployments", _deployments),
    ("releases", _releases),
    ("deployment_events", _events),
    ("audit_events", _audit),
)


def _filler(column: Any) -> Any:
    """A plain value for a NOT NULL column this test does not know."""
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 1
    if isinstance(kind, Float):
        return 1.0
    if isinstance(kind, DateTime):
        return AT
    if isinstance(kind, JSON):
        return []
    if isinstance(kind, String):
        return "x"
    raise AssertionError(f"no plain value for {column.table.name}.{column.name} ({kind})")


def _fill(engine: Engine) -> set[str]:
    """Inserts the rows into the tables this revision has; returns those tables."""
    metadata = MetaData()
    metadata.reflect(engine)
    filled = set()
    with engine.begin() as connection:
        for name, rows in ROWS:
            table: Table | None = metadata.tables.get(name)
            if table is None:
                continue
            for row in rows():
                values = {key: value for key, value in row.items() if key in table.c}
                for column in table.c:
                    needs_value = not column.nullable and column.server_default is None
                    if needs_value and column.name not in values and not column.primary_key:
                        values[column.name] = _filler(column)
                connection.execute(table.insert().values(**values))
            filled.add(name)
            if name == "deployments":
                apps = metadata.tables["apps"]
                connection.execute(
                    update(apps).where(apps.c.id == 1).values(current_deployment_id=2)
                )
        for table in metadata.tables.values():  # ids inserted by hand: sequences move past them
            if "id" in table.c and isinstance(table.c.id.type, Integer):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false) "
                    f"WHERE pg_get_serial_sequence('{table.name}', 'id') IS NOT NULL"
                )
    return filled


def _check(engine: Engine, filled: set[str]) -> None:
    """Every row reads back right at head, through the services and the API's schemas."""
    with Session(engine) as db:
        if "users" in filled:
            shown = [
                UserOut.model_validate(user).model_dump()
                for user in users.list_users(db=db, limit=10, offset=0)[0]
            ]
            assert [(u["username"], u["role"]) for u in shown] == [
                ("alice", "admin"),
                ("bob", "member"),
            ]
        if "api_tokens" in filled:
            for user_id, token in TOKENS.items():
                found = users.authenticate(db=db, token=token)
                assert found is not None and found.user.id == user_id, user_id
            assert users.authenticate(db=db, token=f"mp_{secrets.token_urlsafe(32)}") is None
            assert db.scalar(select(ApiToken.name).where(ApiToken.id == 2)) == "laptop-2"
        shop = db.get(App, 1)
        assert shop is not None and db.get(App, 2) is not None
        assert security.decrypt_env(shop.env_ciphertext) == SHOP_ENV
        app_out = AppOut.model_validate(shop).model_dump()
        assert app_out["env"] == dict.fromkeys(SHOP_ENV, "********")
        assert app_out["image"] == "registry.example.com/shop:1.4"
        assert app_out["command"] == ["gunicorn", "-b", "0.0.0.0:8080", "shop:app"]
        assert app_out["status"] == "running"
        assert app_out["published_port"] == 32768
        # Rows from before node addresses: NULL, the host's loopback, where they did run
        assert shop.published_address is None
        assert endpoint_of(shop) == Endpoint("127.0.0.1", 32768)
        if "users" in filled:
            assert app_out["owner_id"] == 2
        assert shop.run_settings().image == "registry.example.com/shop:1.4"
        blog = AppOut.model_validate(db.get(App, 2)).model_dump()
        assert (blog["name"], blog["status"], blog["env"]) == ("blog", "stopped", {})

        deployments = db.scalars(select(Deployment).order_by(Deployment.id)).all()
        assert [(d.id, d.app_id, str(d.status)) for d in deployments] == [
            (1, 1, "succeeded"),
            (2, 1, "succeeded"),
            (3, 2, "failed"),
        ]
        for deployment in deployments:
            DeploymentOut.model_validate(deployment)
        assert deployments[1].image == "registry.example.com/shop:1.4"
        assert deployments[1].image_id == IMAGE_IDS[2]
        assert deployments[2].error == "the image ghost:5 could not be pulled: not found"
        # the run settings a deployment snapshots decrypt with the same key
        assert security.decrypt_env(deployments[1].run_settings().env_ciphertext) == SHOP_ENV
        assert shop.current_deployment_id == 2

        if "releases" in filled:
            releases = db.scalars(select(Release).order_by(Release.number)).all()
            assert [(r.number, r.image_id) for r in releases] == [
                (1, IMAGE_IDS[1]),
                (2, IMAGE_IDS[2]),
            ]
            for release in releases:
                out = ReleaseOut.model_validate(release).model_dump()
                assert out["env"] == dict.fromkeys(SHOP_ENV, "********")
                assert security.decrypt_env(release.env_ciphertext) == SHOP_ENV
        if "deployment_events" in filled:
            kinds = db.scalars(
                select(DeploymentEvent.kind)
                .where(DeploymentEvent.deployment_id == 2)
                .order_by(DeploymentEvent.id)
            ).all()
            assert list(kinds) == EVENT_KINDS
        if "audit_events" in filled:
            audit = db.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
            assert [(a.actor, a.target, a.outcome) for a in audit] == [
                ("alice", "/users", "201"),
                ("bob", "/apps/1/deploy", "202"),
            ]


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    with throwaway_postgres() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Migrations encrypt env values with the platform's key: the test's own."""
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    get_settings.cache_clear()
    security.reset_cache()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
    security.reset_cache()


def _database(postgres: LocalPostgres, name: str) -> tuple[Engine, str]:
    postgres.create_database(name)
    url = URL.create(
        "postgresql+psycopg",
        username=postgres.user,
        password=postgres.password,
        host="127.0.0.1",
        port=postgres.port,
        database=name,
    )
    return create_engine(url), url.render_as_string(hide_password=False)


EARLIER = known_revisions()[0][:-1]


@pytest.mark.parametrize("revision", EARLIER)
def test_rows_written_at_an_earlier_revision_read_back_at_head(
    postgres: LocalPostgres, revision: str
) -> None:
    engine, url = _database(postgres, f"data_{revision}")
    try:
        migrate.upgrade(revision, database_url=url)
        filled = _fill(engine)
        migrate.upgrade("head", database_url=url)
        _check(engine, filled)
    finally:
        engine.dispose()


def test_the_last_revision_downgrades_and_upgrades_again_with_data(
    postgres: LocalPostgres,
) -> None:
    engine, url = _database(postgres, "data_downgrade")
    try:
        migrate.upgrade(EARLIER[0], database_url=url)
        filled = _fill(engine)
        migrate.upgrade("head", database_url=url)
        migrate.downgrade("-1", database_url=url)
        migrate.upgrade("head", database_url=url)
        _check(engine, filled)
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", [EARLIER[0], EARLIER[-1]])
def test_a_backup_of_an_older_schema_loads_onto_a_new_install_and_is_upgraded(
    postgres: LocalPostgres, revision: str, tmp_path: Path
) -> None:
    """What `platform restore` does with the database: pg_dump's archive of an older schema
    replaces a new install's (at head, in one transaction), then the migrations run."""
    source, source_url = _database(postgres, "backup_source")
    target, target_url = _database(postgres, "restore_target")
    try:
        migrate.upgrade(revision, database_url=source_url)
        filled = _fill(source)
        migrate.upgrade("head", database_url=target_url)  # the new install's empty schema
        dump = tmp_path / "database.dump"
        subprocess.run(
            [
                str(postgres_bin_dir() / "pg_dump"),
                "--format=custom",
                "--no-owner",
                "--no-acl",
                f"--file={dump}",
            ],
            env=backup._pg_env(_settings(postgres, "backup_source", tmp_path)),
            check=True,
        )
        assert backup.check_revision(revision) is True  # older: upgraded after the load
        backup.load_dump(_settings(postgres, "restore_target", tmp_path), dump)
        migrate.upgrade("head", database_url=target_url)
        _check(target, filled)
    finally:
        source.dispose()
        target.dispose()


def test_the_schema_revision_of_a_backup_is_checked() -> None:
    _chain, head = known_revisions()
    assert backup.check_revision(head) is False
    with pytest.raises(backup.RestoreRefused, match="newer than this mini-paas knows"):
        backup.check_revision("ffffffffffff")


def _settings(postgres: LocalPostgres, database: str, data_dir: Path) -> Settings:
    return Settings(
        postgres_host="127.0.0.1",
        postgres_port=postgres.port,
        postgres_user=postgres.user,
        postgres_password=postgres.password,
        postgres_db=database,
        data_dir=data_dir,
    )


def test_after_a_restore_every_app_meant_to_run_gets_its_current_release_queued(
    postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """services/restored_apps.py on restored rows: the containers they name are elsewhere."""
    # Whether the engine has a release's exact image only picks pinned-or-pulled; the round
    # trip (tests/faults/test_backup_restore.py) runs this against the real engine
    monkeypatch.setattr(restored_apps, "_image_here", lambda image_id: False)
    engine, url = _database(postgres, "restored_apps")
    try:
        migrate.upgrade("head", database_url=url)
        _fill(engine)
        with Session(engine) as db:
            # shop was mid-deploy when the backup was taken; "orphan" runs with no release
            interrupted = Deployment(
                app_id=1,
                status=DeploymentStatus.RUNNING,
                app_status_before=AppStatus.RUNNING,
                image="registry.example.com/shop:1.5",
                internal_port=8080,
                env_names=[],
                memory_mb=256,
                cpus=0.5,
                pids=256,
                pull_policy="if-not-present",
            )
            orphan = App(
                name="orphan",
                image="busybox",
                internal_port=80,
                status=AppStatus.RUNNING,
                owner_id=1,
                env_names=[],
                memory_mb=64,
                cpus=0.1,
                pids=64,
                pull_policy="never",
                container_id="e" * 64,
            )
            db.add_all([interrupted, orphan])
            db.commit()
            plan = restored_apps.bring_back_apps(db)
            assert (plan.redeployed, plan.failed, plan.requeued) == ([1], [orphan.id], [])

            db.refresh(interrupted)
            assert interrupted.status is DeploymentStatus.FAILED
            assert interrupted.error == restored_apps.INTERRUPTED
            shop = db.get(App, 1)
            assert shop is not None and shop.status is AppStatus.DEPLOYING
            assert shop.container_id is None and shop.current_deployment_id == 2
            queued = db.scalars(
                select(Deployment).where(
                    Deployment.app_id == 1, Deployment.status == DeploymentStatus.QUEUED
                )
            ).one()
            assert queued.dispatched_at is None  # the reconciler's first pass dispatches it
            # release 2 again, as it was: no new release is recorded when it succeeds
            assert (queued.rollback_to_release, queued.release_number) == (2, 2)
            assert queued.image == "registry.example.com/shop:1.4"
            assert security.decrypt_env(queued.env_ciphertext) == SHOP_ENV
            blog = db.get(App, 2)
            assert blog is not None and blog.status is AppStatus.STOPPED
            db.refresh(orphan)
            assert orphan.status is AppStatus.FAILED and orphan.container_id is None
            assert "no release to run" in (orphan.status_detail or "")
    finally:
        engine.dispose()
