"""Per-member quotas count what runs, not only what apps are set to; CPU and pids count too;
a rollback's check waits for (and is waited for by) a create of the same member."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from minipaas.api.app import create_app
from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import App, AppStatus, Deployment, DeploymentStatus, User
from minipaas.db.session import get_session
from minipaas.security import decrypt_env
from minipaas.services import releases
from minipaas.services.apps import update_app
from minipaas.services.errors import Forbidden, Unavailable
from tests.support.flows import create_app as register_app
from tests.support.flows import wait_for_deployment
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]


@contextmanager
def member_client(stack: Stack, member: Member) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60) as client:
        yield client


def deploy(client: httpx.Client, app_id: int) -> dict[str, Any]:
    response = client.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 202, response.text
    return wait_for_deployment(client, app_id, response.json()["id"])


def new_app(client: httpx.Client, name: str, **limits: float) -> httpx.Response:
    return client.post(
        "/apps", json={"name": name, "image": HELLO_V1, "internal_port": 80, **limits}
    )


def test_shrinking_settings_after_deploy_does_not_dodge_the_memory_quota(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    quota, biggest = stack.settings.user_max_memory_mb, stack.settings.max_memory_mb  # 768, 512
    with member_client(stack, new_member(api)) as client:
        big = register_app(client, f"{app_name}-a", HELLO_V1, memory_mb=biggest)
        assert deploy(client, big["id"])["status"] == "succeeded"
        # the dodge: the settings shrink, the container keeps its 512 MB limit
        assert client.patch(f"/apps/{big['id']}", json={"memory_mb": 32}).status_code == 200
        refused = new_app(client, f"{app_name}-b", memory_mb=biggest)
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        assert "memory quota" in detail and f"{2 * biggest} MB" in detail and str(quota) in detail

        # deploying the smaller settings replaces the container: then the memory is free
        assert deploy(client, big["id"])["status"] == "succeeded"
        second = new_app(client, f"{app_name}-b", memory_mb=biggest)
        assert second.status_code == 201, second.text
        # and growing the first app back is refused (the second's settings count)
        grown = client.patch(f"/apps/{big['id']}", json={"memory_mb": biggest})
        assert grown.status_code == 403 and "memory quota" in grown.json()["detail"]
        # lowering is never refused, even over a quota
        assert client.patch(f"/apps/{big['id']}", json={"memory_mb": 16}).status_code == 200
        for app_id in (big["id"], second.json()["id"]):
            assert client.delete(f"/apps/{app_id}").status_code in (202, 204)


def test_more_replicas_of_a_running_app_count_at_what_its_containers_run(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """Settings lowered and replicas raised in one PATCH (or two): the check counted the
    new settings times the new count, but a scale up starts more containers of what runs,
    at the old, larger limits (3 x 512 MB on a 768 MB quota)."""
    biggest = stack.settings.max_memory_mb  # 512, the quota 768
    with member_client(stack, new_member(api)) as client:
        app = register_app(client, app_name, HELLO_V1, memory_mb=biggest)
        assert deploy(client, app["id"])["status"] == "succeeded"
        at_once = client.patch(f"/apps/{app['id']}", json={"memory_mb": 32, "replicas": 3})
        assert at_once.status_code == 403, at_once.text
        assert "memory quota" in at_once.json()["detail"]
        assert client.patch(f"/apps/{app['id']}", json={"memory_mb": 32}).status_code == 200
        in_two = client.patch(f"/apps/{app['id']}", json={"replicas": 3})
        assert in_two.status_code == 403, in_two.text
        # after a deploy of the smaller settings, three of them fit
        assert deploy(client, app["id"])["status"] == "succeeded"
        assert client.patch(f"/apps/{app['id']}", json={"replicas": 3}).status_code == 200
        assert client.delete(f"/apps/{app['id']}").status_code in (202, 204)


def test_two_patches_at_once_cannot_each_pass_on_what_the_other_changes(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """Each PATCH loaded the app before the other committed and checked its change against
    that stale row: memory to 512 (x1) and replicas to 3 (x256) both fit a 768 MB quota, and
    the app ended at 3 x 512. The second now re-reads the app under its lock."""
    member = new_member(api)
    with member_client(stack, member) as client:
        app_id = register_app(client, app_name, HELLO_V1, memory_mb=256)["id"]
    with get_session() as first, get_session() as second:
        owner_first, owner_second = first.get(User, member.id), second.get(User, member.id)
        app_first, app_second = first.get(App, app_id), second.get(App, app_id)
        assert owner_first and owner_second and app_first and app_second
        update_app(db=first, app=app_first, changes={"memory_mb": 512}, caller=owner_first)
        with pytest.raises(Forbidden, match="memory quota"):
            update_app(db=second, app=app_second, changes={"replicas": 3}, caller=owner_second)
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None and (app.memory_mb, app.replicas) == (512, 1)


def test_two_env_sets_at_once_keep_both_variables(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """env_set merges into the stored env: two PATCHes that each loaded the app before the
    other committed each wrote their merge of the old env, and one variable was lost (10 at
    once kept 4 to 7 of 10). Every PATCH now re-reads the app under its lock."""
    member = new_member(api)
    with member_client(stack, member) as client:
        app_id = register_app(client, app_name, HELLO_V1)["id"]
    with get_session() as first, get_session() as second:
        owner_first, owner_second = first.get(User, member.id), second.get(User, member.id)
        app_first, app_second = first.get(App, app_id), second.get(App, app_id)
        assert owner_first and owner_second and app_first and app_second
        update_app(db=first, app=app_first, changes={"env_set": {"A": "1"}}, caller=owner_first)
        update_app(db=second, app=app_second, changes={"env_set": {"B": "2"}}, caller=owner_second)
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None
        assert decrypt_env(app.env_ciphertext) == {"A": "1", "B": "2"}


def test_a_patch_waits_a_few_seconds_for_a_held_app_then_says_busy(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """Every PATCH takes the app's row lock, which the healer holds across a Docker call (a
    minute with a hung engine): it waits 5 s at most, then answers 503, changing nothing."""
    member = new_member(api)
    with member_client(stack, member) as client:
        app_id = register_app(client, app_name, HELLO_V1)["id"]
    with get_session() as holder, get_session() as db:
        holder.execute(select(App).where(App.id == app_id).with_for_update())
        owner, app = db.get(User, member.id), db.get(App, app_id)
        assert owner is not None and app is not None
        started = time.monotonic()
        with pytest.raises(Unavailable, match="busy"):
            update_app(db=db, app=app, changes={"env_set": {"A": "1"}}, caller=owner)
        assert 4 < time.monotonic() - started < 15
        holder.rollback()
        app = db.get(App, app_id)
        assert app is not None
        update_app(db=db, app=app, changes={"env_set": {"A": "1"}}, caller=owner)
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None and decrypt_env(app.env_ciphertext) == {"A": "1"}


def test_cpu_and_pids_quotas_count_what_runs(
    stack: Stack, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, app_name: str
) -> None:
    monkeypatch.setattr(get_settings(), "user_max_cpus", 1.0)
    monkeypatch.setattr(get_settings(), "user_max_pids", 400)
    member = new_member(api)
    with TestClient(create_app(), headers=member.headers) as client:
        first = new_app(client, f"{app_name}-a", cpus=0.75, pids=300)
        assert first.status_code == 201, first.text
        app_id = first.json()["id"]
        assert deploy(client, app_id)["status"] == "succeeded"
        assert client.patch(f"/apps/{app_id}", json={"cpus": 0.1, "pids": 16}).status_code == 200

        cpus = new_app(client, f"{app_name}-b", cpus=0.5, pids=16)
        assert cpus.status_code == 403, cpus.text
        assert "cpu quota exceeded" in cpus.json()["detail"]
        assert "1.25 CPUs, the quota is 1" in cpus.json()["detail"]
        pids = new_app(client, f"{app_name}-b", cpus=0.2, pids=200)
        assert pids.status_code == 403, pids.text
        assert "pids quota exceeded" in pids.json()["detail"]
        assert "500 processes, the quota is 400" in pids.json()["detail"]
        fits = new_app(client, f"{app_name}-b", cpus=0.2, pids=64)
        assert fits.status_code == 201, fits.text
        for created in (app_id, fits.json()["id"]):
            assert client.delete(f"/apps/{created}").status_code in (202, 204)


def test_a_rollback_check_holds_the_lock_a_create_waits_for(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    biggest = stack.settings.max_memory_mb  # 512 of a 768 MB quota
    member = new_member(api)
    with member_client(stack, member) as client:
        app = register_app(client, f"{app_name}-a", HELLO_V1, memory_mb=biggest)
        assert deploy(client, app["id"])["status"] == "succeeded"  # release 1: 512 MB
        assert client.patch(f"/apps/{app['id']}", json={"memory_mb": 32}).status_code == 200
        assert deploy(client, app["id"])["status"] == "succeeded"  # release 2: 32 MB
    # Either alone fits; together (512 + 512) they do not: exactly one may go through
    pending_id = None
    try:
        # The session closes (its locks go) before the create is waited for
        with ThreadPoolExecutor(1) as pool, member_client(stack, member) as other:
            with get_session() as db:
                row = db.get(App, app["id"])
                assert row is not None
                release = releases.choose_release(db=db, app=row, number=1)
                # What POST /rollback does under the app's lock, up to its commit
                releases.check_release_fits(db=db, app=row, release=release)
                creating = pool.submit(new_app, other, f"{app_name}-b", memory_mb=biggest)
                time.sleep(1.5)
                assert not creating.done(), "the create did not wait for the rollback's check"
                pending = Deployment(
                    app_id=row.id,
                    status=DeploymentStatus.QUEUED,
                    app_status_before=AppStatus.RUNNING,
                    # looks handed to a worker already: nothing picks it up during the test
                    dispatched_at=now(),
                )
                pending.set_run_settings(release.run_settings())
                pending.pinned_image_id = release.image_id
                pending.rollback_to_release = release.number
                db.add(pending)
                db.commit()
                pending_id = pending.id
            refused = creating.result(timeout=30)
        assert refused.status_code == 403, refused.text
        assert "memory quota" in refused.json()["detail"]
    finally:
        if pending_id is not None:
            with get_session() as db:
                ended = db.get(Deployment, pending_id)
                assert ended is not None
                ended.status = DeploymentStatus.FAILED
                ended.error = "ended by the test"
                db.commit()
    with member_client(stack, member) as client:
        assert client.delete(f"/apps/{app['id']}").status_code in (202, 204)
