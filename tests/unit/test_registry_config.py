"""The embedded registry's files (config, htpasswd, password), when the platform runs it, and
the REGISTRY_* settings' checks. htpasswd (apache2-utils) makes and verifies the hashes."""

from __future__ import annotations

import itertools
import json
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from minipaas.config import Settings
from minipaas.host.platform import programs
from minipaas.host.registry import (
    LocalRegistry,
    embedded_registry,
    htpasswd_line,
    registry_access,
    registry_password,
)
from minipaas.runtime.registry import app_repository, checked_repository, cluster_tag


def _settings(tmp_path: Path, **values: object) -> Settings:
    # Validated from these values alone: neither the environment nor a .env file
    return Settings.model_validate({"data_dir": tmp_path, **values})


def _verifies(htpasswd: Path, user: str, password: str) -> bool:
    result = subprocess.run(
        ["htpasswd", "-v", "-b", str(htpasswd), user, password],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def test_the_config_listens_on_loopback_with_htpasswd_and_delete(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry", 5123, "minipaas", "p" * 30)
    registry.write_config()
    # JSON is YAML: the registry reads it as it is
    config = json.loads(registry.config_file.read_text())
    assert config["http"]["addr"] == "127.0.0.1:5123"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry/storage")
    assert config["storage"]["delete"] == {"enabled": True}
    assert config["auth"]["htpasswd"]["path"] == str(registry.htpasswd_file)
    for private in (registry.config_file, registry.htpasswd_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.dir.stat().st_mode) == 0o700
    # The upload-signing secret stays the same across restarts (rewrites)
    secret = config["http"]["secret"]
    registry.write_config()
    assert json.loads(registry.config_file.read_text())["http"]["secret"] == secret


def test_the_htpasswd_line_is_bcrypt_and_checks_only_the_password(tmp_path: Path) -> None:
    line = htpasswd_line("minipaas", "s3cret: with spaces")
    user, _, hashed = line.strip().partition(":")
    assert user == "minipaas" and hashed.startswith("$2y$05$")
    file = tmp_path / "htpasswd"
    file.write_text(line)
    assert _verifies(file, "minipaas", "s3cret: with spaces")
    assert not _verifies(file, "minipaas", "s3cret")
    # Salted: the same password hashes differently each time
    assert htpasswd_line("minipaas", "s3cret: with spaces") != line


def test_the_registrys_command_keeps_the_platforms_registry_settings_from_it() -> None:
    command = LocalRegistry(Path("/d"), 5000, "u", "p" * 30).server_command()
    assert command[-3:] == ("docker-registry", "serve", "/d/config.yml")
    for name in ("REGISTRY_URL", "REGISTRY_PORT", "REGISTRY_USER", "REGISTRY_PASSWORD"):
        assert ("-u", name) in itertools.pairwise(command)


def test_the_password_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = registry_password(settings)
    assert len(first) >= 32 and registry_password(settings) == first
    assert stat.S_IMODE(settings.registry_password_file.stat().st_mode) == 0o600
    # REGISTRY_PASSWORD wins, and is what the registry's file holds from then on
    given = _settings(tmp_path, registry_password="chosen-by-the-operator-123")
    assert registry_password(given) == "chosen-by-the-operator-123"
    assert settings.registry_password_file.read_text().strip() == "chosen-by-the-operator-123"


def test_the_platform_runs_a_registry_only_for_swarm_without_registry_url(
    tmp_path: Path,
) -> None:
    docker = _settings(tmp_path)
    assert embedded_registry(docker) is None
    assert "registry" not in {program.name for program in programs(docker)}

    swarm = _settings(tmp_path, runtime="swarm", registry_port=5123)
    registry = embedded_registry(swarm)
    assert registry is not None and registry.address == "127.0.0.1:5123"
    assert registry.dir == tmp_path / "registry"
    found = {program.name: program for program in programs(swarm)}
    assert found["registry"].command == registry.server_command()
    access = registry_access(swarm)
    assert (access.address, access.user) == ("127.0.0.1:5123", "minipaas")
    assert access.password == registry_password(swarm)

    external = _settings(tmp_path, runtime="swarm", registry_url="registry.example.com:5000")
    assert embedded_registry(external) is None
    assert "registry" not in {program.name for program in programs(external)}
    # No REGISTRY_PASSWORD for an external registry: pushes go without a login
    assert registry_access(external).password is None


@pytest.mark.parametrize(
    "value", ["http://registry.example.com", "registry.example.com/path", "a b", "host:port"]
)
def test_registry_url_is_a_host_and_port(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="REGISTRY_URL"):
        _settings(tmp_path, registry_url=value)


def test_registry_url_and_user_accepted_forms(tmp_path: Path) -> None:
    settings = _settings(tmp_path, registry_url="Registry.Example.com:5000", registry_user="ci.bot")
    assert settings.registry_url == "registry.example.com:5000"
    with pytest.raises(ValidationError, match="REGISTRY_USER"):
        _settings(tmp_path, registry_user="a:b")


def test_repository_names_and_tags_come_from_our_own_data() -> None:
    assert app_repository("minipaas", 42) == "minipaas/app-42"
    assert checked_repository("mp-1/app-2") == "mp-1/app-2"
    for bad in ("Upper/x", "a//b", "a/", "x:y", "../x", ""):
        with pytest.raises(ValueError):
            checked_repository(bad)
    image_id = "sha256:" + "ab" * 32
    assert cluster_tag(image_id) == "id-" + "ab" * 16
    with pytest.raises(ValueError):
        cluster_tag("latest")
