"""Where things run, through the API and the CLI: the nodes, and an app's replicas with the
node and port each answers on (the same the platform records and the router uses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from minipaas.db.models import App, AppReplica
from minipaas.db.session import get_session
from minipaas.runtime.base import Endpoint
from minipaas.services.endpoints import endpoint_of
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _swarm(stack: Stack) -> bool:
    return stack.settings.runtime == "swarm"


def _cli(stack: Stack, tmp_path: Path, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": stack.api_url,
        "MINIPAAS_TOKEN": token,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "minipaas", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_nodes_show_this_host_to_admins_only(stack: Stack, api: httpx.Client) -> None:
    answer = api.get("/cluster/nodes")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    if _swarm(stack):
        managers = [node for node in found if node["role"] == "manager"]
        assert managers and any(node["leader"] for node in managers), found
        assert all(node["state"] == "ready" for node in managers), found
    else:
        assert len(found) == 1, found
        assert found[0]["role"] == "standalone" and found[0]["address"] == "127.0.0.1"
        assert found[0]["state"] == "ready" and found[0]["availability"] == "active"
        assert found[0]["hostname"] and found[0]["engine_version"]

    member = new_member(api)
    refused = httpx.get(f"{stack.api_url}/cluster/nodes", headers=member.headers, timeout=30)
    assert refused.status_code == 403, refused.text
    anonymous = httpx.get(f"{stack.api_url}/cluster/nodes", timeout=30)
    assert anonymous.status_code == 401


def test_replicas_show_each_node_and_port_and_only_to_the_owner(
    stack: Stack, api: httpx.Client, app_name: str, tmp_path: Path
) -> None:
    owner = new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=owner.headers, timeout=60) as mine:
        app_id = create_app(mine, app_name, HELLO_V1, replicas=2)["id"]
        deployed = deploy(mine, app_id)
        assert deployed["status"] == "succeeded", deployed.get("error")
        app = mine.get(f"/apps/{app_id}").json()
        answer = mine.get(f"/apps/{app_id}/replicas")
    assert answer.status_code == 200, answer.text
    placed = [p for p in answer.json() if p["current"]]
    assert [p["replica"] for p in placed] == [0, 1], answer.json()
    # Where the platform recorded each replica answers: what the router and prober use
    with get_session() as db:
        first = db.get(App, app_id)
        assert first is not None
        extra = db.scalars(select(AppReplica).where(AppReplica.app_id == app_id)).all()
        recorded = {0: endpoint_of(first), **{r.replica: endpoint_of(r) for r in extra}}
    assert recorded[0] is not None and recorded[0].port == app["published_port"]
    for placement in placed:
        assert placement["state"] == "running", placement
        assert placement["deployment_id"] == app["current_deployment_id"]
        seen = Endpoint(placement["node_address"], placement["published_port"])
        assert seen == recorded[placement["replica"]], (placement, recorded)
        assert placement["node_address"] == "127.0.0.1" and placement["node_hostname"]
        served = httpx.get(
            f"http://{placement['node_address']}:{placement['published_port']}/", timeout=10
        )
        assert served.text == "hello from v1\n"
    assert placed[0]["published_port"] != placed[1]["published_port"]

    # Another member sees no such app; an admin sees it
    other = new_member(api)
    hidden = httpx.get(f"{stack.api_url}/apps/{app_id}/replicas", headers=other.headers, timeout=30)
    assert hidden.status_code == 404, hidden.text
    assert api.get(f"/apps/{app_id}/replicas").status_code == 200

    # The CLI: `ps` for the owner (a table and JSON), `nodes` refused to a member
    table = _cli(stack, tmp_path, "ps", app_name, token=owner.token)
    assert table.returncode == 0, table.stderr
    for placement in placed:
        assert f"127.0.0.1:{placement['published_port']}" in table.stdout, table.stdout
    as_json = _cli(stack, tmp_path, "ps", app_name, "--json", token=owner.token)
    assert as_json.returncode == 0, as_json.stderr
    assert [p["ref"] for p in json.loads(as_json.stdout) if p["current"]] == [
        p["ref"] for p in placed
    ]
    refused = _cli(stack, tmp_path, "nodes", token=owner.token)
    assert refused.returncode == 1 and refused.stderr.startswith("error: 403"), refused.stderr


def test_cli_nodes_lists_this_host(stack: Stack, tmp_path: Path) -> None:
    result = _cli(stack, tmp_path, "nodes", "--json", token=stack.env["ADMIN_TOKEN"])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found and all(node["state"] == "ready" for node in found)
    expected_role = "manager" if _swarm(stack) else "standalone"
    assert expected_role in {node["role"] for node in found}
    table = _cli(stack, tmp_path, "nodes", token=stack.env["ADMIN_TOKEN"])
    assert table.returncode == 0 and found[0]["hostname"] in table.stdout, table.stdout
