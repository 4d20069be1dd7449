"""Client commands about where things run: the nodes, and each replica of an app."""

from __future__ import annotations

import typer

from minipaas.cli.client import Api, load_connection, reports_errors, show

NODE_COLUMNS = ["hostname", "address", "role", "availability", "state", "leader", "engine_version"]
REPLICA_COLUMNS = ["replica", "state", "node", "endpoint", "deployment_id", "current", "name"]
JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")


def register(app: typer.Typer) -> None:
    app.command("nodes")(nodes)
    app.command("ps")(ps)


@reports_errors
def nodes(as_json: bool = JsonOption) -> None:
    """The nodes apps run on (admins): this host, or every swarm node with RUNTIME=swarm."""
    show(Api(load_connection()).call("GET", "/cluster/nodes"), as_json, NODE_COLUMNS)


@reports_errors
def ps(app: str, as_json: bool = JsonOption) -> None:
    """Where an app's replicas run: node, state and the address:port the router uses."""
    api = Api(load_connection())
    found = api.call("GET", f"/apps/{api.app_id(app)}/replicas")
    if not as_json:
        for row in found:
            row["node"] = row["node_hostname"]
            port = row["published_port"]
            row["endpoint"] = (
                f"{row['node_address']}:{port}" if port and row["node_address"] else None
            )
    show(found, as_json, REPLICA_COLUMNS)
