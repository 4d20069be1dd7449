"""Small helpers the end-to-end tests share."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import eventually

FINISHED = {"succeeded", "failed"}


def create_app(api: httpx.Client, name: str, image: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/apps", json={"name": name, "image": image, "internal_port": 80, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


class Unavailable(Exception):
    """The API answered 503: a dependency (or the API itself) is restarting."""


def wait_for_deployment(
    api: httpx.Client,
    app_id: int,
    deployment_id: int,
    timeout: float = 60.0,
    *,
    interval: float = 0.1,
    through_outages: bool = False,
) -> dict[str, Any]:
    """The deployment once it ended; `through_outages`: the API may answer 503 or not at all
    meanwhile (a dependency restarting). Any other answer but 200 fails at once."""

    def finished() -> dict[str, Any] | None:
        response = api.get(f"/apps/{app_id}/deployments/{deployment_id}")
        if response.status_code == 503:
            raise Unavailable(response.text)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        body = dict(response.json())
        return body if body["status"] in FINISHED else None

    return eventually(
        finished,
        timeout=timeout,
        interval=interval,
        retry_on=(Unavailable, httpx.TransportError) if through_outages else (),
        message=f"deployment {deployment_id} did not finish",
    )


def deploy(api: httpx.Client, app_id: int) -> dict[str, Any]:
    response = api.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 202, response.text
    # As it stands when the answer is written: a free worker may have taken it already
    assert response.json()["status"] in ("queued", "running", "succeeded", "failed")
    return wait_for_deployment(api, app_id, response.json()["id"])


def platform_containers(instance: str, app_id: int) -> list[str]:
    """Refs of what runs the app's replicas, asked of the engine that runs them (containers
    on one host, services on Swarm), whichever install made them."""
    from minipaas.runtime import get_runtime, labels

    runtime = get_runtime()
    assert runtime._settings.instance_name == instance, "the stack's runtime, not another's"
    return [
        ref for ref, found, _ in runtime.platform_containers() if labels.app_id_of(found) == app_id
    ]
