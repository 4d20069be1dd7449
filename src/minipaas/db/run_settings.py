"""What runs: one type for the settings an app, a deployment and a release each carry.

`RunSettings` is the value; `RunSettingsColumns` the same fields as columns, mixed into the
App, Deployment and Release tables. Copying goes through `run_settings()` and
`set_run_settings()`, so a setting added here reaches every copy (a unit test keeps the two in
step).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import ClassVar

from sqlalchemy import JSON, Enum, Float, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column


class PullPolicy(enum.StrEnum):
    IF_NOT_PRESENT = "if-not-present"
    ALWAYS = "always"
    NEVER = "never"


def str_enum(enum_class: type[enum.StrEnum], name: str) -> Enum:
    """VARCHAR + CHECK constraint: adding a value later is a plain migration."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


JsonDocument = JSON().with_variant(JSONB(), "postgresql")


@dataclass(frozen=True)
class HealthCheck:
    """A new container is healthy when GET path answers below 500, or (for apps that serve
    no HTTP health page) once it has been running `running_seconds`."""

    path: str = "/"
    running_seconds: int | None = None


@dataclass(frozen=True)
class RunSettings:
    """Image, port, command, env (encrypted), limits, pull policy and health check."""

    image: str
    internal_port: int
    command: list[str] | None
    env_ciphertext: str | None
    env_names: list[str]
    memory_mb: int
    cpus: float
    pids: int
    pull_policy: PullPolicy
    health_check_path: str = "/"
    health_check_running_seconds: int | None = None

    @property
    def health(self) -> HealthCheck:
        return HealthCheck(self.health_check_path, self.health_check_running_seconds)


def run_setting_names() -> list[str]:
    return [f.name for f in fields(RunSettings)]


class RunSettingsColumns:
    """The RunSettings fields as columns; mixed into App, Deployment and Release."""

    # The pull policy's CHECK constraint is named per table (names kept from older revisions)
    pull_policy_type_name: ClassVar[str]

    image: Mapped[str] = mapped_column(String(512))
    internal_port: Mapped[int] = mapped_column(Integer)
    command: Mapped[list[str] | None] = mapped_column(JsonDocument, nullable=True)
    # Env vars may hold secrets: only their encrypted JSON is stored (see minipaas.security)
    env_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    env_names: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    memory_mb: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[float] = mapped_column(Float)
    pids: Mapped[int] = mapped_column(Integer)
    health_check_path: Mapped[str] = mapped_column(String(255), default="/", server_default="/")
    health_check_running_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @declared_attr
    def pull_policy(cls) -> Mapped[PullPolicy]:
        return mapped_column(
            str_enum(PullPolicy, cls.pull_policy_type_name), default=PullPolicy.IF_NOT_PRESENT
        )

    def run_settings(self) -> RunSettings:
        values = {name: getattr(self, name) for name in run_setting_names()}
        values["env_names"] = list(values["env_names"] or [])
        return RunSettings(**values)

    def set_run_settings(self, run: RunSettings) -> None:
        for name in run_setting_names():
            value = getattr(run, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)
