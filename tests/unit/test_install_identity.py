"""The install id kept in DATA_DIR, and when another install's footprint refuses a start."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from minipaas.config import Settings
from minipaas.runtime import labels
from minipaas.runtime.base import InstanceObject
from minipaas.runtime.docker_runtime import DockerRuntime
from minipaas.services import install_identity
from minipaas.services.install_identity import InstallClash, check_no_other_install

MINE = "a" * 32
OTHER = "b" * 32


class _Engine:
    def __init__(self, *found: InstanceObject) -> None:
        self.found = list(found)

    def instance_objects(self) -> list[InstanceObject]:
        return self.found


def _check(tmp_path: Path, *found: InstanceObject, adopt_unstamped: bool = False) -> None:
    settings = Settings(data_dir=tmp_path, instance_name="shared")
    engine = cast(DockerRuntime, _Engine(*found))
    check_no_other_install(settings, engine, MINE, adopt_unstamped=adopt_unstamped)


def test_the_id_is_written_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert install_identity.read_install_id(settings) is None
    first = install_identity.ensure_install_id(settings)
    assert len(first) == 32
    assert install_identity.ensure_install_id(settings, OTHER) == first


def test_a_damaged_id_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    settings.install_id_file.write_text("not-an-id\n")
    with pytest.raises(InstallClash, match="restore it"):
        install_identity.read_install_id(settings)


def test_only_another_installs_stamp_or_unadopted_legacy_refuses(tmp_path: Path) -> None:
    _check(tmp_path)
    _check(tmp_path, InstanceObject("container", "shared-app1-d1", MINE))
    _check(tmp_path, InstanceObject("network", "shared-apps", None), adopt_unstamped=True)
    with pytest.raises(InstallClash, match="INSTANCE_NAME=shared-2") as refused:
        _check(tmp_path, InstanceObject("container", "shared-app1-d1", OTHER))
    assert "container shared-app1-d1" in str(refused.value)
    with pytest.raises(InstallClash, match="without install ids"):
        _check(tmp_path, InstanceObject("network", "shared-apps", None))


def test_labels_tell_foreign_from_legacy() -> None:
    stamped = labels.instance_labels("shared", OTHER)
    assert labels.made_by_another_install(stamped, MINE)
    assert not labels.made_by_another_install(stamped, OTHER)
    assert not labels.made_by_another_install(labels.instance_labels("shared"), MINE)
