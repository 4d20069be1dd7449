"""Compares the database with the Docker engine and the router, and repairs the difference.

Runs in the worker: once at start (so a worker killed mid-deploy is cleaned up when it comes
back) and then every RECONCILE_INTERVAL_SECONDS. Every repair of an app happens under the
app's advisory lock, taken without waiting: an app a job is working on is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipaas import metrics, queue
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    Action,
    ActionStatus,
    App,
    AppAction,
    AppReplica,
    AppStatus,
    Deployment,
    DeploymentStatus,
    Release,
)
from minipaas.db.session import (
    close_idle_connections,
    database_unavailable,
    get_session,
    outage_detail,
)
from minipaas.router.errors import RouterError
from minipaas.runtime import get_runtime, image_turns, labels
from minipaas.runtime.base import LOOPBACK, ContainerState, Endpoint
from minipaas.runtime.docker_runtime import DockerRuntime
from minipaas.services import app_actions, certificates, healing, images, lifecycle, routing
from minipaas.services.app_lock import try_app_lock
from minipaas.services.builds import recovery as build_recovery
from minipaas.services.deployments import dispatch
from minipaas.services.deployments.recovery import end_abandoned_deployment
from minipaas.services.endpoints import endpoint_of, set_endpoint
from minipaas.services.job_results import FailureKind
from minipaas.worker import jobs, liveness
from minipaas.worker.certificate_orders import CertificateOrderThread
from minipaas.worker.healer import HealerThread
from minipaas.worker.prober import ProberThread

log = logging.getLogger(__name__)

# A queued deployment whose job Redis does not know is re-queued after this long
LOST_JOB_GRACE = timedelta(seconds=30)
# Containers of this instance that nobody knows are removed when older than this
UNKNOWN_CONTAINER_GRACE = timedelta(seconds=60)
# An image pulled this recently is not collected: its deployment may not have recorded it yet
PULL_GRACE = timedelta(minutes=10)


def reconcile_once() -> list[str]:
    """One pass; returns what it did, one line per repair."""
    actions: list[str] = []
    for step in _steps():
        try:
            done = step()
        except Exception as exc:  # one broken step (engine or database down) must not stop the rest
            _log_failure(f"step {step.__name__}", exc)
            continue
        if done:
            metrics.RECONCILER_ACTIONS.labels(_step_name(step)).inc(len(done))
        actions.extend(done)
    for action in actions:
        log.info("reconciler: %s", action)
    return actions


def _end_abandoned_deployments() -> list[str]:
    """A running deployment whose app lock is free and whose job no live worker runs has
    no worker any more (a database restart frees the lock of a job that still runs)."""
    actions = []
    with get_session() as db:
        running = db.execute(
            select(Deployment.id, Deployment.app_id).where(
                Deployment.status == DeploymentStatus.RUNNING
            )
        ).all()
    for deployment_id, app_id in running:
        with _one_item(f"deployment {deployment_id}"), try_app_lock(app_id) as free:
            job_id = jobs.deploy_job_id(deployment_id)
            if not free or liveness.job_in_progress(job_id):
                continue
            end_abandoned_deployment(deployment_id, _abandoned_reason(job_id))
            actions.append(f"ended deployment {deployment_id} left by a stopped worker")
    return actions


def _abandoned_reason(job_id: str) -> str:
    run = queue.job_run(job_id)
    if run is not None and run.status in ("finished", "failed", "stopped", "canceled"):
        return (
            f"its job ended ({run.status}) before it could record the outcome (the database "
            "was unreachable for too long?); deploy again"
        )
    return (
        "the worker carrying out this deployment stopped (killed or crashed) before it "
        "ended; deploy again"
    )


@contextmanager
def _one_item(what: str) -> Iterator[None]:
    """One broken app or deployment must not stop the repair of the others."""
    try:
        yield
    except Exception as exc:
        _log_failure(what, exc)


def _log_failure(what: str, exc: Exception) -> None:
    """An outage of PostgreSQL or Redis is one line per pass; anything else is a bug."""
    if isinstance(exc, queue.QueueUnavailable | RedisError):
        log.warning("reconciler: %s skipped: %s", what, exc)
    elif database_unavailable(exc):
        log.warning(
            "reconciler: %s skipped: the database is unreachable (%s)", what, outage_detail(exc)
        )
    else:
        log.exception("reconciler: %s failed", what)


def _requeue_lost_jobs() -> list[str]:
    """Queued deployments whose job Redis lost (restart without its data) are queued again."""
    actions = []
    cutoff = datetime.now(UTC) - LOST_JOB_GRACE
    with get_session() as db:
        queued = db.execute(
            select(Deployment.id).where(
                # One still waiting for its owner's slot has no job yet (dispatch.py)
                Deployment.status == DeploymentStatus.QUEUED,
                Deployment.dispatched_at < cutoff,
            )
        ).all()
    for (deployment_id,) in queued:
        job_id = jobs.deploy_job_id(deployment_id)
        if liveness.job_in_progress(job_id):
            continue  # on its way: in the queue, or running on a live worker
        status = queue.job_status(job_id)
        # Lost (Redis restarted without it) or ended without ending the row (it failed
        # before it could, e.g. with the database down): the job is idempotent, run it again
        queue.delete_job(job_id)
        jobs.enqueue_deploy(deployment_id)
        actions.append(
            f"queued deployment {deployment_id} again: its job was "
            + ("lost" if status is None else f"{status} but never run")
        )
    return actions


def _match_app_status_to_containers() -> list[str]:
    """Apps shown running have a running container, at the endpoint the route uses.

    A container that stopped is the healer's (worker/healer.py, every 0.5 s): this slower
    pass only catches what it would miss, and follows a port (or node) that moved.
    """
    actions = []
    with get_session() as db:
        apps = db.execute(
            select(App.id, App.container_id, App.published_address, App.published_port).where(
                App.status == AppStatus.RUNNING, App.container_id.is_not(None)
            )
        ).all()
    if not apps:
        return []
    # One list call for every app; only an app that looks wrong is looked at again, under
    # its lock (a deploy may have moved it on since the query above)
    endpoints = get_runtime().running_endpoints()
    for app_id, container_id, address, port in apps:
        stored = None if port is None else Endpoint(address or LOOPBACK, port)
        if container_id in endpoints and endpoints[container_id] in (None, stored):
            continue
        with _one_item(f"app {app_id}"):
            if container_id not in endpoints:
                done = healing.note_crash(app_id)
            else:
                done = _follow_published_port(app_id)
            if done:
                actions.append(done)
    return actions


def _stop_what_stopped_apps_run() -> list[str]:
    """A stopped app runs nothing. A stop is recorded before its containers are stopped (so
    the healer never starts them again meanwhile): a worker killed in between, or during a
    start that had not yet recorded itself, left a container running for good, and a second
    stop was refused because the app is stopped already."""
    with get_session() as db:
        stopped = db.execute(
            select(App.id, App.container_id).where(
                App.status == AppStatus.STOPPED, App.container_id.is_not(None)
            )
        ).all()
        if not stopped:
            return []
        containers: dict[int, set[str]] = {app_id: {str(cid)} for app_id, cid in stopped}
        for app_id, container_id in db.execute(
            select(AppReplica.app_id, AppReplica.container_id).where(
                AppReplica.app_id.in_(containers)
            )
        ).tuples():
            containers[app_id].add(container_id)
    running = get_runtime().running_endpoints()
    actions = []
    for app_id, ids in containers.items():
        if ids.isdisjoint(running):
            continue
        with _one_item(f"app {app_id}"):
            done = _stop_running_containers_of_stopped(app_id)
            if done:
                actions.append(done)
    return actions


@contextmanager
def _app_if(app_id: int, status: AppStatus) -> Iterator[tuple[App | None, Session]]:
    """The app as it is now, under its lock and its row's, if it is in `status` (else None):
    a job working on the app holds the lock, and a query before it may be stale."""
    with try_app_lock(app_id) as free, get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        yield (app if free and app is not None and app.status is status else None), db


def _stop_running_containers_of_stopped(app_id: int) -> str | None:
    """A stop still in its grace period holds the app's lock: left to it."""
    runtime = get_runtime()
    with _app_if(app_id, AppStatus.STOPPED) as (app, _):
        if app is None:
            return None
        ids = [app.container_id, *(replica.container_id for replica in app.extra_replicas)]
        running = [cid for cid in ids if cid is not None and _running(runtime.state(cid))]
        for container_id in running:
            runtime.stop(container_id)
    if not running:
        return None
    return f"app {app_id}: stopped {len(running)} container(s) still running while stopped"


