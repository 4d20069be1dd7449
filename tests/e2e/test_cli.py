"""The `minipaas` client commands, run as a user would, against the real platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from minipaas.db.models import App
from minipaas.db.session import get_session
from tests.support.images import CRASHER, HELLO_V1, HELLO_V2
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _cli(
    stack: Stack, tmp_path: Path, *args: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": stack.api_url,
        "MINIPAAS_TOKEN": token if token is not None else stack.env["ADMIN_TOKEN"],
        "COLUMNS": "200",
    }
    if token == "":
        env.pop("MINIPAAS_URL")
        env.pop("MINIPAAS_TOKEN")
    return subprocess.run(
        [sys.executable, "-m", "minipaas", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_cli_app_lifecycle(stack: Stack, tmp_path: Path, app_name: str) -> None:
    def ok(*args: str) -> str:
        result = _cli(stack, tmp_path, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    ok("apps", "create", app_name, "--image", HELLO_V1, "--port", "80")
    listed = json.loads(ok("apps", "list", "--json"))
    assert app_name in [app["name"] for app in listed]
    assert app_name in ok("apps", "list")  # the table

    assert "succeeded" in ok("deploy", app_name)
    assert "response:200" in ok("logs", app_name, "--tail", "5")
    assert json.loads(ok("stop", app_name, "--json"))["status"] == "stopped"
    assert json.loads(ok("start", app_name, "--json"))["status"] == "running"

    ok("env", "set", app_name, "GREETING=hello", "TOKEN=s3cret")
    ok("env", "unset", app_name, "GREETING")
    names = [row["name"] for row in json.loads(ok("env", "list", app_name, "--json"))]
    assert names == ["TOKEN"]

    second = json.loads(ok("deploy", app_name, "--image", HELLO_V2, "--json"))
    assert second["status"] == "succeeded" and second["release_number"] == 2
    releases = json.loads(ok("releases", app_name, "--json"))
    assert [r["number"] for r in releases] == [2, 1]
    assert releases[0]["env"] == {"TOKEN": "********"}
    assert "s3cret" not in ok("apps", "show", app_name, "--json")

    back = json.loads(ok("rollback", app_name, "1", "--json"))
    assert back["status"] == "succeeded" and back["rollback_to_release"] == 1
    history = json.loads(ok("deployments", app_name, "--json"))
    assert [d["status"] for d in history] == ["succeeded"] * 3
    ok("apps", "delete", app_name, "--yes")
    assert app_name not in ok("apps", "list")


def test_cli_failed_deploy_exits_non_zero_with_the_reason(
    stack: Stack, tmp_path: Path, app_name: str
) -> None:
    assert _cli(stack, tmp_path, "apps", "create", app_name, "--image", CRASHER, "--port", "80")
    result = _cli(stack, tmp_path, "deploy", app_name)
    assert result.returncode == 1
    # the reason, then the app's last log lines
    assert result.stderr.startswith("error: deployment") and "code 3" in result.stderr
    assert "crashing on purpose" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_errors_are_one_line(stack: Stack, tmp_path: Path) -> None:
    missing = _cli(stack, tmp_path, "apps", "show", "no-such-app")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no app named 'no-such-app' (that you can see)"
    bad_token = _cli(stack, tmp_path, "apps", "list", token="mp_wrong")
    assert bad_token.returncode == 1
    assert bad_token.stderr.strip() == "error: 401: missing, invalid, expired or revoked token"
    invalid = _cli(stack, tmp_path, "apps", "create", "Bad_Name", "--image", "x", "--port", "80")
    assert invalid.returncode == 1 and invalid.stderr.startswith("error: 422: name:")
    logged_out = _cli(stack, tmp_path, "apps", "list", token="")
    assert logged_out.returncode == 1 and "minipaas login" in logged_out.stderr
    assert "Traceback" not in missing.stderr + bad_token.stderr + invalid.stderr


def test_cli_login_stores_a_private_config(stack: Stack, tmp_path: Path) -> None:
    result = _cli(
        stack,
        tmp_path,
        "login",
        "--url",
        stack.api_url,
        token="",
        stdin=stack.env["ADMIN_TOKEN"] + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "logged in" in result.stdout and "admin" in result.stdout
    config = tmp_path / "config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["url"] == stack.api_url
    # the stored login is used when no env vars are set
    listed = _cli(stack, tmp_path, "apps", "list", "--json", token="")
    assert listed.returncode == 0, listed.stderr


def test_cli_logs_follow_prints_new_lines(stack: Stack, tmp_path: Path, app_name: str) -> None:
    import httpx

    assert _cli(stack, tmp_path, "apps", "create", app_name, "--image", HELLO_V1, "--port", "80")
    assert _cli(stack, tmp_path, "deploy", app_name).returncode == 0
    env = {
        **os.environ,
        "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
        "MINIPAAS_URL": stack.api_url,
        "MINIPAAS_TOKEN": stack.env["ADMIN_TOKEN"],
    }
    follower = subprocess.Popen(
        [sys.executable, "-m", "minipaas", "logs", app_name, "-f", "--tail", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert "response:200" in first
        app_id = json.loads(_cli(stack, tmp_path, "apps", "show", app_name, "--json").stdout)["id"]
        httpx.get(f"{stack.router_url}/apps/{app_id}/")  # a new line to follow
        assert "response:200" in follower.stdout.readline()
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_cli_domains(stack: Stack, tmp_path: Path, app_name: str) -> None:
    def ok(*args: str) -> str:
        result = _cli(stack, tmp_path, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    hostname = f"www.{app_name}.example.test"
    ok("apps", "create", app_name, "--image", HELLO_V1, "--port", "80")
    added = json.loads(ok("domains", "add", app_name, hostname.upper(), "--json"))
    assert added["hostname"] == hostname
    assert hostname in ok("domains", "list", app_name)  # the table
    assert [d["hostname"] for d in json.loads(ok("domains", "list", app_name, "--json"))] == [
        hostname
    ]
    shown = json.loads(ok("apps", "show", app_name, "--json"))
    assert shown["domains"] == [hostname]
    assert shown["url"].startswith(f"http://{app_name}.{stack.settings.apps_domain}:")
    # piped, the table is tab-separated with full values (a terminal would cut them)
    listed = ok("apps", "list").splitlines()
    assert listed[0].split("\t") == ["id", "name", "status", "image", "url", "status_detail"]
    assert any(shown["url"] in line.split("\t") for line in listed[1:])
    taken = _cli(stack, tmp_path, "domains", "add", app_name, hostname)
    assert taken.returncode == 1
    assert taken.stderr.strip() == f"error: 409: '{hostname}' is already a domain of app {app_name}"
    assert (
        ok("domains", "remove", app_name, hostname).strip() == f"removed {hostname} from {app_name}"
    )
    assert json.loads(ok("domains", "list", app_name, "--json")) == []


def test_cli_never_takes_a_name_of_digits_for_another_apps_id(
    stack: Stack, tmp_path: Path, app_name: str
) -> None:
    refused = _cli(stack, tmp_path, "apps", "create", "31337", "--image", HELLO_V1, "--port", "80")
    assert refused.returncode == 1 and "digits only" in refused.stderr, refused.stderr

    def create(name: str) -> int:
        result = _cli(stack, tmp_path, "apps", "create", name, "--image", HELLO_V1, "--port", "80")
        assert result.returncode == 0, result.stderr
        shown = _cli(stack, tmp_path, "apps", "show", name, "--json")
        return int(json.loads(shown.stdout)["id"])

    first, second = create(f"{app_name}-a"), create(f"{app_name}-b")
    # an app named with digits from before the rule, equal to the other app's id
    with get_session() as db:
        db.execute(update(App).where(App.id == second).values(name=str(first)))
        db.commit()
    deleted = _cli(stack, tmp_path, "apps", "delete", str(first), "--yes")
    assert deleted.returncode == 1 and "both the name of app" in deleted.stderr, deleted.stderr
    listed = json.loads(_cli(stack, tmp_path, "apps", "list", "--json").stdout)
    assert {first, second} <= {app["id"] for app in listed}  # nothing was deleted
    # by its name's id, the first app is still reachable; then both go
    assert _cli(stack, tmp_path, "apps", "delete", f"{app_name}-a", "--yes").returncode == 0
    gone = _cli(stack, tmp_path, "apps", "delete", str(first), "--yes")
    assert gone.returncode == 0, gone.stderr  # no longer ambiguous: only a name now
    listed = json.loads(_cli(stack, tmp_path, "apps", "list", "--json").stdout)
    assert not {first, second} & {app["id"] for app in listed}


def test_cli_usage_errors_are_one_line_and_exit_1(stack: Stack, tmp_path: Path) -> None:
    missing = _cli(stack, tmp_path, "apps", "show")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: Missing argument 'app'. (see: minipaas apps show --help)"
    )
    unknown = _cli(stack, tmp_path, "apps", "nope")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: No such command")
    assert "╭" not in missing.stderr + unknown.stderr  # no framed box
    # the token is asked for when not given: --help must not call it required
    helped = _cli(stack, tmp_path, "login", "--help")
    assert helped.returncode == 0 and "asked for when not given" in helped.stdout
    token_line = next(line for line in helped.stdout.splitlines() if "--token" in line)
    assert "required" not in token_line


def test_cli_rollback_says_it_adopts_the_release_settings(
    stack: Stack, tmp_path: Path, app_name: str
) -> None:
    def ok(*args: str) -> str:
        result = _cli(stack, tmp_path, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    ok("apps", "create", app_name, "--image", HELLO_V1, "--port", "80")
    ok("deploy", app_name)
    ok("deploy", app_name, "--image", HELLO_V2)
    said = ok("rollback", app_name)
    assert "rolling back to release 1" in said and "env" in said and "limits" in said
