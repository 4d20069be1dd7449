"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, field_validator

from minipaas.db.models import AppStatus, DeploymentStatus, PullPolicy
from minipaas.services import validation

AppName = Annotated[str, AfterValidator(validation.check_app_name)]
ImageReference = Annotated[str, AfterValidator(validation.check_image_reference)]
Port = Annotated[int, Field(ge=1, le=65535)]
EnvVars = Annotated[dict[str, str], AfterValidator(validation.check_env)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppCreate(_Strict):
    name: AppName = Field(examples=["hello"])
    image: ImageReference = Field(examples=["local/hello:v1"])
    internal_port: Port = Field(examples=[80])
    env: EnvVars = Field(default_factory=dict)
    command: list[str] | str | None = Field(
        default=None, description="argv list, or a string split like a shell would"
    )
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT

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

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str | None) -> list[str] | None:
        return validation.normalize_command(value)

    @field_validator("image", "internal_port", "env", "pull_policy", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep its value")
        return value


class AppOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    image: str
    internal_port: int
    env: dict[str, str]
    command: list[str] | None
    pull_policy: PullPolicy
    status: AppStatus
    container_name: str | None
    published_port: int | None
    current_deployment_id: int | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def path(self) -> str:
        """Where the router serves the app."""
        return f"/apps/{self.id}/"


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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class LogsOut(BaseModel):
    logs: str


class ActionOut(BaseModel):
    action: str
    done: bool = Field(description="false when the worker had not finished when we answered")
    app: AppOut
