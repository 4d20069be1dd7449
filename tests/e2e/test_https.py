"""HTTPS through the real router: certificates by SNI from a file and from ACME (Debian's
`pebble`, Let's Encrypt's test CA, on loopback), renewal without dropping a connection,
backoff of a domain that fails validation, and the per-app redirect and HSTS.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import select

from minipaas.db.models import AcmeAccount, TlsCertificate
from minipaas.db.session import get_session
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack, stack_tls_ca
from tests.support.tls import Pebble, running_pebble
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Short enough to see a renewal in a test: renewed a third of the lifetime before expiry
VALIDITY_SECONDS = 45


@pytest.fixture(scope="module")
def pebble(stack: Stack) -> Iterator[Pebble]:
    settings = stack.settings
    assert settings.acme_ca_bundle is not None
    acme_port = int(settings.acme_directory_url.split(":")[2].split("/")[0])
    with running_pebble(
        acme_port=acme_port,
        http01_port=settings.router_port,
        ca_bundle=settings.acme_ca_bundle,
        validity_seconds=VALIDITY_SECONDS,
    ) as running:
        yield running


@pytest.fixture
def app(api: httpx.Client, app_name: str) -> dict[str, Any]:
    created = create_app(api, app_name, HELLO_V1)
    assert deploy(api, created["id"])["status"] == "succeeded"
    return created


def _curl(url: str, *, cacert: str, resolve: str, extra: tuple[str, ...] = ()) -> str:
    """curl's verdict: body on success, its error otherwise (it checks the name and chain)."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", cacert, "--resolve", resolve, *extra, url],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout if done.returncode == 0 else f"curl failed: {done.stderr}"


def _domain(api: httpx.Client, app_id: int, hostname: str) -> dict[str, Any]:
    listed = api.get(f"/apps/{app_id}/domains")
    assert listed.status_code == 200, listed.text
    return next(d for d in listed.json() if d["hostname"] == hostname)


def _wait_tls(api: httpx.Client, app_id: int, hostname: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        tls = _domain(api, app_id, hostname)["tls"]
        return tls if tls["status"] == status else None

    found: dict[str, Any] = eventually(
        reached, timeout=60, interval=0.5, message=f"{hostname} never became {status}"
    )
    return found


def _served_serial(port: int, hostname: str, cafile: str) -> int:
    context = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _served_serial_or_none(port: int, hostname: str, cafile: str) -> int | None:
    try:
        return _served_serial(port, hostname, cafile)
    except ssl.SSLCertVerificationError:  # still the fallback certificate
        return None


def test_a_file_given_wildcard_serves_app_hosts_and_the_platform(
    stack: Stack, app: dict[str, Any]
) -> None:
    settings = stack.settings
    port, ca = settings.router_tls_port, str(stack_tls_ca(settings))
    host = f"{app['name']}.{settings.apps_domain}"
    body = _curl(f"https://{host}:{port}/", cacert=ca, resolve=f"{host}:{port}:127.0.0.1")
    assert "v1" in body, body
    platform = settings.platform_host
    answer = _curl(
        f"https://{platform}:{port}/api/health/live",
        cacert=ca,
        resolve=f"{platform}:{port}:127.0.0.1",
    )
    assert "curl failed" not in answer, answer
    # A name no certificate lists gets the self-signed fallback, which no client trusts
    other = "nobody.example.test"
    refused = _curl(f"https://{other}:{port}/", cacert=ca, resolve=f"{other}:{port}:127.0.0.1")
    assert refused.startswith("curl failed"), refused


def test_a_custom_domain_gets_an_acme_certificate_and_serves_the_app(
    stack: Stack, api: httpx.Client, app: dict[str, Any], pebble: Pebble
) -> None:
    hostname = f"shop-{secrets.token_hex(3)}.example.test"
    added = api.post(f"/apps/{app['id']}/domains", json={"hostname": hostname})
    assert added.status_code == 201, added.text
    assert added.json()["tls"]["status"] == "pending"
    tls = _wait_tls(api, app["id"], hostname, "issued")
    assert tls["source"] == "acme" and tls["reason"] is None
    assert dt.datetime.fromisoformat(tls["expires_at"]) > dt.datetime.now(dt.UTC)
    port = stack.settings.router_tls_port

    def served() -> str | None:
        body = _curl(
            f"https://{hostname}:{port}/",
            cacert=str(pebble.root_file),
            resolve=f"{hostname}:{port}:127.0.0.1",
        )
        return body if "v1" in body else None

    # Recorded, then pushed to the router: the push follows within moments
    eventually(served, timeout=15, message="the router never served the issued certificate")
    # The key is stored encrypted, never as PEM
    with get_session() as db:
        row = db.scalar(select(TlsCertificate).where(TlsCertificate.hostname == hostname))
        assert row is not None and row.key_ciphertext is not None
        assert "PRIVATE KEY" not in row.key_ciphertext


def test_a_renewal_replaces_the_certificate_without_dropping_an_open_connection(
    stack: Stack, api: httpx.Client, app: dict[str, Any], pebble: Pebble
) -> None:
    hostname = f"renew-{secrets.token_hex(3)}.example.test"
    assert api.post(f"/apps/{app['id']}/domains", json={"hostname": hostname}).status_code == 201
    first = _wait_tls(api, app["id"], hostname, "issued")["expires_at"]
    port, cafile = stack.settings.router_tls_port, str(pebble.root_file)
    # The worker records the certificate, then pushes it to the router: wait for the push
    serial = eventually(
        lambda: _served_serial_or_none(port, hostname, cafile),
        timeout=15,
        message="the router never served the issued certificate",
    )

    # One keep-alive connection to 127.0.0.1 with the domain as SNI name and Host
    context = ssl.create_default_context(cafile=cafile)
    connection = http.client.HTTPSConnection(hostname, port, context=context, timeout=10)
    connection.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=hostname
    )
    opened = connection.sock

    def get() -> str:
        connection.request("GET", "/", headers={"Host": hostname})
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()

    assert "v1" in get()

    def renewed() -> bool:
        assert "v1" in get()  # keep the connection in use while the renewal happens
        return bool(_domain(api, app["id"], hostname)["tls"]["expires_at"] != first)

    eventually(renewed, timeout=VALIDITY_SECONDS + 30, interval=1, message="never renewed")
    assert "v1" in get()
    assert connection.sock is opened, "the keep-alive connection was dropped and reopened"
    connection.close()
    # A new connection gets the new certificate
    assert eventually(
        lambda: _served_serial(port, hostname, cafile) != serial,
        timeout=10,
        message="the router still serves the old certificate",
    )