def _running(state: ContainerState | None) -> bool:
    return state is not None and state.running


def _converge_replicas() -> list[str]:
    """A running app with more or fewer replicas than it is set to (a scale its PATCH could
    not queue, or set during a deploy of the old count) gets a scale action. Not after a
    scale that failed on its own terms (a replica never healthy): its owner reads why and
    asks again (or deploys)."""
    extras = (
        select(func.count()).where(AppReplica.app_id == App.id).correlate(App).scalar_subquery()
    )
    with get_session() as db:
        drifted = db.scalars(
            select(App.id).where(
                App.status == AppStatus.RUNNING,
                App.container_id.is_not(None),
                App.replicas != extras + 1,
            )
        ).all()
        actions = []
        for app_id in drifted:
            last = db.scalar(
                select(AppAction)
                .where(AppAction.app_id == app_id)
                .order_by(AppAction.id.desc())
                .limit(1)
            )
            if (
                last
                and last.action is Action.SCALE
                and last.status is ActionStatus.FAILED
                # a scale cut short (its worker died, the engine was down) is asked again
                and last.failure != FailureKind.UNAVAILABLE
            ):
                continue
            row = app_actions.request_scale(db=db, app_id=app_id, user=None)
            if row is not None:
                actions.append(f"app {app_id}: scale queued (action {row.id})")
    return actions


