"""`minipaas platform backup|restore`: the database and the secret key in one encrypted file.

A backup is PostgreSQL's own pg_dump (custom format) taken while the platform runs: its
snapshot is one transaction, so a deployment is in it whole or not at all. With it go
DATA_DIR/secret.key (tokens and env secrets are keyed by it) and a manifest; the install id
is recorded but not restored (see `restore_backup`).

A restore checks everything it can before it changes anything: the archive opens with the
passphrase, is whole, its members match the manifest's checksums, its schema is one this code
knows (an older one is upgraded after the restore), the database is empty. The database is
then replaced in one transaction, the key put in place, and every app meant to run gets a
deployment of its current release (services/restored_apps.py).

In the containerized install (docker-compose) no supervisor runs the programs: the operator
stops their containers, the restore runs in a one-off container and checks that nothing else
is connected to the database, and `docker-compose up -d` starts them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from minipaas import __version__, security
from minipaas.config import Settings
from minipaas.host.backup_archive import ArchiveError, ArchiveWriter, Secret, read_pieces
from minipaas.host.backup_record import LastBackup, write_last_backup
from minipaas.host.errors import HostServiceError
from minipaas.host.postgres import postgres_bin_dir

DUMP = "database.dump"
KEY = "secret.key"
MANIFEST = "manifest.json"
_MEMBERS = (DUMP, KEY)
SUFFIX = ".mpbackup"
# Set in the platform image (deploy/Dockerfile)
CONTAINERIZED_ENV = "MINIPAAS_CONTAINERIZED"


class RestoreRefused(Exception):
    """The restore was refused before anything changed; the message says why."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    seconds: float
    revision: str


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, object]
    upgraded_from: str | None  # the backup's revision, when it was upgraded to head
    redeployed: list[int]
    failed: list[int]
    seconds: float


