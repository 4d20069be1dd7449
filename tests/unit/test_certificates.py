"""Pure rules of the HTTPS certificates: renewal time, backoff, which names a certificate covers."""

from __future__ import annotations

import datetime as dt

import pytest

from minipaas.config import Settings
from minipaas.router import tls
from minipaas.services.certificates import backoff, covers, renew_at

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_renewal_starts_30_days_before_expiry_or_a_third_of_a_short_lifetime() -> None:
    assert renew_at(T0, T0 + 90 * DAY) == T0 + 60 * DAY  # Let's Encrypt's 90 days
    assert renew_at(T0, T0 + 365 * DAY) == T0 + 335 * DAY
    assert renew_at(T0, T0 + 6 * DAY) == T0 + 4 * DAY  # short-lived certificates
    assert renew_at(T0, T0 + dt.timedelta(seconds=45)) == T0 + dt.timedelta(seconds=30)


def test_backoff_doubles_and_never_allows_five_failures_an_hour() -> None:
    delays = [backoff(n) for n in range(1, 12)]
    assert delays[:4] == [dt.timedelta(minutes=m) for m in (15, 30, 60, 120)]
    assert max(delays) == DAY and backoff(10_000) == DAY
    # the tries of the first hour: at 0, 15 and 45 minutes
    tries, at = [dt.timedelta(0)], dt.timedelta(0)
    for failures in range(1, 10):
        at += backoff(failures)
        tries.append(at)
    assert len([t for t in tries if t < dt.timedelta(hours=1)]) < 5


@pytest.mark.parametrize(
    ("names", "hostname", "covered"),
    [
        (("shop.example.com",), "shop.example.com", True),
        (("*.example.com",), "shop.example.com", True),
        (("*.example.com",), "example.com", False),
        (("*.example.com",), "a.shop.example.com", False),
        (("other.example.com",), "shop.example.com", False),
    ],
)
def test_covers_matches_exact_names_and_one_label_wildcards(
    names: tuple[str, ...], hostname: str, covered: bool
) -> None:
    assert covers(names, hostname) is covered


def test_a_file_certificate_must_match_its_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = tls.self_signed("one.example.test")
    _, other_key = tls.self_signed("two.example.test")
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(other_key)
    with pytest.raises(ValueError, match="is not the key of the certificate"):
        tls.read_file_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    (tmp_path / "key.pem").write_text(key)
    bundle = tls.read_file_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert bundle.names == ("one.example.test",)


def test_settings_refuse_half_a_certificate_and_a_plain_http_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "ACME_DIRECTORY_URL"):
        monkeypatch.delenv(name, raising=False)  # a test stack in this process sets them
    with pytest.raises(ValueError, match="TLS_CERT_FILE and TLS_KEY_FILE"):
        Settings(tls_cert_file="/x.pem", _env_file=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https://"):
        Settings(acme_directory_url="http://ca.example/dir", _env_file=None)
    assert Settings(tls_cert_file="", tls_key_file="", _env_file=None).tls_cert_file is None  # type: ignore[arg-type]
