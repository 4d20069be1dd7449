"""The containerized install: docker-compose.yml validates and keeps its safety properties.

Nothing is built or run here: the file is checked with `docker-compose config`, which
validates it and prints it normalized. tests/e2e/test_compose_install.py builds the images and
runs the install for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from minipaas.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_SOCKET = "/var/run/docker.sock"
# The worker creates and removes app containers; the API reads their logs and pings the
# engine; the builder builds images from source
SERVICES_WITH_DOCKER_SOCKET = {"api", "worker", "builder"}
# They reach what app containers and Redis publish on the host's 127.0.0.1
HOST_NETWORK_SERVICES = {"api", "worker", "builder"}
# The services that run the platform image (its settings, the database's socket, DATA_DIR)
PLATFORM_SERVICES = ("api", "worker", "builder")
# The passwords docker-compose requires (.env.example ships none)
SECRETS = {"POSTGRES_PASSWORD": "p" * 24, "REDIS_PASSWORD": "r" * 24}


def compose_config(
    tmp_path: Path, env: dict[str, str], env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only `env` set, never reading a developer's .env."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not on PATH (`make test` installs Debian's docker-compose)")
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    return subprocess.run(
        [
            "docker-compose",
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def parsed_config(tmp_path: Path, env: dict[str, str], env_file: Path | None = None) -> Any:
    result = compose_config(tmp_path, env, env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture
def services(tmp_path: Path) -> dict[str, dict[str, Any]]:
    config = parsed_config(tmp_path, SECRETS)
    services: dict[str, dict[str, Any]] = config["services"]
    assert {"postgres", "redis", "api", "worker", "builder"} <= set(services)
    return services


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def env_example_unset() -> set[str]:
    """Settings .env.example names but leaves unset on purpose (`#NAME=`): the passwords."""
    return {
        line[1:].partition("=")[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.fullmatch(r"#[A-Z][A-Z0-9_]*=", line.strip())
    }


def mount_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            sources.append(volume.split(":")[0])
        else:
            sources.append(volume.get("source", ""))
    return sources


def mounted_at(service: dict[str, Any], target: str) -> list[str]:
    """The sources of the service's mounts at `target`, from either syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if rest.split(":")[0] == target:
                found.append(source)
        elif volume.get("target") == target:
            found.append(volume.get("source", ""))
    return found


def published_ports(service: dict[str, Any]) -> list[dict[str, str]]:
    """Each published port as {host_ip, published, target}, from either syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append({k: str(port.get(k, "")) for k in ("host_ip", "published", "target")})
            continue
        parts = str(port).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        published = parts[-2] if len(parts) >= 2 else ""
        ports.append({"host_ip": host_ip, "published": published, "target": parts[-1]})
    return ports


def test_compose_file_is_valid(services: dict[str, dict[str, Any]]) -> None:
    # the fixture ran `docker-compose config` and checked its exit status
    assert services["api"]["image"] == services["worker"]["image"]
    assert services["builder"]["image"] == services["api"]["image"]


def test_builders_share_the_uploads_and_follow_build_concurrency(tmp_path: Path) -> None:
    services = parsed_config(tmp_path, {**SECRETS, "BUILD_CONCURRENCY": "3"})["services"]
    builder = services["builder"]
    assert builder["command"] == ["minipaas", "worker", "--builds"]
    assert builder["scale"] == 3
    # The API writes uploads under DATA_DIR/builds, the builder reads them: one volume
    data_dir = builder["environment"]["DATA_DIR"]
    for name in ("api", "builder"):
        assert mounted_at(services[name], data_dir) == ["minipaas-data"], name


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_docker_socket_only_where_needed(services: dict[str, dict[str, Any]]) -> None:
    with_socket = {
        name for name, service in services.items() if DOCKER_SOCKET in mount_sources(service)
    }
    assert with_socket == SERVICES_WITH_DOCKER_SOCKET


def test_no_service_is_privileged(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert not service.get("privileged"), f"{name} is privileged"
        assert "ALL" not in service.get("cap_add", []), f"{name} adds every capability"


def test_postgres_and_redis_publish_on_loopback_only(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("postgres", "redis"):
        service = services[name]
        # On the host's network they would listen on every interface, ports or not
        assert service.get("network_mode") != "host", name
        for port in published_ports(service):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    # PostgreSQL: a unix socket in a volume only, no network and nothing published
    assert services["postgres"]["network_mode"] == "none"
    assert published_ports(services["postgres"]) == []
    for name in PLATFORM_SERVICES:
        assert services[name]["environment"]["POSTGRES_HOST"] == "/run/postgresql"
        assert "postgres-socket" in mount_sources(services[name])


def test_only_api_and_worker_share_the_host_network(
    services: dict[str, dict[str, Any]],
) -> None:
    on_host = {name for name, s in services.items() if s.get("network_mode") == "host"}
    assert on_host == HOST_NETWORK_SERVICES


def test_postgres_and_redis_passwords_are_required(tmp_path: Path) -> None:
    for name in SECRETS:
        result = compose_config(tmp_path, {k: v for k, v in SECRETS.items() if k != name})
        assert result.returncode != 0
        assert name in result.stderr
    # .env.example ships no password: a .env copied from it does not satisfy the check
    example = tmp_path / "example.env"
    example.write_text(ENV_EXAMPLE.read_text())
    result = compose_config(tmp_path, {}, example)
    assert result.returncode != 0
    assert "PASSWORD" in result.stderr
    assert env_example_unset() == set(SECRETS)


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    example = env_example()
    for name in Settings.model_fields:  # a running test stack exports its own settings
        monkeypatch.delenv(name.upper(), raising=False)
    assert set(example) | env_example_unset() == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        if name.upper() in env_example_unset():
            continue
        default = field.default
        # Validating the example's text gives the default back (an empty value means unset)
        parsed = Settings.model_validate({name: example[name.upper()]}).model_dump()[name]
        assert parsed == default, f"{name.upper()}={example[name.upper()]!r} is not {default!r}"


def test_compose_passes_every_setting_from_env_file(tmp_path: Path) -> None:
    example = env_example()
    # Not the defaults, so a value the compose file ignored would show
    changed = {
        **example,
        **SECRETS,
        "APP_PORT": "18081",
        "ROUTER_HOST": "0.0.0.0",
        "ROUTER_PORT": "18080",
        "REDIS_PORT": "16379",
        "INSTANCE_NAME": "compose-test",
    }
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in changed.items()))
    services = parsed_config(tmp_path, {}, env_file)["services"]
    # Where the bundled PostgreSQL and Redis are is the compose file's to say
    fixed = {"POSTGRES_HOST": "/run/postgresql", "POSTGRES_PORT": "5432", "REDIS_HOST": "127.0.0.1"}
    for name in PLATFORM_SERVICES:
        environment = {k: str(v) for k, v in services[name]["environment"].items()}
        wanted = {**changed, **fixed}
        missing = {k: v for k, v in wanted.items() if environment.get(k) != v}
        assert not missing, f"{name} does not get {missing} from the env file"
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    redis_ports = published_ports(services["redis"])
    assert [(p["host_ip"], p["published"]) for p in redis_ports] == [("127.0.0.1", "16379")]