def _follow_published_port(app_id: int) -> str | None:
    runtime = get_runtime()
    with _app_if(app_id, AppStatus.RUNNING) as (app, db):
        if app is None:
            return None
        assert app.container_id is not None
        endpoint = runtime.published_endpoint(app.container_id)
        if endpoint is None or endpoint == endpoint_of(app):
            return None
        set_endpoint(app, endpoint)
        app.unhealthy_since = None  # restarted by the engine: the prober judges it afresh
        db.commit()
    return f"app {app_id}: published port moved to {endpoint}"


def _remove_unknown_containers() -> list[str]:
    """Containers this install made (stamped with its id) that no app or active deployment
    owns.

    Another install with the same INSTANCE_NAME has its own database: what it made is never
    ours to judge. Unstamped ones (made before install ids) are left alone too: nothing says
    whose they are. Checked again under the app's lock: a deploy switching routes still needs
    the container it is about to retire.
    """
    runtime = get_runtime()
    actions = []
    now = time.time()
    containers = runtime.platform_containers()
    # Owned now, read in one go: skipping one is always safe (removal is re-checked under
    # the app's lock below); one query per container took ~1 ms each
    with get_session() as db:
        known = set(db.scalars(select(App.container_id).where(App.container_id.is_not(None))))
        known.update(db.scalars(select(AppReplica.container_id)))
        deploying = set(
            db.scalars(
                select(Deployment.app_id).where(Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES))
            )
        )
    for container_id, container_labels, created in containers:
        if not _made_here(container_labels, runtime.install_id):
            continue
        if created.isdigit() and now - int(created) < UNKNOWN_CONTAINER_GRACE.total_seconds():
            continue
        app_id = labels.app_id_of(container_labels)
        if container_id in known or app_id in deploying:
            continue
        with _one_item(f"container {container_id[:12]}"):
            if app_id is None:
                owned = False
            else:
                with try_app_lock(app_id) as free:
                    owned = not free or _owned(container_id, app_id)
                    if not owned:
                        runtime.remove(container_id)
            if app_id is None:
                runtime.remove(container_id)
            if not owned:
                actions.append(
                    f"removed container {container_id[:12]} (app {app_id or '?'}) "
                    "that no app or deployment owns"
                )
    return actions


