"""One ACME order (RFC 8555, HTTP-01) through certbot's `acme` library; no protocol code here.

The challenge tokens go to the router (a `ChallengeBoard`), which answers
/.well-known/acme-challenge/<token> on its HTTP port while the CA validates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

import requests
from acme import challenges, crypto_util, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import DeserializationError
from josepy.jwk import JWKRSA

USER_AGENT = "mini-paas"
# How long one order may take, validation and finalization included
ORDER_TIMEOUT = dt.timedelta(seconds=90)


class ChallengeBoard(Protocol):
    def put_challenge(self, token: str, key_authorization: str) -> None: ...

    def delete_challenge(self, token: str) -> None: ...


class AcmeFailure(Exception):
    """The CA refused or could not validate; the message is shown in the domain's status."""


@dataclass(frozen=True)
class AcmeAccountState:
    key_pem: str
    registration: str | None  # the CA's registration resource as JSON, None until registered


@dataclass(frozen=True)
class IssuedCertificate:
    fullchain_pem: str
    key_pem: str
    order_url: str
    not_before: dt.datetime
    not_after: dt.datetime


def new_account_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem(key)


def issue(
    *,
    directory_url: str,
    ca_bundle: Path | None,
    email: str,
    account: AcmeAccountState,
    hostname: str,
    board: ChallengeBoard,
) -> tuple[IssuedCertificate, AcmeAccountState]:
    """A certificate for `hostname`, and the account as it is now (registered)."""
    try:
        try:
            client, account = _client(directory_url, ca_bundle, email, account)
            return _order(client, hostname, board), account
        except messages.Error as exc:
            if account.registration is None or not exc.typ.endswith(":accountDoesNotExist"):
                raise
            # The CA forgot the account (a test CA restarted, an account deactivated): the
            # same key registers again
            client, account = _client(
                directory_url, ca_bundle, email, replace(account, registration=None)
            )
            return _order(client, hostname, board), account
    except AcmeFailure:
        raise
    except acme_errors.ValidationError as exc:
        raise AcmeFailure(_validation_reason(exc)) from None
    except messages.Error as exc:
        raise AcmeFailure(f"the CA refused: {exc.detail or exc.typ}") from None
    except acme_errors.TimeoutError:
        raise AcmeFailure(f"the CA did not finish within {ORDER_TIMEOUT.seconds} s") from None
    except (acme_errors.Error, requests.RequestException, DeserializationError) as exc:
        raise AcmeFailure(
            f"ACME directory {directory_url}: {str(exc) or type(exc).__name__}"
        ) from None


def _client(
    directory_url: str, ca_bundle: Path | None, email: str, account: AcmeAccountState
) -> tuple[acme_client.ClientV2, AcmeAccountState]:
    key = JWKRSA(key=serialization.load_pem_private_key(account.key_pem.encode(), None))
    # requests takes a CA bundle's path where the library's type says bool
    verify = cast(bool, str(ca_bundle)) if ca_bundle is not None else True
    net = acme_client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify)
    directory = acme_client.ClientV2.get_directory(directory_url, net)
    client = acme_client.ClientV2(directory, net)
    if account.registration is not None:
        net.account = messages.RegistrationResource.json_loads(account.registration)
        return client, account
    new = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    try:
        registration = client.new_account(new)
    except acme_errors.ConflictError as exc:
        # This key has an account there already: use it
        registration = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        net.account = registration
    return client, AcmeAccountState(account.key_pem, registration.json_dumps())


def _order(client: acme_client.ClientV2, hostname: str, board: ChallengeBoard) -> IssuedCertificate:
    domain_key = _pem(ec.generate_private_key(ec.SECP256R1()))
    csr = crypto_util.make_csr(domain_key.encode(), [hostname])
    order = client.new_order(csr)
    tokens: list[str] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account: the CA reuses it
            challenge = _http01(authz)
            response, validation = challenge.response_and_validation(client.net.key)
            token = challenge.chall.encode("token")
            board.put_challenge(token, validation)
            tokens.append(token)
            client.answer_challenge(challenge, response)
        deadline = dt.datetime.now() + ORDER_TIMEOUT
        order = client.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            # A token left behind expires in the router by itself
            with contextlib.suppress(Exception):
                board.delete_challenge(token)
    if not order.fullchain_pem:
        raise AcmeFailure("the CA finalized the order without a certificate")
    leaf = x509.load_pem_x509_certificate(order.fullchain_pem.encode())
    return IssuedCertificate(
        fullchain_pem=order.fullchain_pem,
        key_pem=domain_key,
        order_url=order.uri or "",
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authz.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    raise AcmeFailure("the CA offers no HTTP-01 challenge for this name")


def _validation_reason(exc: acme_errors.ValidationError) -> str:
    details: list[str] = []
    for authzr in exc.failed_authzrs:
        for challenge in authzr.body.challenges:
            error: Any = challenge.error
            if error is not None:
                details.append(str(error.detail or error.typ))
    detail = "; ".join(details) or "no detail from the CA"
    return f"HTTP-01 validation failed: {detail}"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