def default_backup_path(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "backups" / f"{settings.instance_name}-{stamp}{SUFFIX}"


def _pg_env(settings: Settings) -> dict[str, str]:
    """libpq's variables: the password never shows in a process list."""
    return {
        **os.environ,
        "PGHOST": settings.postgres_host,
        "PGPORT": str(settings.postgres_port),
        "PGUSER": settings.postgres_user,
        "PGPASSWORD": settings.postgres_password,
        "PGDATABASE": settings.postgres_db,
        "PGCONNECT_TIMEOUT": "10",
    }


def _revision_of_database() -> str | None:
    from minipaas.db.session import get_engine

    with get_engine().connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _check_key_opens_the_database(key: bytes) -> None:
    """The key the archive keeps must be the one the database's values were encrypted with:
    a backup run with other settings (another SECRET_KEY, another DATA_DIR) would restore to
    apps whose env cannot be read and tokens that no longer match."""
    from minipaas.db.session import get_engine

    with get_engine().connect() as connection:
        sample = connection.execute(
            text("SELECT env_ciphertext FROM apps WHERE env_ciphertext IS NOT NULL LIMIT 1")
        ).scalar()
    if sample is not None and not security.key_opens(key, sample):
        raise HostServiceError(
            "the secret key this backup would keep does not open the database's values: run "
            "it with the platform's own settings (SECRET_KEY, DATA_DIR), as the platform runs"
        )


def make_backup(settings: Settings, secret: Secret, destination: Path | None) -> BackupResult:
    """Writes the archive next to its destination, then renames it into place (mode 0600)."""
    started = time.monotonic()
    secret.check_strong_enough()
    destination = destination or default_backup_path(settings)
    if destination.exists():
        raise HostServiceError(f"{destination} exists; give another file name")
    destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    revision = _revision_of_database()
    if revision is None:
        raise HostServiceError("the database has no schema yet: nothing to back up")
    try:
        key = security.key_material(settings)
    except security.SecretsUnreadable as exc:
        raise HostServiceError(str(exc)) from None
    _check_key_opens_the_database(key)
    remove_abandoned_partials(destination.parent)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            writer = ArchiveWriter(out, secret)
            members = {DUMP: _dump_into(settings, writer)}
            size, digest = writer.add_bytes(KEY, key)
            members[KEY] = {"size": size, "sha256": digest}
            manifest = {
                "format": 1,
                "platform_version": __version__,
                "alembic_revision": revision,
                "instance_name": settings.instance_name,
                "install_id": _install_id(settings),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "members": members,
            }
            writer.close(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_dir(destination.parent)
    seconds = time.monotonic() - started
    result = BackupResult(destination, destination.stat().st_size, seconds, revision)
    write_last_backup(
        settings,
        LastBackup(time.time(), str(destination.resolve()), result.size_bytes, round(seconds, 3)),
    )
    return result


def remove_abandoned_partials(directory: Path) -> list[Path]:
    """Removes the half-written archives of backups whose process is gone (killed: a backup
    that fails removes its own); returns them. Only files named as make_backup names them,
    untouched for ABANDONED_AFTER (a backup writing from another host or container keeps
    its file fresh), and never one whose process is alive here."""
    removed: list[Path] = []
    for found in directory.glob(f".*{SUFFIX}.*.partial"):
        pid = _PARTIAL_PID.fullmatch(found.name)
        if pid is None or _process_alive(int(pid.group(1))):
            continue
        try:
            if time.time() - found.stat().st_mtime < ABANDONED_AFTER.total_seconds():
                continue
            found.unlink()
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        removed.append(found)
    return removed


# ".<archive name>.<pid>.partial", as make_backup names them
_PARTIAL_PID = re.compile(r"\..+" + re.escape(SUFFIX) + r"\.(\d+)\.partial")
ABANDONED_AFTER = timedelta(minutes=10)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process (or not a pid): keep
        return True
    return True


def _dump_into(settings: Settings, writer: ArchiveWriter) -> dict[str, object]:
    """pg_dump's output streamed into the archive: nothing unencrypted touches the disk."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [str(postgres_bin_dir() / "pg_dump"), "--format=custom", "--no-owner", "--no-acl"],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_pg_env(settings),
        )
        assert process.stdout is not None
        try:
            size, digest = writer.add_stream(DUMP, process.stdout)
        finally:
            code = process.wait()
        if code != 0:
            errors.seek(0)
            why = errors.read().decode(errors="replace").strip()
            raise HostServiceError(f"pg_dump failed ({code}): {why}")
    return {"size": size, "sha256": digest}


def _install_id(settings: Settings) -> str | None:
    try:
        return settings.install_id_file.read_text().strip() or None
    except OSError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_archive(archive: Path, secret: Secret, into: Path) -> dict[str, object]:
    """Decrypts the members into `into` and checks them against the manifest."""
    digests = {name: hashlib.sha256() for name in _MEMBERS}
    sizes = dict.fromkeys(_MEMBERS, 0)
    handles: dict[str, IO[bytes]] = {}
    manifest: dict[str, object] | None = None
    try:
        with archive.open("rb") as source:
            for piece in read_pieces(source, secret):
                if piece.last:
                    if piece.name != MANIFEST:
                        raise ArchiveError("the archive ends without its manifest")
                    manifest = json.loads(piece.data)
                    break
                if piece.name not in _MEMBERS:
                    raise ArchiveError(f"the archive holds an unknown part {piece.name!r}")
                if piece.name not in handles:
                    handles[piece.name] = (into / piece.name).open("wb")
                handles[piece.name].write(piece.data)
                digests[piece.name].update(piece.data)
                sizes[piece.name] += len(piece.data)
    except FileNotFoundError:
        raise ArchiveError(f"{archive} does not exist") from None
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError("the archive's manifest is damaged") from None
    finally:
        for handle in handles.values():
            handle.close()
    assert manifest is not None
    members = manifest.get("members")
    if not isinstance(members, dict) or set(members) != set(_MEMBERS):
        raise ArchiveError("the archive's manifest does not list its parts")
    for name in _MEMBERS:
        expected = members[name]
        if expected.get("size") != sizes[name] or expected.get("sha256") != (
            digests[name].hexdigest()
        ):
            raise ArchiveError(f"{name} in the archive does not match its checksum")
    return manifest


def known_revisions() -> tuple[list[str], str]:
    """Every revision of this code's chain, oldest first, and its head."""
    from minipaas.db import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql+psycopg://"))
    chain = [revision.revision for revision in script.walk_revisions()]
    chain.reverse()
    return chain, chain[-1]


def check_revision(revision: object) -> bool:
    """True when the backup's schema is older than the code's (upgraded after the restore)."""
    chain, head = known_revisions()
    if revision not in chain:
        raise RestoreRefused(
            f"the backup's database schema (revision {revision}) is newer than this "
            f"mini-paas knows (its newest is {head}): restore it with the version of mini-paas "
            "that made it, or a newer one"
        )
    return revision != head


def check_secret_key_setting(settings: Settings, key: bytes) -> None:
    if settings.secret_key is not None and settings.secret_key.get_secret_value().encode() != key:
        raise RestoreRefused(
            "SECRET_KEY is set in the environment (or .env) and is not the backup's key: "
            "unset it, so the restored DATA_DIR/secret.key is used (or set it to the backup's)"
        )


def existing_data() -> str | None:
    """What the database holds beyond a new install's admin; None when it is empty."""
    from minipaas.db.session import get_engine

    with get_engine().connect() as connection:
        tables = set(inspect(connection).get_table_names())
        if "apps" not in tables:
            return None
        counts = {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)
            for table in ("apps", "deployments", "users")
            if table in tables
        }
    counts["users"] = max(0, counts.get("users", 0) - 1)  # the admin `up` made
    held = [f"{count} {table}" for table, count in counts.items() if count]
    return ", ".join(held) if held else None


def load_dump(settings: Settings, dump: Path) -> None:
    """Replaces the whole schema with the dump's, in one transaction: all of it or nothing.

    pg_restore writes the SQL beside the dump first (the same private directory): psql then
    runs a script known to be whole, never one cut short by a pg_restore that failed midway.
    """
    bindir = postgres_bin_dir()
    env = _pg_env(settings)
    script = dump.with_name("restore.sql")
    made = subprocess.run(
        [str(bindir / "pg_restore"), "--no-owner", "--no-acl", f"--file={script}", str(dump)],
        capture_output=True,
        env=env,
        check=False,
    )
    if made.returncode != 0:
        why = made.stderr.decode(errors="replace").strip()
        raise HostServiceError(f"pg_restore failed ({made.returncode}), nothing was changed: {why}")
    applied = subprocess.run(
        [
            str(bindir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--single-transaction",
            "--command=DROP SCHEMA public CASCADE",
            "--command=CREATE SCHEMA public",
            f"--file={script}",
        ],
        capture_output=True,
        env=env,
        check=False,
    )
    if applied.returncode != 0:
        why = applied.stderr.decode(errors="replace").strip()
        raise HostServiceError(f"loading the dump failed, nothing was changed: {why}")


def interrupted_restore_marker(settings: Settings) -> Path:
    """Present while a restore replaces the database and key, and after one was killed."""
    return settings.data_dir / "restore-in-progress"


def install_key(settings: Settings, key: bytes) -> None:
    """DATA_DIR/secret.key, replaced whole (mode 0600)."""
    path = settings.secret_key_file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.restore")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    security.reset_cache()


def restore_backup(
    settings: Settings,
    archive: Path,
    secret: Secret,
    *,
    force: bool,
    say: Callable[[str], None],
) -> RestoreResult:
    """Restores onto this install (started first if it is not running).

    The install id stays this install's own: the id says which containers an install made,
    and the backed-up install's containers are not on this engine (or, on the same engine,
    still belong to the old install, which the id check at `up` keeps apart).
    """
    started = time.monotonic()
    if not archive.is_file():
        raise ArchiveError(f"{archive} is not a file")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for stale in settings.data_dir.glob(".restore-*"):
        # Left by a restore that was killed: a decrypted dump and key, nothing to keep
        shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=".restore-", dir=settings.data_dir))
    try:
        say(f"checking {archive} ...")
        manifest = open_archive(archive, secret, workdir)
        revision = str(manifest.get("alembic_revision"))
        upgrade = check_revision(revision)
        key = (workdir / KEY).read_bytes().strip()
        check_secret_key_setting(settings, key)
        result = _replace_platform_data(settings, workdir, key, force=force, say=say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RestoreResult(
        manifest=manifest,
        upgraded_from=revision if upgrade else None,
        redeployed=result.redeployed,
        failed=result.failed,
        seconds=time.monotonic() - started,
    )


def containerized() -> bool:
    """In the platform image (docker-compose), where no supervisor runs the programs."""
    return os.environ.get(CONTAINERIZED_ENV) == "1"


COMPOSE_RESTORE_STEPS = (
    "in the containerized install, stop the platform's programs and restore from a one-off "
    "container, then start them again:\n"
    "  docker-compose stop api worker builder\n"
    "  docker-compose run --rm --no-deps api "
    "minipaas platform restore /var/lib/minipaas/backups/FILE.mpbackup\n"
    "  docker-compose up -d"
)


def other_sessions() -> int:
    """Connections of other processes (the API, workers, builders) to the database."""
    from minipaas.db.session import get_engine

    with get_engine().connect() as connection:
        found = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        ).scalar()
    return int(found or 0)


