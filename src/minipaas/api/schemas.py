"""Request and response bodies."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    computed_field,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from minipaas.db.models import (
    Action,
    ActionStatus,
    App,
    AppStatus,
    BuildStatus,
    DeploymentStatus,
    PullPolicy,
    Release,
    UserRole,
)
from minipaas.services import app_rows, domains, routing, validation

AppName = Annotated[str, AfterValidator(validation.check_app_name)]
ImageReference = Annotated[str, AfterValidator(validation.check_image_reference)]
Port = Annotated[int, Field(ge=1, le=65535)]
EnvVars = Annotated[dict[str, str], AfterValidator(validation.check_env)]
HealthPath = Annotated[
    str,
    AfterValidator(validation.check_health_path),
    Field(description="GET this path on a new container; any status below 500 is healthy"),
]
RunningSeconds = Annotated[
    int,
    Field(ge=1, le=600, description="instead of HTTP: healthy once running this many seconds"),
]


class _Strict(BaseModel):
    """A request body: unknown fields refused, and no NUL character in any text of it."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Any:
        # PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate: refused here (422)
        # rather than by the database (500)
        for name, value in self.__dict__.items():
            if _holds_nul(value):
                raise ValueError(
                    f"{name} may not contain a NUL character (\\u0000) or a lone surrogate "
                    "(\\ud800-\\udfff): send plain text"
                )
        return self


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value or not validation.is_unicode(value)
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    return False


MemoryMb = Annotated[int, Field(ge=6, le=1_048_576, description="memory limit in MB")]
# Docker counts CPUs in billionths; below 0.01 a limit rounds to 0, which means "no limit"
Cpus = Annotated[float, Field(ge=0.01, le=1024, description="CPU limit in cores")]
Pids = Annotated[int, Field(ge=8, le=4_194_304, description="process limit")]
HstsMaxAge = Annotated[
    int,
    Field(ge=0, le=63_072_000, description="Strict-Transport-Security max-age over HTTPS; 0: none"),
]
Replicas = Annotated[
    int,
    Field(ge=1, le=1000, description="containers serving the app (at most APP_MAX_REPLICAS)"),
]


class AppCreate(_Strict):
    name: AppName = Field(examples=["hello"])
    image: ImageReference = Field(examples=["minipaas/hello:latest"])
    internal_port: Port = Field(examples=[80])
    env: EnvVars = Field(default_factory=dict, description="values are stored encrypted")
    command: list[str] | str | None = Field(
        default=None, description="argv list, or a string split like a shell would"
    )
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    memory_mb: MemoryMb | None = Field(default=None, description="default: MEMORY default")
    cpus: Cpus | None = None
    pids: Pids | None = None
    health_check_path: HealthPath = "/"
    health_check_running_seconds: RunningSeconds | None = None
    replicas: Replicas = 1

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str | None) -> list[str] | None:
        return validation.normalize_command(value)


