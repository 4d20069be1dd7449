"""The router's HTTPS against a real nginx with the Lua module; no Docker needed.

Certificates are chosen by SNI from nginx's shared memory: added and replaced without a reload,
back at once after nginx is killed, a bad one refused while the good one keeps serving.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from minipaas.config import Settings
from minipaas.router import tls
from minipaas.router.dynamic_render import NGINX_MODULES, RouterConfig, render_router_config
from minipaas.router.errors import RouterError
from minipaas.router.lua_router import LuaRouter
from tests.support.stack import free_port
from tests.support.tls import write_ca_and_leaf


@dataclass
class TlsRig:
    settings: Settings
    router: LuaRouter
    tls: tls.TlsRouter
    dir: Path

    def bundle(self, names: list[str], tag: str) -> tuple[tls.CertificateBundle, str]:
        """A certificate for `names` from a CA of its own: (bundle, CA file)."""
        ca, cert, key = write_ca_and_leaf(self.dir / tag, names)
        return tls.CertificateBundle(tuple(names), cert.read_text(), key.read_text()), str(ca)

    def served(self, name: str | None) -> x509.Certificate:
        """The certificate the router presents for SNI `name` (unverified)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", self.settings.router_tls_port), 5) as raw,
            context.wrap_socket(raw, server_hostname=name) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def rig() -> Iterator[TlsRig]:
    missing = [str(module) for module in NGINX_MODULES if not module.exists()]
    if missing or shutil.which("nginx") is None:
        pytest.fail(f"nginx with the Lua module is needed ({missing}); run scripts/install-deps.sh")
    data_dir = Path(tempfile.mkdtemp(prefix="mpt-"))
    settings = Settings(
        data_dir=data_dir,
        router_host="127.0.0.1",
        router_port=free_port(),
        router_tls_port=free_port(),
        app_host="127.0.0.1",
        app_port=free_port(),
        _env_file=None,
    )
    router = LuaRouter(settings)
    try:
        router.ensure_running()
        yield TlsRig(settings, router, tls.TlsRouter(settings), data_dir / "certs")
    finally:
        router.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_certificates_by_sni_change_without_a_reload(rig: TlsRig) -> None:
    master, workers = rig.router.pid(), rig.router.worker_pids()
    fallback = rig.served("shop.example.test")
    assert "fallback" in fallback.subject.rfc4514_string()

    shop, shop_ca = rig.bundle(["shop.example.test"], "shop")
    wildcard, _ = rig.bundle(["*.apps.example.test"], "wild")
    rig.tls.publish(lambda: tls.TlsState(certs=(shop, wildcard)))
    assert rig.served("shop.example.test").serial_number != fallback.serial_number
    assert "apps.example.test" in rig.served("web.apps.example.test").subject.rfc4514_string()
    # one label only, as browsers match wildcards
    assert rig.served("a.b.apps.example.test").serial_number == fallback.serial_number
    assert rig.served(None).serial_number == fallback.serial_number

    # A real client verifies the chain and the name
    port = rig.settings.router_tls_port
    context = ssl.create_default_context(cafile=shop_ca)
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw, server_hostname="shop.example.test") as verified,
    ):
        assert verified.version() in ("TLSv1.2", "TLSv1.3")

    renewed, _ = rig.bundle(["shop.example.test"], "shop2")
    rig.tls.publish(lambda: tls.TlsState(certs=(renewed, wildcard)))
    assert (
        rig.served("shop.example.test").serial_number
        == x509.load_pem_x509_certificate(renewed.cert_pem.encode()).serial_number
    )
    # dropped from the state: the fallback again
    rig.tls.publish(lambda: tls.TlsState(certs=(wildcard,)))
    assert rig.served("shop.example.test").serial_number == fallback.serial_number

    assert rig.router.pid() == master
    assert rig.router.worker_pids() == workers
    assert rig.router.ensure_running() is False