def _replace_in_container(
    settings: Settings, workdir: Path, key: bytes, *, force: bool, say: Callable[[str], None]
) -> RestoredApps:
    """The compose restore: the operator stopped the API, worker and builder containers
    (checked: nobody else is connected to the database); `docker-compose up -d` starts them,
    and the worker's `router publish` loads the routes from the restored database."""
    others = other_sessions()
    if others:
        raise RestoreRefused(
            f"{others} other connection(s) to the database: the API, worker or builder still "
            f"run. A restore replaces the database under them; {COMPOSE_RESTORE_STEPS}"
        )
    marker = _check_target(settings, force=force, elsewhere="another compose project", say=say)
    marker.write_text(f"restore started at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    restored = _load_platform_data(settings, workdir, key, say=say)
    say("done: start the platform again with `docker-compose up -d`")
    return restored


def _check_target(
    settings: Settings, *, force: bool, elsewhere: str, say: Callable[[str], None]
) -> Path:
    """Refuses a database that holds data (unless forced); returns the restore's marker."""
    marker = interrupted_restore_marker(settings)
    held = existing_data()
    if marker.exists():
        say("a restore was interrupted here: this one replaces what it left")
    elif held and not force:
        raise RestoreRefused(
            f"the database of this install is not empty (it holds {held}): a restore replaces "
            f"all of it. Restore onto a new install ({elsewhere}), or pass --force"
        )
    return marker


def _load_platform_data(
    settings: Settings, workdir: Path, key: bytes, *, say: Callable[[str], None]
) -> RestoredApps:
    """The dump, the key, the migrations and the apps' redeployments; then the marker goes."""
    from minipaas.db import migrate
    from minipaas.db.session import dispose_engines, get_session
    from minipaas.services import restored_apps

    say("loading the database ...")
    load_dump(settings, workdir / DUMP)
    dispose_engines()  # pooled connections knew the old schema
    install_key(settings, key)
    say("migrations ...")
    migrate.upgrade("head")
    with get_session() as db:
        plan = restored_apps.bring_back_apps(db)
    # The new install's generated admin token died with its database
    settings.admin_token_file.unlink(missing_ok=True)
    interrupted_restore_marker(settings).unlink()
    return RestoredApps(plan.redeployed, plan.failed)


def _replace_platform_data(
    settings: Settings, workdir: Path, key: bytes, *, force: bool, say: Callable[[str], None]
) -> RestoredApps:
    from minipaas.config import get_settings
    from minipaas.host import platform
    from minipaas.host.supervisor import Supervisor
    from minipaas.services import routing

    if containerized():
        return _replace_in_container(settings, workdir, key, force=force, say=say)
    if Supervisor(settings).pid() is None:
        say("the platform is not running here: starting it (a new, empty install) ...")
        platform.up(settings, say)
        settings = get_settings()  # with the database password `up` may have generated
    marker = _check_target(settings, force=force, elsewhere="another DATA_DIR", say=say)
    programs = [platform.service(settings, name) for name in ("builder", "worker", "api")]
    # Until the end: a restore killed half way is said by `up` and finished by the next one
    marker.write_text(f"restore started at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    say("stopping the API, the worker and the builder ...")
    for program in programs:
        program.stop()
    try:
        restored = _load_platform_data(settings, workdir, key, say=say)
    finally:
        say("starting the API, the worker and the builder ...")
        for program in reversed(programs):
            program.start()
    routing.sync_routes()
    platform.wait_until_ready(settings)
    return restored


@dataclass(frozen=True)
class RestoredApps:
    redeployed: list[int]
    failed: list[int]