class AppUpdate(_Strict):
    image: ImageReference | None = None
    internal_port: Port | None = None
    env: EnvVars | None = None
    command: list[str] | str | None = None
    pull_policy: PullPolicy | None = None
    memory_mb: MemoryMb | None = None
    cpus: Cpus | None = None
    pids: Pids | None = None
    health_check_path: HealthPath | None = None
    health_check_running_seconds: RunningSeconds | None = None
    replicas: Replicas | None = Field(
        default=None, description="applied at once to a running app (no deploy, no release)"
    )
    https_redirect: bool | None = Field(
        default=None, description="answer plain HTTP with a redirect to HTTPS (applied at once)"
    )
    hsts_max_age: HstsMaxAge | None = None
    env_set: EnvVars | None = Field(
        default=None, description="add or change these variables, keep the others"
    )
    env_unset: list[str] | None = Field(
        default=None, max_length=100, description="remove these variables, keep the others"
    )

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str | None) -> list[str] | None:
        return validation.normalize_command(value)

    @field_validator(
        "image",
        "internal_port",
        "env",
        "pull_policy",
        "memory_mb",
        "cpus",
        "pids",
        "health_check_path",
        "replicas",
        "https_redirect",
        "hsts_max_age",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep its value")
        return value


ENV_MASK = "********"


class _MaskedEnvOut(BaseModel):
    """Built from an App or Release row: `env` holds the names only, values never leave."""

    model_config = ConfigDict(from_attributes=True)
    # Fields not read from the row's attribute of the same name (see _derived)
    derived_fields: ClassVar[frozenset[str]] = frozenset({"env"})

    @model_validator(mode="before")
    @classmethod
    def _mask_env(cls, value: Any) -> Any:
        # Rows by name (app_rows) are not validated: app_answers shapes them
        if isinstance(value, (App, Release)):
            data = {
                name: getattr(value, name)
                for name in cls.model_fields
                if name not in cls.derived_fields
            }
            data["env"] = {name: ENV_MASK for name in value.env_names or []}
            return data | cls._derived(value)
        return value

    @classmethod
    def _derived(cls, row: App | Release) -> dict[str, Any]:
        """Values computed from the row, for the fields in derived_fields besides env."""
        return {}


# An app in these statuses has its replicas with a port in the router's rotation
_SERVING = frozenset({AppStatus.RUNNING, AppStatus.CRASHED, AppStatus.DEPLOYING})


class AppOut(_MaskedEnvOut):
    id: int
    name: str
    owner_id: int | None
    image: str
    internal_port: int
    env: dict[str, str] = Field(description="names only; values are never returned")
    command: list[str] | None
    memory_mb: int
    cpus: float
    pids: int
    pull_policy: PullPolicy
    health_check_path: str
    health_check_running_seconds: int | None
    status: AppStatus
    status_detail: str | None = Field(
        description="why the platform set this status, e.g. a crash loop with its exit code"
    )
    container_name: str | None
    published_port: int | None
    replicas: int = Field(description="containers the app is set to run side by side")
    replicas_serving: int = Field(description="replicas in the router's rotation now")
    current_deployment_id: int | None
    restart_count: int = Field(description="restarts by the platform since the last deploy")
    last_exit_code: int | None = Field(description="how its container last ended")
    next_restart_at: datetime | None = Field(description="when a crashed app is restarted")
    delete_requested_at: datetime | None = Field(
        description="when a delete was asked for (DELETE answered 202): the worker is removing "
        "the app, which answers 404 once it is gone"
    )
    created_at: datetime
    updated_at: datetime
    url: str = Field(description="the app's own origin: http://<name>.<APPS_DOMAIN>/")
    domains: list[str] = Field(description="the app's own domains, which also reach it")
    https_redirect: bool = Field(description="plain HTTP is redirected to HTTPS")
    hsts_max_age: int = Field(description="HSTS max-age sent over HTTPS; 0: no HSTS")

    derived_fields: ClassVar[frozenset[str]] = frozenset(
        {"env", "url", "domains", "replicas_serving"}
    )

    @classmethod
    def _derived(cls, row: App | Release) -> dict[str, Any]:
        if not isinstance(row, App):
            raise TypeError("AppOut is built from an App row")
        serving = len(routing.serving_endpoints(row)) if row.status in _SERVING else 0
        return {
            "url": routing.app_url(row.name),
            "domains": [d.hostname for d in row.domains],
            "replicas_serving": serving,
        }

    @computed_field  # type: ignore[prop-decorator]
    @property
    def path(self) -> str:
        """Where the router serves the app on the platform's origin."""
        return f"/apps/{self.id}/"


def _answer_shape(model: type[BaseModel]) -> Any:
    """The model's answer (its fields, computed ones included) as a TypedDict.

    Rows read from the database are typed by their columns already: dumping them through
    this shape is pydantic-core's serializer without a second validation, which for a page
    of 200 apps cost as much CPU as the query. Keys the shape lacks are left out.
    """
    fields = {name: _plain(field.annotation) for name, field in model.model_fields.items()}
    computed = {name: field.return_type for name, field in model.model_computed_fields.items()}
    return TypedDict(f"{model.__name__}Answer", fields | computed)  # type: ignore[operator]


def _plain(annotation: Any) -> Any:
    """str for a StrEnum: its members are strs, and dumped as such they give the same JSON
    without the enum serializer, which took ~7% of a page of 200's CPU (two per app)."""
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return str
    return annotation


_AppAnswer = _answer_shape(AppOut)
# One app, and a list page, as JSON straight from rows by name (app_answers)
AppAnswer: TypeAdapter[dict[str, Any]] = TypeAdapter(_AppAnswer)
AppListAnswer: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[_AppAnswer])  # type: ignore[valid-type]


