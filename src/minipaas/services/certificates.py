"""HTTPS certificates: what the router serves (TLS_CERT_FILE and ACME), getting and renewing
ACME ones for apps' own domains, and where each domain stands.

Every attempt is written to PostgreSQL before the CA is asked (its next_attempt_at already
pushed back), so a worker killed mid-order never makes the next one retry at once: failures
per hostname stay under the CA's limits (Let's Encrypt: 5 failed validations an hour).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from functools import partial

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from minipaas import security
from minipaas.config import Settings, get_settings
from minipaas.db.models import AcmeAccount, App, AppDomain, TlsCertificate
from minipaas.db.session import get_session
from minipaas.router import tls
from minipaas.router.errors import RouterError
from minipaas.services import acme_issuer

log = logging.getLogger(__name__)

RENEW_BEFORE = dt.timedelta(days=30)
# Exponential per hostname: 15 min, 30 min, 1 h, ... a day; at most 4 tries in any hour
BACKOFF_BASE = dt.timedelta(minutes=15)
BACKOFF_MAX = dt.timedelta(days=1)
# Orders one reconciler pass starts at most, and no new one after this long in the pass: the
# other steps of the pass wait meanwhile (the rest of the names wait for the next pass)
ORDERS_PER_PASS = 5
PASS_BUDGET_SECONDS = 30.0

PENDING, ISSUED, FAILED, OFF = "pending", "issued", "failed", "off"


@dataclass(frozen=True)
class DomainTls:
    """A domain's HTTPS status as the API shows it."""

    status: str  # pending | issued | failed | off
    source: str | None  # acme | file
    reason: str | None
    next_attempt_at: dt.datetime | None
    expires_at: dt.datetime | None


