"""The runtime bounds a container's writable layer where the engine can, and records only the
pulls that brought an image the host did not have.

A fake Docker client stands in for what this machine's engine cannot do (overlay2 on ext4
refuses a size bound); the refusal path is also taken for real by every deploy here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError, ImageNotFound

from minipaas.config import Settings
from minipaas.runtime.base import ContainerSpec
from minipaas.runtime.docker_runtime import DockerRuntime

REFUSAL = "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"


class FakeClient:
    def __init__(self, *, bounds: bool, images: dict[str, str] | None = None) -> None:
        self.bounds = bounds
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.present = dict(images or {})
        self.images = SimpleNamespace(get=self._get, pull=self._pull)
        # The low-level calls DockerRuntime creates a container with
        self.api = SimpleNamespace(
            remove_container=self._remove,
            create_host_config=self._host_config,
            create_networking_config=lambda endpoints: {"EndpointsConfig": endpoints},
            create_endpoint_config=dict,
            create_container=self._create,
        )

    @staticmethod
    def _host_config(**options: Any) -> dict[str, Any]:
        return {name: value for name, value in options.items() if value is not None}

    def _create(self, image: str, *, host_config: dict[str, Any], **_: Any) -> dict[str, str]:
        if "storage_opt" in host_config and not self.bounds:
            raise APIError("500 Server Error", explanation=REFUSAL)
        self.created.append(host_config)
        return {"Id": "container"}

    def _remove(self, ref: str, **options: Any) -> None:
        self.removed.append(ref)

    def _get(self, ref: str) -> Any:
        if ref not in self.present:
            raise ImageNotFound(ref)
        return SimpleNamespace(id=self.present[ref])

    def _pull(self, ref: str) -> Any:
        self.present[ref] = f"sha256:{ref.split(':')[-1]:0>64}"
        return SimpleNamespace(id=self.present[ref])


def runtime(client: FakeClient, **settings: Any) -> tuple[DockerRuntime, list[tuple[str, str]]]:
    pulls: list[tuple[str, str]] = []
    made = DockerRuntime(
        Settings(**settings),
        client=client,
        on_pull=lambda image_id, ref: pulls.append((image_id, ref)),
    )
    return made, pulls


SPEC = ContainerSpec(name="app1-d1", image="hello:v1", internal_port=80)


def test_the_writable_layer_is_bounded_where_the_engine_can() -> None:
    client = FakeClient(bounds=True)
    made, _ = runtime(client, app_disk_mb=300)
    made._create(SPEC, "80/tcp", "apps")
    assert client.created[0]["storage_opt"] == {"size": "300m"}
    assert made.disk_bound_supported is True


def test_an_engine_without_a_bound_runs_the_app_without_one_and_stops_asking() -> None:
    client = FakeClient(bounds=False)
    made, _ = runtime(client, app_disk_mb=300)
    for _ in range(2):
        made._create(SPEC, "80/tcp", "apps")
    assert [("storage_opt" in options) for options in client.created] == [False, False]
    assert made.disk_bound_supported is False
    assert client.removed == [SPEC.name]  # asked once, then never again


@pytest.mark.parametrize("bounds", [True, False])
def test_app_disk_mb_zero_sets_no_bound(bounds: bool) -> None:
    client = FakeClient(bounds=bounds)
    made, _ = runtime(client, app_disk_mb=0)
    made._create(SPEC, "80/tcp", "apps")
    assert "storage_opt" not in client.created[0]


def test_only_pulls_that_brought_a_new_image_are_recorded() -> None:
    client = FakeClient(bounds=True, images={"host:v1": "sha256:" + "0" * 62 + "v1"})
    made, pulls = runtime(client)
    # the host had it and the pull brought nothing new: still the host's image
    made.ensure_image("host:v1", "always")
    made.ensure_image("host:v1", "if-not-present")
    assert pulls == []
    pulled = made.ensure_image("new:v2", "if-not-present")
    assert pulls == [(pulled, "new:v2")]