def app_answers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of app_rows.APP_COLUMNS (changed in place) with what AppOut shows besides their
    columns: env names masked, url, path, replicas in rotation. Dump with AppListAnswer."""
    url_after_name = routing.app_url("").removeprefix("http://")  # once per page
    for row in rows:
        row["env"] = dict.fromkeys(row.pop("env_names") or (), ENV_MASK)
        extras = row.pop("extra_replicas")
        serving = 0
        if row["status"] in _SERVING:
            replicas = app_rows.replica_rows(row, extras)
            serving = len(routing.serving_endpoints_of(replicas))
        row["replicas_serving"] = serving
        row["url"] = f"http://{row['name']}{url_after_name}"
        row["path"] = f"/apps/{row['id']}/"
    return rows


class DomainCreate(_Strict):
    hostname: str = Field(
        min_length=1,
        max_length=300,
        examples=["www.example.com"],
        description="a DNS name; not under PLATFORM_HOST or APPS_DOMAIN",
    )


class DomainTlsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str = Field(description="pending, issued, failed, or off (no certificate source)")
    source: str | None = Field(description="acme or file")
    reason: str | None = Field(description="why the last attempt failed")
    next_attempt_at: datetime | None = Field(description="when the CA is asked again")
    expires_at: datetime | None = Field(description="when the served certificate expires")


class DomainOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    hostname: str
    app_id: int
    created_at: datetime
    tls: DomainTlsOut | None = Field(default=None, description="its HTTPS certificate")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        """Where the app answers at this domain (once DNS points it at the router)."""
        return domains.domain_url(self.hostname)


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    app_id: int
    status: DeploymentStatus
    image: str
    image_id: str | None
    internal_port: int
    command: list[str] | None
    container_id: str | None
    container_name: str | None
    published_port: int | None
    error: str | None
    release_number: int | None = Field(description="the release this deployment made")
    rollback_to_release: int | None = Field(description="set when it rolled back to a release")
    cancel_requested_at: datetime | None
    created_at: datetime
    dispatched_at: datetime | None = Field(
        description="when a worker slot was given; null while it waits for its owner's slot"
    )
    queue_position: int | None = Field(
        default=None,
        description="while it waits for a slot (DEPLOYS_PER_MEMBER): 1 is next in the owner's line",
    )
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class LogsOut(BaseModel):
    logs: str


class AppWrittenOut(AppOut):
    """What create and change answer: the app, and what the next deploy will meet."""

    derived_fields: ClassVar[frozenset[str]] = AppOut.derived_fields | {"notice"}
    notice: str | None = Field(
        default=None, description="e.g. the image is not on the host yet and will be pulled"
    )


class AppActionOut(BaseModel):
    """A stop, start, restart or remove: follow it until its status is succeeded or failed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    app_id: int
    action: Action
    status: ActionStatus
    failure: str | None = Field(
        description="how it failed: conflict, not-found, unavailable (try again) or internal"
    )
    detail: str | None = Field(description="why it failed")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ActionOut(AppActionOut):
    done: bool = Field(description="false when the worker had not finished when we answered")
    app: AppOut


class UserCreate(_Strict):
    username: AppName = Field(examples=["alice"], description="a DNS label, like app names")
    role: UserRole = UserRole.MEMBER


class UserUpdate(_Strict):
    disabled: bool | None = None
    role: UserRole | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: UserRole
    disabled: bool
    created_at: datetime


class TokenCreate(_Strict):
    name: str = Field(min_length=1, max_length=100, examples=["laptop"])
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="the start of the token, to recognize it")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="shown this once; only a keyed hash is stored")


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    actor_id: int | None
    actor: str
    action: str
    target: str
    outcome: str
    client_ip: str | None
    created_at: datetime


class ReleaseOut(_MaskedEnvOut):
    number: int
    app_id: int
    deployment_id: int | None
    image: str
    image_id: str = Field(description="the exact image (content digest) that ran")
    internal_port: int
    command: list[str] | None
    env: dict[str, str] = Field(description="names only; values are never returned")
    memory_mb: int
    cpus: float
    pids: int
    pull_policy: PullPolicy
    health_check_path: str
    health_check_running_seconds: int | None
    created_at: datetime