def renew_at(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """30 days before expiry, or a third of the lifetime for certificates shorter than 90 days."""
    return not_after - min(RENEW_BEFORE, (not_after - not_before) / 3)


def backoff(failures: int) -> dt.timedelta:
    if failures <= 0:
        return dt.timedelta(0)
    delay: dt.timedelta = BACKOFF_BASE * 2 ** min(failures - 1, 16)
    return min(delay, BACKOFF_MAX)


def covers(names: tuple[str, ...], hostname: str) -> bool:
    """True if a certificate for `names` is valid for `hostname` (one-label wildcards)."""
    parent = hostname.partition(".")[2]
    return hostname in names or (bool(parent) and f"*.{parent}" in names)


def tls_router() -> tls.TlsRouter:
    return tls.TlsRouter(get_settings())


# --- what the router serves ---------------------------------------------------------------


def file_certificate(settings: Settings) -> tls.CertificateBundle | None:
    """TLS_CERT_FILE/TLS_KEY_FILE, None when unset or unusable (logged: the rest still serves)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        return tls.read_file_certificate(settings.tls_cert_file, settings.tls_key_file)
    except ValueError as exc:
        log.error("TLS_CERT_FILE not served: %s", exc)
        return None


def tls_state(db: Session, settings: Settings) -> tls.TlsState:
    now = dt.datetime.now(dt.UTC)
    certs: list[tls.CertificateBundle] = []
    from_file = file_certificate(settings)
    if from_file is not None:
        certs.append(from_file)
    rows = db.execute(
        select(TlsCertificate.hostname, TlsCertificate.cert_pem, TlsCertificate.key_ciphertext)
        .join(AppDomain, AppDomain.hostname == TlsCertificate.hostname)
        .where(TlsCertificate.cert_pem.is_not(None), TlsCertificate.not_after > now)
        .order_by(TlsCertificate.hostname)
    ).all()
    for hostname, cert_pem, key_ciphertext in rows:
        if cert_pem is None or key_ciphertext is None:
            continue
        try:
            key_pem = security.decrypt_private_key(key_ciphertext)
        except security.SecretsUnreadable as exc:
            log.error("certificate of %s not served: %s", hostname, exc)
            continue
        # After the file's: an exact ACME name wins over the file's same name
        certs.append(tls.CertificateBundle((hostname,), cert_pem, key_pem))
    apps = db.execute(
        select(App.id, App.https_redirect, App.hsts_max_age)
        .where((App.https_redirect.is_(True)) | (App.hsts_max_age > 0))
        .order_by(App.id)
    ).all()
    return tls.TlsState(
        certs=tuple(certs),
        apps=tuple(tls.AppTls(app_id, bool(redirect), hsts) for app_id, redirect, hsts in apps),
    )


def publish_tls() -> None:
    """Makes the router serve what the database and the files say (RouterError if it can't)."""
    settings = get_settings()
    if not settings.router_tls_port:
        return
    tls_router().publish(partial(_read_tls_state, settings))


def publish_tls_best_effort() -> None:
    try:
        publish_tls()
    except (RouterError, OSError) as exc:
        # The reconciler's next sync_tls pushes it
        log.warning("TLS state not pushed to the router now: %s", exc)


def sync_tls() -> list[str]:
    """Reconciler step: the router's TLS state follows the database and the files."""
    settings = get_settings()
    if not settings.router_tls_port:
        return []
    pushed = tls_router().sync(partial(_read_tls_state, settings))
    if pushed is not None:
        return [f"pushed the TLS state ({len(pushed.certs)} certificates) to the router"]
    return []


def _read_tls_state(settings: Settings) -> tls.TlsState:
    with get_session() as db:
        return tls_state(db, settings)


# --- ACME ---------------------------------------------------------------------------------


def renew_due_certificates() -> list[str]:
    """Reconciler step: orders certificates for domains that have none or need renewal."""
    settings = get_settings()
    if not settings.acme_directory_url or not settings.router_tls_port:
        return []
    done = []
    started = time.monotonic()
    for hostname in _due_hostnames(settings)[:ORDERS_PER_PASS]:
        if time.monotonic() - started > PASS_BUDGET_SECONDS:
            break
        outcome = attempt(hostname)
        if outcome:
            done.append(outcome)
    return done


def _due_hostnames(settings: Settings) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    covered = file_certificate(settings)
    with get_session() as db:
        rows = db.execute(
            select(
                AppDomain.hostname,
                TlsCertificate.status,
                TlsCertificate.next_attempt_at,
                TlsCertificate.not_before,
                TlsCertificate.not_after,
            )
            .outerjoin(TlsCertificate, TlsCertificate.hostname == AppDomain.hostname)
            .order_by(AppDomain.hostname)
        ).all()
    due = []
    for hostname, status, next_attempt_at, not_before, not_after in rows:
        if covered is not None and covers(covered.names, hostname):
            continue
        if next_attempt_at is not None and next_attempt_at > now:
            continue
        if status == ISSUED and not_before and not_after and renew_at(not_before, not_after) > now:
            continue
        due.append(hostname)
    return due


def attempt(hostname: str) -> str | None:
    """One order for `hostname`, recorded before and after; None if another worker has it."""
    settings = get_settings()
    if not _claim(hostname):
        return None
    try:
        account = _account(settings)
        issued, account = acme_issuer.issue(
            directory_url=settings.acme_directory_url,
            ca_bundle=settings.acme_ca_bundle,
            email=settings.acme_email,
            account=account,
            hostname=hostname,
            board=tls_router(),
        )
    except (acme_issuer.AcmeFailure, RouterError, OSError) as exc:
        return _record_failure(hostname, str(exc))
    _save_account(settings, account)
    _record_success(hostname, issued)
    publish_tls_best_effort()
    return f"certificate for {hostname} issued, valid until {issued.not_after:%Y-%m-%d %H:%M}"


def _claim(hostname: str) -> bool:
    """Writes the attempt (and the next one's earliest time) first; False if it is taken."""
    now = dt.datetime.now(dt.UTC)
    with get_session() as db:
        db.execute(
            insert(TlsCertificate)
            .values(hostname=hostname, status=PENDING, failures=0)
            .on_conflict_do_nothing(index_elements=["hostname"])
        )
        row = db.scalar(
            select(TlsCertificate)
            .where(TlsCertificate.hostname == hostname)
            .with_for_update(skip_locked=True)
        )
        if row is None or (row.next_attempt_at is not None and row.next_attempt_at > now):
            db.rollback()
            return False
        row.last_attempt_at = now
        # As if this try fails: a killed worker leaves the backoff in place
        row.next_attempt_at = now + backoff(row.failures + 1)
        db.commit()
        return True


def _record_failure(hostname: str, reason: str) -> str:
    now = dt.datetime.now(dt.UTC)
    with get_session() as db:
        row = db.scalar(
            select(TlsCertificate).where(TlsCertificate.hostname == hostname).with_for_update()
        )
        if row is None:
            return f"certificate for {hostname}: {reason}"
        row.failures += 1
        row.next_attempt_at = now + backoff(row.failures)
        still_valid = row.cert_pem is not None and row.not_after is not None and row.not_after > now
        # A failed renewal keeps serving the certificate it has
        row.status = ISSUED if still_valid else FAILED
        row.reason = f"renewal failed: {reason}" if still_valid else reason
        db.commit()
        when = row.next_attempt_at
    log.warning("certificate for %s not issued: %s; next try at %s", hostname, reason, when)
    return f"certificate for {hostname} failed ({reason[:200]}); next try at {when:%H:%M:%S}"


def _record_success(hostname: str, issued: acme_issuer.IssuedCertificate) -> None:
    with get_session() as db:
        row = db.scalar(
            select(TlsCertificate).where(TlsCertificate.hostname == hostname).with_for_update()
        )
        if row is None:
            row = TlsCertificate(hostname=hostname)
            db.add(row)
        row.status = ISSUED
        row.reason = None
        row.failures = 0
        row.next_attempt_at = None
        row.order_url = issued.order_url
        row.cert_pem = issued.fullchain_pem
        row.key_ciphertext = security.encrypt_private_key(issued.key_pem)
        row.not_before = issued.not_before
        row.not_after = issued.not_after
        db.commit()


def _account(settings: Settings) -> acme_issuer.AcmeAccountState:
    """The account key for this directory, made once (first writer wins)."""
    url = settings.acme_directory_url
    with get_session() as db:
        db.execute(
            insert(AcmeAccount)
            .values(
                directory_url=url,
                key_ciphertext=security.encrypt_private_key(acme_issuer.new_account_key_pem()),
            )
            .on_conflict_do_nothing(index_elements=["directory_url"])
        )
        db.commit()
        row = db.scalar(select(AcmeAccount).where(AcmeAccount.directory_url == url))
        assert row is not None
        return acme_issuer.AcmeAccountState(
            security.decrypt_private_key(row.key_ciphertext), row.registration
        )


def _save_account(settings: Settings, account: acme_issuer.AcmeAccountState) -> None:
    with get_session() as db:
        row = db.scalar(
            select(AcmeAccount).where(AcmeAccount.directory_url == settings.acme_directory_url)
        )
        if row is not None and row.registration != account.registration:
            row.registration = account.registration
            db.commit()


# --- status for the API -------------------------------------------------------------------


def domain_tls(db: Session, hostnames: list[str]) -> dict[str, DomainTls]:
    """Each domain's HTTPS status: from the certificate file, its ACME row, or off."""
    settings = get_settings()
    rows = {
        row.hostname: row
        for row in db.scalars(
            select(TlsCertificate).where(TlsCertificate.hostname.in_(hostnames))
        ).all()
    }
    from_file = file_certificate(settings) if settings.router_tls_port else None
    file_expiry = tls.certificate_expiry(from_file.cert_pem) if from_file else None
    acme_on = bool(settings.acme_directory_url) and bool(settings.router_tls_port)
    result = {}
    for hostname in hostnames:
        row = rows.get(hostname)
        if from_file is not None and covers(from_file.names, hostname):
            result[hostname] = DomainTls(ISSUED, "file", None, None, file_expiry)
        elif not acme_on:
            reason = "no HTTPS here: set ROUTER_TLS_PORT and ACME_DIRECTORY_URL or TLS_CERT_FILE"
            result[hostname] = DomainTls(OFF, None, reason, None, None)
        elif row is None:
            result[hostname] = DomainTls(PENDING, "acme", None, None, None)
        else:
            result[hostname] = DomainTls(
                row.status, "acme", row.reason, row.next_attempt_at, row.not_after
            )
    return result