def _remove_networks_of_deleted_apps() -> list[str]:
    """Networks of apps that no longer exist (Swarm: one per app). Deleting an app removes
    its network after its services; a worker killed in between, or a task slow to leave the
    network, leaves one behind, which would hold one of the engine's subnets for good."""
    runtime = get_runtime()
    with_networks = runtime.app_network_ids()
    if not with_networks:
        return []
    with get_session() as db:
        existing = set(db.scalars(select(App.id).where(App.id.in_(with_networks))))
    actions = []
    for app_id in with_networks:
        if app_id in existing:
            continue
        with _one_item(f"network of app {app_id}"):
            if runtime.remove_app_network(app_id):
                actions.append(f"removed the network of deleted app {app_id}")
    return actions


def _made_here(container_labels: dict[str, str], install_id: str | None) -> bool:
    return install_id is not None and labels.install_id_of(container_labels) == install_id


def _owned(container_id: str, app_id: int) -> bool:
    with get_session() as db:
        app = db.get(App, app_id)
        if app is not None and app.container_id == container_id:
            return True
        if app is not None and any(r.container_id == container_id for r in app.extra_replicas):
            return True
        active = db.scalar(
            select(Deployment.id).where(
                Deployment.app_id == app_id,
                Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES),
            )
        )
    return active is not None  # a deploy in progress owns the app's containers


def _remove_old_release_images() -> list[str]:
    """The platform's own images that nothing needs any more are removed, so disks do not fill.

    Only the platform's images are candidates: those it pulled (services/images.py: also the
    pulls of failed deploys and of deleted apps) and, among older releases' images, those one
    of its builds made (the image id the builds table recorded; never a label, which an image
    built FROM ours inherits). An image someone else put on the host is never removed, even
    if a member ran it. Kept: the images of the newest KEEP_RELEASE_IMAGES releases of every
    app (those releases stay rollback-able), of active deployments, the images apps are
    configured with now, and any image a container (ours or not, running or not) uses.
    """
    with image_turns.removing() as our_turn:  # another install's build runs: the next pass
        return _collect_unused_images() if our_turn else []


def _collect_unused_images() -> list[str]:
    """_remove_old_release_images's work, while no build runs on the host."""
    keep_count = get_settings().keep_release_images
    runtime = get_runtime()
    with get_session() as db:
        if images.a_build_is_running(db):
            return []  # the next pass collects
        ranked = (
            select(
                Release.image_id,
                func.row_number()
                .over(partition_by=Release.app_id, order_by=Release.number.desc())
                .label("rank"),
            )
        ).subquery()
        rows = db.execute(select(ranked.c.image_id, ranked.c.rank)).all()
        configured, in_flight = _images_named(db)
        pulled = images.pulled_before(db, datetime.now(UTC) - PULL_GRACE)
        recent = {image_id for image_id, rank in rows if rank <= keep_count}
        old = {image_id for image_id, rank in rows if rank > keep_count} - recent
        built = images.built_here(db, old)
    candidates = pulled | built
    if not candidates:
        return []
    keep = recent | runtime.images_in_use() | build_recovery.recent_build_image_ids()
    keep |= in_flight
    keep |= {image_id for ref in configured if (image_id := runtime.image_id(ref))}
    actions, gone = [], []
    for image_id in sorted(candidates - keep):
        if image_id in _named_since(configured, runtime):
            continue  # an app or a deployment took it up since the lists above were read
        present = image_id.startswith("sha256:") and runtime.image_id(image_id) is not None
        if present and not runtime.remove_image(image_id):
            continue  # Docker refused: a container or another name still uses it
        gone.append(image_id)
        if present:
            why = "pulled by the platform" if image_id in pulled else "of old releases"
            actions.append(f"removed image {image_id[:19]} ({why}) that nothing uses")
    with get_session() as db:
        images.forget(db, [image_id for image_id in gone if image_id in pulled])
    return actions