def test_an_account_the_ca_forgot_is_registered_again(
    stack: Stack, api: httpx.Client, app: dict[str, Any], pebble: Pebble
) -> None:
    # A registration pointing at an account the CA does not know (as after the CA lost it)
    with get_session() as db:
        account = db.scalar(
            select(AcmeAccount).where(AcmeAccount.directory_url == pebble.directory_url)
        )
        if account is not None and account.registration is not None:
            registration = json.loads(account.registration)
            registration["uri"] = registration["uri"].rsplit("/", 1)[0] + "/gone"
            account.registration = json.dumps(registration)
            db.commit()
    hostname = f"again-{secrets.token_hex(3)}.example.test"
    assert api.post(f"/apps/{app['id']}/domains", json={"hostname": hostname}).status_code == 201
    assert _wait_tls(api, app["id"], hostname, "issued")["reason"] is None


def test_a_domain_failing_validation_is_backed_off_and_reported(
    api: httpx.Client, app: dict[str, Any], pebble: Pebble
) -> None:
    hostname = f"bad-{secrets.token_hex(3)}.example.test"
    # pebble's DNS sends the CA to 127.0.0.2, where nothing listens: HTTP-01 fails
    pebble.set_address(hostname, "127.0.0.2")
    assert api.post(f"/apps/{app['id']}/domains", json={"hostname": hostname}).status_code == 201
    tls = _wait_tls(api, app["id"], hostname, "failed")
    assert "HTTP-01 validation failed" in tls["reason"], tls
    next_attempt = dt.datetime.fromisoformat(tls["next_attempt_at"])
    assert next_attempt - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=14), tls
    # Reconciler passes (every second here) leave it alone until then: one failure so far
    time.sleep(4)
    with get_session() as db:
        row = db.scalar(select(TlsCertificate).where(TlsCertificate.hostname == hostname))
        assert row is not None
        assert row.failures == 1
        assert row.next_attempt_at == next_attempt


def test_http_is_redirected_to_https_per_app_and_hsts_is_off_by_default(
    stack: Stack, api: httpx.Client, app: dict[str, Any], router: httpx.Client
) -> None:
    settings = stack.settings
    host = f"{app['name']}.{settings.apps_domain}"
    tls_port, ca = settings.router_tls_port, str(stack_tls_ca(settings))
    assert app["https_redirect"] is False and app["hsts_max_age"] == 0
    plain = router.get("/?x=1", headers={"Host": host}, follow_redirects=False)
    assert plain.status_code == 200, plain.text

    changed = api.patch(f"/apps/{app['id']}", json={"https_redirect": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["https_redirect"] is True

    def redirected() -> httpx.Response | None:
        answer = router.get("/?x=1", headers={"Host": host}, follow_redirects=False)
        return answer if answer.status_code == 308 else None

    answer = eventually(redirected, timeout=10, message="HTTP was not redirected")
    assert answer.headers["location"] == f"https://{host}:{tls_port}/?x=1"
    # To the very URL asked for: not nginx's decoded, normalized path (a%2Fb is not a/b)
    encoded = router.get("/a%2Fb/%20c?x=%3F", headers={"Host": host}, follow_redirects=False)
    assert encoded.headers["location"] == f"https://{host}:{tls_port}/a%2Fb/%20c?x=%3F"
    headers = _curl(
        f"https://{host}:{tls_port}/",
        cacert=ca,
        resolve=f"{host}:{tls_port}:127.0.0.1",
        extra=("-D", "-", "-o", "/dev/null"),
    )
    assert " 200" in headers.splitlines()[0], headers
    assert "strict-transport-security" not in headers.lower()

    assert api.patch(f"/apps/{app['id']}", json={"hsts_max_age": 300}).status_code == 200
    headers = _curl(
        f"https://{host}:{tls_port}/",
        cacert=ca,
        resolve=f"{host}:{tls_port}:127.0.0.1",
        extra=("-D", "-", "-o", "/dev/null"),
    )
    assert "strict-transport-security: max-age=300" in headers.lower(), headers

    assert api.patch(f"/apps/{app['id']}", json={"https_redirect": False}).status_code == 200
    again = router.get("/?x=1", headers={"Host": host}, follow_redirects=False)
    assert again.status_code == 200
    refused = api.patch(f"/apps/{app['id']}", json={"hsts_max_age": -1})
    assert refused.status_code == 422