def test_a_bad_certificate_is_refused_and_the_served_one_stays(rig: TlsRig) -> None:
    good, _ = rig.bundle(["keep.example.test"], "keep")
    rig.tls.publish(lambda: tls.TlsState(certs=(good,)))
    serial = rig.served("keep.example.test").serial_number
    broken = tls.CertificateBundle(("keep.example.test",), "not a certificate", good.key_pem)
    with pytest.raises(RouterError, match="certificate 1"):
        rig.tls.publish(lambda: tls.TlsState(certs=(broken,)))
    assert rig.served("keep.example.test").serial_number == serial


def test_kill_9_then_start_serves_the_certificates_at_once(rig: TlsRig) -> None:
    kept, _ = rig.bundle(["kept.example.test"], "kept")
    rig.tls.publish(lambda: tls.TlsState(certs=(kept,)))
    serial = rig.served("kept.example.test").serial_number
    assert (rig.tls.state_file.stat().st_mode & 0o777) == 0o600
    assert (rig.settings.tls_dir / tls.FALLBACK_KEY).stat().st_mode & 0o077 == 0

    master = rig.router.pid()
    assert master is not None
    for pid in (master, *rig.router.worker_pids()):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rig.router.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.router.ensure_running() is True
    assert rig.served("kept.example.test").serial_number == serial


def test_challenge_tokens_are_served_on_http_only_while_set(rig: TlsRig) -> None:
    url = f"{rig.settings.router_probe_url}/.well-known/acme-challenge/tok-1"
    headers = {"Host": "shop.example.test"}
    assert httpx.get(url, headers=headers).status_code == 404
    rig.tls.put_challenge("tok-1", "tok-1.thumbprint")
    answer = httpx.get(url, headers=headers)
    assert answer.status_code == 200 and answer.text == "tok-1.thumbprint"
    rig.tls.delete_challenge("tok-1")
    assert httpx.get(url, headers=headers).status_code == 404
    # the control paths are on the unix socket only
    control = httpx.get(f"{rig.settings.router_probe_url}/tls/state", headers=headers)
    assert control.status_code != 200 or "version" not in control.text


def test_without_a_tls_port_nothing_about_tls_is_rendered(rig: TlsRig) -> None:
    plain = RouterConfig(
        nginx_dir=rig.dir,
        log_dir=rig.dir,
        run_dir=rig.dir,
        control_socket=rig.dir / "c.sock",
        secret_file=rig.dir / "secret",
        snapshot_file=rig.dir / "snapshot",
        journal_file=rig.dir / "journal",
        listen="127.0.0.1:8080",
        api_address="127.0.0.1:8081",
        platform_host="minipaas.localhost",
        run_as_root=False,
    )
    text = render_router_config(plain).text
    assert "ssl" not in text and "minipaas_tls" not in text
    with pytest.raises(ValueError, match="tls_dir"):
        RouterConfig(**{**plain.__dict__, "tls_listen": "127.0.0.1:8443"})


def test_a_publish_is_not_undone_by_an_older_read(rig: TlsRig) -> None:
    """A request read the TLS state (a domain's certificate still in it) just before another
    removed the domain and published: its older state landed last, and the removed name's
    certificate was served again until the reconciler's next pass. Reads are under the lock."""
    old, _ = rig.bundle(["gone.example.test"], "gone")
    newer = tls.TlsState(certs=())
    read_started, publish_done = threading.Event(), threading.Event()

    def stale_read() -> tls.TlsState:
        read_started.set()
        publish_done.wait(timeout=1)  # the newer publish waits for the lock meanwhile
        return tls.TlsState(certs=(old,))

    def publish_newer() -> None:
        read_started.wait(timeout=5)
        rig.tls.publish(lambda: newer)
        publish_done.set()

    publisher = threading.Thread(target=publish_newer)
    publisher.start()
    rig.tls.publish(stale_read)
    publisher.join(timeout=10)
    assert rig.tls.live_version() == newer.body()["version"]
    assert rig.tls.sync(lambda: newer) is None  # nothing left to push