def _named_since(configured: set[str], runtime: DockerRuntime) -> set[str]:
    """Ids of images an app names now that it did not when `configured` was read, and of
    active deployments' images: looked at again just before each removal, so an app created
    meanwhile keeps its image (the window left is one removal's)."""
    with get_session() as db:
        names, in_flight = _images_named(db)
    new_names = names - configured
    return in_flight | {image_id for ref in new_names if (image_id := runtime.image_id(ref))}


def _images_named(db: Session) -> tuple[set[str], set[str]]:
    """The image references apps name, and the image ids active deployments run."""
    configured = set(db.scalars(select(App.image).distinct()))
    in_flight = db.execute(
        select(Deployment.pinned_image_id, Deployment.image_id).where(
            Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES)
        )
    ).all()
    return configured, {image_id for pair in in_flight for image_id in pair if image_id}


def _republish_routes() -> list[str]:
    """nginx runs, and its route table is the database's; a killed nginx is brought back."""
    try:
        repaired = routing.sync_routes()
    except (RouterError, ValueError) as exc:
        log.error("router: %s", exc)
        return []
    return [repaired] if repaired else []


def _steps() -> tuple[Callable[[], list[str]], ...]:
    return (
        _end_abandoned_deployments,
        _requeue_lost_jobs,
        dispatch.dispatch_all_waiting,
        app_actions.requeue_lost_actions,
        lifecycle.requeue_lost_deletes,
        _match_app_status_to_containers,
        _stop_what_stopped_apps_run,
        _converge_replicas,
        _remove_unknown_containers,
        _remove_networks_of_deleted_apps,
        _remove_old_release_images,
        build_recovery.end_abandoned_builds,
        build_recovery.deploy_builds_left_undeployed,
        build_recovery.remove_old_build_images,
        build_recovery.remove_leftover_build_networks,
        build_recovery.remove_stale_uploads,
        _republish_routes,
        certificates.sync_tls,  # ACME orders run in their own loop (certificate_orders.py)
    )


def _step_name(step: Callable[[], list[str]]) -> str:
    return step.__name__.strip("_")


class ReconcilerThread(threading.Thread):
    """Runs reconcile_once every interval until stopped; never dies of an exception.

    Starts and stops the healer's faster loop (worker/healer.py), the replicas' probes
    (worker/prober.py) and the certificate orders' loop (worker/certificate_orders.py) with it.
    """

    def __init__(self, interval: float) -> None:
        super().__init__(name="reconciler", daemon=True)
        for step in _steps():  # every step shows in /metrics, at 0 until it repairs something
            metrics.RECONCILER_ACTIONS.labels(_step_name(step))
        self.interval = interval
        self._stopping = threading.Event()
        self.healer = HealerThread()
        self.prober = ProberThread()
        self.certificate_orders = CertificateOrderThread(interval)

    def start(self) -> None:
        self.healer.start()
        self.prober.start()
        self.certificate_orders.start()
        super().start()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                # This process's pooled connections that waited too long (db/pools.py)
                close_idle_connections()
            except Exception:
                log.exception("closing idle database connections failed")
            # Several workers run this thread: one pass per interval for the whole platform
            if not queue.claim_turn("reconciler", self.interval):
                continue
            try:
                reconcile_once()
            except Exception:
                log.exception("reconciler pass failed")

    def stop(self) -> None:
        self.healer.stop()
        self.prober.stop()
        self.certificate_orders.stop()
        self._stopping.set()
