"""The router's certificates: chosen by SNI in nginx's Lua (minipaas_tls.lua), changed at run
time through the control socket, never by a reload.

nginx needs one static certificate to start a TLS server: a self-signed fallback made here
once under DATA_DIR/tls. The state nginx serves (certificates by name, per-app redirect and
HSTS) is pushed whole and also written to DATA_DIR/tls/state.json (0600), which nginx's
master loads when it starts, so a restarted nginx serves HTTPS at once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from minipaas.config import Settings
from minipaas.files import write_atomically
from minipaas.router.control import ControlClient, load_or_create_secret
from minipaas.router.errors import RouterError
from minipaas.router.route import HOSTNAME

FALLBACK_CERT = "fallback.crt"
FALLBACK_KEY = "fallback.key"
STATE_FILE = "state.json"
MAX_NAMES = 100  # names of one certificate the router takes (minipaas_tls.lua)


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate chain and its key, served for `names` (a wildcard as "*.domain")."""

    names: tuple[str, ...]
    cert_pem: str
    key_pem: str

    def to_json(self) -> dict[str, object]:
        return {"names": list(self.names), "cert": self.cert_pem, "key": self.key_pem}


@dataclass(frozen=True)
class AppTls:
    app_id: int
    redirect: bool
    hsts_max_age: int

    def to_json(self) -> dict[str, object]:
        return {"id": self.app_id, "redirect": self.redirect, "hsts_max_age": self.hsts_max_age}


@dataclass(frozen=True)
class TlsState:
    """Everything nginx needs for HTTPS; its version is a hash of the content."""

    certs: tuple[CertificateBundle, ...] = ()
    apps: tuple[AppTls, ...] = field(default=())

    def body(self) -> dict[str, object]:
        content: dict[str, object] = {
            "certs": [c.to_json() for c in self.certs],
            "apps": [a.to_json() for a in self.apps],
        }
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return {"version": digest[:32], **content}


def certificate_names(cert_pem: str) -> tuple[str, ...]:
    """The DNS names the first certificate of a PEM chain is valid for (lowercase)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName))


def certificate_expiry(cert_pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc


def read_file_certificate(cert_file: Path, key_file: Path) -> CertificateBundle:
    """TLS_CERT_FILE / TLS_KEY_FILE as a bundle; ValueError says what is wrong with them."""
    try:
        cert_pem = cert_file.read_text()
        key_pem = key_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"TLS_CERT_FILE/TLS_KEY_FILE unreadable: {exc}") from None
    try:
        names = certificate_names(cert_pem)
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise ValueError(f"{cert_file} or {key_file} is not PEM: {exc}") from None
    if key.public_key() != cert.public_key():
        raise ValueError(f"{key_file} is not the key of the certificate in {cert_file}")
    # What the router's Lua takes: host names, "*." wildcards, at most MAX_NAMES of them
    names = tuple(n for n in names if HOSTNAME.fullmatch(n.removeprefix("*.")))[:MAX_NAMES]
    if not names:
        raise ValueError(f"the certificate in {cert_file} lists no DNS host names")
    return CertificateBundle(names=names, cert_pem=cert_pem, key_pem=key_pem)


def prepare_tls_dir(settings: Settings) -> None:
    """DATA_DIR/tls (0700) with a self-signed fallback certificate, made once."""
    directory = settings.tls_dir
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    cert_path, key_path = directory / FALLBACK_CERT, directory / FALLBACK_KEY
    if cert_path.exists() and key_path.exists():
        return
    cert_pem, key_pem = self_signed(settings.platform_host)
    write_atomically(key_path, key_pem, mode=0o600)
    write_atomically(cert_path, cert_pem, mode=0o644)


def self_signed(name: str, *, days: int = 3650) -> tuple[str, str]:
    """(certificate PEM, key PEM): what a client without SNI or a known name gets."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (fallback)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


class TlsRouter:
    """Pushes certificates and challenge tokens to nginx; every failure is a RouterError."""

    def __init__(self, settings: Settings, *, timeout: float = 5.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.state_file = settings.tls_dir / STATE_FILE
        self._client: ControlClient | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.router_tls_port != 0

    def publish(self, read_state: Callable[[], TlsState]) -> None:
        """The state `read_state` finds, read under the lock: two publishes cannot land in
        the wrong order (an older read overwriting a newer one). The file first (nginx's
        next start), then nginx's memory."""
        with self._locked():
            self._push(read_state().body())

    def _push(self, body: dict[str, object]) -> None:
        """Under the lock."""
        write_atomically(self.state_file, json.dumps(body), mode=0o600)
        self._control().request("PUT", "/tls/state", body)

    def live_version(self) -> str | None:
        answer = self._control().request("GET", "/tls/state")
        version = answer.get("version") if isinstance(answer, dict) else None
        return str(version) if version else None

    def sync(self, read_state: Callable[[], TlsState]) -> TlsState | None:
        """Pushes the state (read under the lock, as publish does) if nginx holds another
        one; the state pushed, or None when nginx had it already."""
        with self._locked():
            state = read_state()
            body = state.body()
            if self.live_version() == body["version"]:
                return None
            self._push(body)
            return state

    def put_challenge(self, token: str, key_authorization: str) -> None:
        self._control().request(
            "PUT", f"/tls/challenges/{token}", {"key_authorization": key_authorization}
        )

    def delete_challenge(self, token: str) -> None:
        self._control().request("DELETE", f"/tls/challenges/{token}")

    def _control(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(
                self.settings.router_control_socket,
                load_or_create_secret(self.settings),
                timeout=self.timeout,
            )
        return self._client

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Two publishers never leave the file and nginx holding different states."""
        self.settings.tls_dir.mkdir(parents=True, exist_ok=True)
        lock = self.settings.tls_dir / ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        except OSError as exc:
            raise RouterError(f"TLS state not saved in {self.state_file}: {exc}") from exc
        finally:
            os.close(fd)