class RollbackRequest(_Strict):
    release: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="default: the release before the current"
    )


class DeploymentEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(
        description="queued, started, image, container, health, healthy, route, "
        "old-container, succeeded or failed; later crashed and restarted (self-healing)"
    )
    message: str
    at: datetime


class ErrorOut(BaseModel):
    """Every error answer but 422: what went wrong and, where it can, what to change."""

    detail: str = Field(examples=["app 42 does not exist"])


class FieldErrorOut(BaseModel):
    """One problem with a request, shaped like FastAPI's request validation errors."""

    loc: list[str | int] = Field(
        description="where: e.g. ['body', 'pids']; empty when no one field is at fault",
        examples=[["body", "pids"]],
    )
    msg: str = Field(examples=["pids 12985 is over the maximum of 1024"])
    type: str = Field(examples=["value_error"])


class ValidationErrorOut(BaseModel):
    """A 422, from request validation or from the platform's own rules: one shape for both."""

    detail: list[FieldErrorOut]


class TrafficMinuteOut(BaseModel):
    """One minute of an app's traffic as the router counted it (latency resolution 1 ms)."""

    start: datetime = Field(description="the minute's start (UTC)")
    requests: int
    status_classes: dict[str, int] = Field(description="requests by status class, 1xx to 5xx")
    rate_5xx: float = Field(description="share of the requests answered 5xx (0 to 1)")
    bytes_sent: int
    p50_ms: float | None = Field(description="None when the minute had no requests")
    p95_ms: float | None
    p99_ms: float | None


class AppTrafficOut(BaseModel):
    """An app's traffic through the router: per-minute rollups, oldest first."""

    app_id: int
    enabled: bool = Field(description="false when the router counts nothing (ROUTER_METRICS)")
    in_flight: int = Field(description="requests being proxied to the app right now")
    total: TrafficMinuteOut | None = Field(description="the whole window as one rollup")
    minutes: list[TrafficMinuteOut]


class BuildOut(BaseModel):
    """A build from source: what was uploaded, how the build went, what it made."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    app_id: int
    number: int = Field(description="the build's number in its app: the {number} of its routes")
    status: BuildStatus
    upload_sha256: str = Field(description="sha256 of the upload as received")
    upload_bytes: int
    context_files: int
    context_bytes: int = Field(description="what the context expands to")
    dockerfile: str
    build_args: list[str] = Field(description="names of the build args (values are not shown)")
    deploy_on_success: bool
    image_tag: str | None
    image_id: str | None
    deployment_id: int | None = Field(description="the deployment it started, if any")
    error: str | None = Field(description="why it failed: the step, its message, last lines")
    failed_step: str | None
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None

    @field_validator("build_args", mode="before")
    @classmethod
    def _names_only(cls, value: object) -> object:
        return sorted(value) if isinstance(value, dict) else value


class NodeOut(BaseModel):
    """A node apps run on: this host on the plain engine, each swarm node with RUNTIME=swarm."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    hostname: str
    address: str = Field(description="where the node's published ports answer")
    role: str = Field(description="manager or worker; standalone on the plain Docker engine")
    availability: str = Field(description="active, pause or drain (Swarm's scheduling)")
    state: str = Field(description="ready, down, unknown or disconnected")
    leader: bool = Field(description="the swarm's leading manager")
    engine_version: str


class ReplicaOut(BaseModel):
    """One container of an app (one swarm service with RUNTIME=swarm) and where it runs."""

    replica: int | None = Field(description="0, 1, ...: the [rN] of its log lines")
    deployment_id: int | None = Field(description="the deployment that started it")
    current: bool = Field(
        description="the platform counts it as the replica now; false for one of a deployment "
        "still starting or draining"
    )
    ref: str = Field(description="the container's id (the service's with RUNTIME=swarm)")
    name: str
    node_id: str | None
    node_hostname: str | None = Field(description="none while no node was picked")
    node_address: str | None
    state: str = Field(description="the container's state, or its swarm task's")
    published_port: int | None = Field(description="the port on the node's address; none: down")
