"""ORM models: users and their tokens, apps and their deployments, the audit log."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from minipaas.db.run_settings import (
    HealthCheck,
    JsonDocument,
    PullPolicy,
    RunSettings,
    RunSettingsColumns,
    str_enum,
)

__all__ = ["HealthCheck", "PullPolicy", "RunSettings"]


class AppStatus(enum.StrEnum):
    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    # Its container died without being asked to; the platform restarts it with a backoff
    CRASHED = "crashed"


class DeploymentStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_DEPLOYMENT_STATUSES = (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING)


class Action(enum.StrEnum):
    """What an owner can do to an app's container (besides deploying it)."""

    STOP = "stop"
    START = "start"
    RESTART = "restart"
    REMOVE = "remove"
    # Start or stop replicas until their number is the app's `replicas` (no new release)
    SCALE = "scale"


class ActionStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


PENDING_ACTION_STATUSES = (ActionStatus.QUEUED, ActionStatus.RUNNING)


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(63))
    role: Mapped[UserRole] = mapped_column(str_enum(UserRole, "user_role"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # The start of the token, safe to show; the token itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))
    # HMAC-SHA256 of the token under the platform's secret key
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Whose authority the token rests on: the admin who minted it for someone (or who minted
    # the token it was made with); NULL for the platform's own (bootstrap, admin CLI).
    # It dies with that authority: revoked when the issuer is disabled or demoted.
    issued_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )

    user: Mapped[User] = relationship(foreign_keys=[user_id])


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    actor: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(100))
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class App(RunSettingsColumns, Base):
    """An app: its run settings (applied on the next deploy) and what serves it now."""

    __tablename__ = "apps"
    pull_policy_type_name = "pull_policy"
    __table_args__ = (
        CheckConstraint("internal_port BETWEEN 1 AND 65535", name="ck_apps_internal_port"),
        CheckConstraint(
            "published_port IS NULL OR published_port BETWEEN 1 AND 65535",
            name="ck_apps_published_port",
        ),
        UniqueConstraint("name", name="uq_apps_name"),
        CheckConstraint("memory_mb > 0", name="ck_apps_memory_mb"),
        CheckConstraint("cpus > 0", name="ck_apps_cpus"),
        CheckConstraint("pids > 0", name="ck_apps_pids"),
        CheckConstraint("replicas > 0", name="ck_apps_replicas"),
        CheckConstraint("hsts_max_age BETWEEN 0 AND 63072000", name="ck_apps_hsts_max_age"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    # How many containers serve the app side by side (its formation: not part of a release)
    replicas: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT", name="fk_apps_owner_id"),
        nullable=True,
        index=True,
    )
    status: Mapped[AppStatus] = mapped_column(
        str_enum(AppStatus, "app_status"), default=AppStatus.CREATED
    )
    # Why the app is in its status, when the platform (not its owner) put it there
    status_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # HTTPS (router/tls.py): plain HTTP answered with a redirect; HSTS max-age, 0 for none
    https_redirect: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    hsts_max_age: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The container that serves the app now, if any; the route exists exactly when it does
    container_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    container_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    published_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The node the port is published on (Swarm); NULL: the host's loopback, 127.0.0.1
    published_address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Replica 0 failed its probes (worker/prober.py): out of the route while others serve
    unhealthy_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Self-healing (worker/healer.py): restarts by the platform since the last deploy or
    # owner's action, crashes in a row (the backoff's exponent) and when the next try is due
    restart_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    crash_streak: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_restart_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_restart_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Its owner asked for its deletion (committed before the job is queued): a delete whose
    # job Redis lost, or whose worker died, is queued again (lifecycle.requeue_lost_deletes)
    delete_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    current_deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey(
            "deployments.id",
            ondelete="SET NULL",
            use_alter=True,
            name="fk_apps_current_deployment_id",
        ),
        nullable=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    deployments: Mapped[list[Deployment]] = relationship(
        back_populates="app",
        foreign_keys="Deployment.app_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    domains: Mapped[list[AppDomain]] = relationship(
        back_populates="app",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AppDomain.hostname",
    )
    # Replicas 1..N-1; replica 0 is the container above (container_id, published_port)
    extra_replicas: Mapped[list[AppReplica]] = relationship(
        back_populates="app",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AppReplica.replica",
    )

    def forget_crashes(self) -> None:
        """A deploy or an owner's action starts the restart count afresh (the last exit
        code stays: it still says how the app last ended)."""
        self.restart_count = 0
        self.crash_streak = 0
        self.last_restart_at = None
        self.next_restart_at = None


class AppReplica(Base):
    """A container serving the app beside its first one (replica 0 lives on the app's row, so
    a one-replica app has no rows here): its route lists every replica's port."""

    __tablename__ = "app_replicas"
    __table_args__ = (
        UniqueConstraint("app_id", "replica", name="uq_app_replicas_app_replica"),
        CheckConstraint("replica > 0", name="ck_app_replicas_replica"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    replica: Mapped[int] = mapped_column(Integer)
    container_id: Mapped[str] = mapped_column(String(64))
    container_name: Mapped[str] = mapped_column(String(255))
    # None while it is down: out of the route until the healer has it healthy again
    published_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # As App.published_address: NULL is 127.0.0.1
    published_address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Failed its probes (worker/prober.py): out of the route, though its container runs
    unhealthy_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Self-healing of this replica alone (worker/healer.py), as the app's own columns
    crash_streak: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    restart_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_restart_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_restart_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    app: Mapped[App] = relationship(back_populates="extra_replicas")


class AppDomain(Base):
    """A host name of the owner's own that reaches the app (besides <name>.<APPS_DOMAIN>)."""

    __tablename__ = "app_domains"
    __table_args__ = (UniqueConstraint("hostname", name="uq_app_domains_hostname"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    # Lowercase, no trailing dot: one spelling per name, so the unique constraint decides
    hostname: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    app: Mapped[App] = relationship(back_populates="domains")


class Deployment(RunSettingsColumns, Base):
    """One attempt to run a snapshot of the app's run settings (or a release's)."""

    __tablename__ = "deployments"
    pull_policy_type_name = "deployment_pull_policy"
    __table_args__ = (
        # At most one queued or running deployment per app, even under concurrent requests
        Index(
            "uq_deployments_one_active_per_app",
            "app_id",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_deployments_app_id_id", "app_id", "id"),
        Index(
            "ix_deployments_waiting",
            "id",
            postgresql_where=text("status = 'queued' AND dispatched_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    status: Mapped[DeploymentStatus] = mapped_column(
        str_enum(DeploymentStatus, "deployment_status"), default=DeploymentStatus.QUEUED
    )
    # The image id the tag resolved to when it ran
    image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # What the app was when this deployment was asked for: the router keeps serving the old
    # container during the deploy only if it was running
    app_status_before: Mapped[AppStatus | None] = mapped_column(
        str_enum(AppStatus, "deployment_app_status_before"), nullable=True
    )
    # A rollback runs this exact image (by id), whatever the tag points at now
    pinned_image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rollback_to_release: Mapped[int | None] = mapped_column(Integer, nullable=True)
    release_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    container_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    container_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    published_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # As App.published_address: NULL is 127.0.0.1
    published_address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the route went to the new container: from then on a cancel is refused
    route_switched_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # Set by the API; the worker stops at its next check and fails the deployment
    cancel_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When it was handed to the workers; NULL while it waits for a slot of its owner's
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    app: Mapped[App] = relationship(back_populates="deployments", foreign_keys=[app_id])


class AppAction(Base):
    """A stop, start, restart or remove asked for: the API answers at once, the worker runs it."""

    __tablename__ = "app_actions"
    __table_args__ = (
        Index("ix_app_actions_app_id_id", "app_id", "id"),
        # One pending action per app: a flood of requests cannot fill the worker's queue
        Index(
            "uq_app_actions_one_pending_per_app",
            "app_id",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    action: Mapped[Action] = mapped_column(str_enum(Action, "app_action_kind"))
    status: Mapped[ActionStatus] = mapped_column(
        str_enum(ActionStatus, "app_action_status"), default=ActionStatus.QUEUED
    )
    requested_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # How it failed (a FailureKind: conflict, not-found, unavailable, internal), and why
    failure: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Release(RunSettingsColumns, Base):
    """What a successful deployment ran: numbered per app, the source of rollbacks."""

    __tablename__ = "releases"
    pull_policy_type_name = "release_pull_policy"
    __table_args__ = (UniqueConstraint("app_id", "number", name="uq_releases_app_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True
    )
    # The exact image (content digest) that ran: a rollback runs it, whatever the tag says now
    image_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeploymentEvent(Base):
    """One step of a deployment, as it happened: what `deploy` shows live."""

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PulledImage(Base):
    """An image the platform pulled onto this host (the host did not have it): only these and
    images the platform built may be garbage-collected, never an image someone else put there."""

    __tablename__ = "pulled_images"

    # The image's content id ("sha256:..."): one row per image, whichever tag pulled it
    image_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The reference that was pulled, for people reading the table
    reference: Mapped[str] = mapped_column(String(512))
    pulled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BuildStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_BUILD_STATUSES = (BuildStatus.QUEUED, BuildStatus.RUNNING)


class Build(Base):
    """An image built from an uploaded context, numbered per app; on success it may deploy."""

    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("app_id", "number", name="uq_builds_app_number"),
        # One build per app at a time, even under concurrent uploads
        Index(
            "uq_builds_one_active_per_app",
            "app_id",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[BuildStatus] = mapped_column(
        str_enum(BuildStatus, "build_status"), default=BuildStatus.QUEUED
    )
    requested_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    # The upload as received (tar or tar.gz) and what it expands to
    upload_sha256: Mapped[str] = mapped_column(String(64))
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    context_files: Mapped[int] = mapped_column(Integer)
    context_bytes: Mapped[int] = mapped_column(BigInteger)
    dockerfile: Mapped[str] = mapped_column(String(255))
    build_args: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    deploy_on_success: Mapped[bool] = mapped_column(Boolean)
    # The result: the tag made per app and build, and the content id it names
    image_tag: Mapped[str | None] = mapped_column(String(255), nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The Dockerfile step that failed ("Step 3/5 : RUN make")
    failed_step: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class BuildLogLine(Base):
    """One line of a build's output, numbered from 1: a follower resumes after the last seen."""

    __tablename__ = "build_log_lines"

    build_id: Mapped[int] = mapped_column(
        ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AcmeAccount(Base):
    """The platform's account at one ACME directory; its key encrypted like env secrets."""

    __tablename__ = "acme_accounts"
    __table_args__ = (UniqueConstraint("directory_url", name="uq_acme_accounts_directory_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directory_url: Mapped[str] = mapped_column(String(500))
    key_ciphertext: Mapped[str] = mapped_column(Text)
    # The CA's registration resource (JSON: its URL and body), once the account exists
    registration: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TlsCertificate(Base):
    """An ACME certificate of one custom domain, and where getting (or renewing) it stands."""

    __tablename__ = "tls_certificates"
    __table_args__ = (
        UniqueConstraint("hostname", name="uq_tls_certificates_hostname"),
        CheckConstraint(
            "status IN ('pending', 'issued', 'failed')", name="ck_tls_certificates_status"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253))
    # pending: none yet; issued: cert_pem serves; failed: the last attempt failed (reason)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Failed attempts in a row: the exponent of the backoff before next_attempt_at
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    order_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
