"""Certificates for the HTTPS tests, and Let's Encrypt's test CA (Debian's `pebble`) on loopback.

Pebble validates HTTP-01 by asking pebble-challtestsrv's DNS for the domain (every name is
127.0.0.1, or what a test sets) and connecting to its `httpPort`: the router's HTTP port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.waiting import eventually


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_ca_and_leaf(
    directory: Path, names: list[str], *, ips: tuple[str, ...] = ()
) -> tuple[Path, Path, Path]:
    """A throw-away CA and a leaf for `names` (wildcards allowed): (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mini-paas test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_key_pem(key))
    paths[2].chmod(0o600)
    return paths


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    management_url: str
    challtestsrv_url: str
    root_file: Path  # pebble's issuing root, from its management endpoint

    def set_address(self, host: str, address: str) -> None:
        """What pebble's DNS answers for `host` (127.0.0.2: nothing listens, validation fails)."""
        body = json.dumps({"host": host, "addresses": [address]}).encode()
        request = urllib.request.Request(f"{self.challtestsrv_url}/add-a", data=body)
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


@contextlib.contextmanager
def running_pebble(
    *, acme_port: int, http01_port: int, ca_bundle: Path, validity_seconds: int
) -> Iterator[Pebble]:
    """pebble on 127.0.0.1:acme_port (its HTTPS certificate's CA written to `ca_bundle`)."""
    from tests.support.stack import free_port

    work = Path(tempfile.mkdtemp(prefix="pebble-"))
    ca, cert, key = write_ca_and_leaf(work / "https", ["localhost"], ips=("127.0.0.1",))
    ca_bundle.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, ca_bundle)
    dns_port, challtest_port, management_port = free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http01_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity_seconds,
        }
    }
    (work / "pebble.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    logs = (work / "challtestsrv.log").open("wb"), (work / "pebble.log").open("wb")
    challtestsrv = subprocess.Popen(
        [
            "pebble-challtestsrv",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"127.0.0.1:{challtest_port}",
        ],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    pebble = subprocess.Popen(
        ["pebble", "-config", str(work / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
        stdout=logs[1],
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        context = ssl.create_default_context(cafile=str(ca))
        management = f"https://127.0.0.1:{management_port}"

        def root() -> bytes:
            with urllib.request.urlopen(f"{management}/roots/0", context=context, timeout=3) as r:
                return bytes(r.read())

        root_pem = eventually(
            root, timeout=20, interval=0.2, retry_on=(OSError,), message="pebble did not start"
        )
        root_file = work / "pebble-root.pem"
        root_file.write_bytes(root_pem)
        yield Pebble(
            directory_url=f"https://127.0.0.1:{acme_port}/dir",
            management_url=management,
            challtestsrv_url=f"http://127.0.0.1:{challtest_port}",
            root_file=root_file,
        )
    finally:
        for process in (pebble, challtestsrv):
            process.terminate()
        for process in (pebble, challtestsrv):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
        shutil.rmtree(work, ignore_errors=True)
