"""Token generation and hashing, and encryption of app env vars, under one secret key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from minipaas.config import Settings, get_settings
from minipaas.files import create_once

TOKEN_PREFIX = "mp_"
TOKEN_SHOWN_CHARS = 11  # "mp_" and 8 more: enough to recognize a token in a list


class SecretsUnreadable(Exception):
    pass


def _load_or_create_key(settings: Settings) -> bytes:
    if settings.secret_key is None:
        create_once(settings.secret_key_file, secrets.token_urlsafe(48).encode() + b"\n")
    return key_material(settings)


def key_material(settings: Settings) -> bytes:
    """The root key as configured (SECRET_KEY or DATA_DIR/secret.key): what a backup keeps.
    Never made here: a backup run without the platform's settings would keep a new key that
    opens nothing."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.secret_key_file
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise SecretsUnreadable(
            f"no SECRET_KEY is set and {path} does not exist: run this with the platform's "
            "settings (its .env or environment)"
        ) from None
    if len(key) < 32:
        raise SecretsUnreadable(f"{path} holds a key shorter than 32 bytes; restore it")
    return key


def key_opens(key: bytes, ciphertext: str) -> bool:
    """Whether values encrypted by the platform (an app's env) open with this root key."""
    try:
        Fernet(base64.urlsafe_b64encode(_derive(key, _ENV))).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


@lru_cache
def _root_key() -> bytes:
    return _load_or_create_key(get_settings())


# What the root key's derived keys are for
_ENV = "app-env"


def _derive(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()


@lru_cache  # hashed on every request (token_hash): one HMAC instead of two
def _derived(purpose: str) -> bytes:
    return _derive(_root_key(), purpose)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Keyed hash: a stolen database alone does not let anyone check guesses."""
    # hmac.digest: OpenSSL's one-shot HMAC, without building an HMAC object per request
    return hmac.digest(_derived("api-token"), token.encode(), "sha256").hex()


def shown_prefix(token: str) -> str:
    return token[:TOKEN_SHOWN_CHARS]


def _fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derived(_ENV)))


def encrypt_env(env: dict[str, str]) -> str:
    return _fernet().encrypt(json.dumps(env, sort_keys=True).encode()).decode()


def decrypt_env(ciphertext: str | None) -> dict[str, str]:
    if not ciphertext:
        return {}
    try:
        value = json.loads(_fernet().decrypt(ciphertext.encode()))
    except InvalidToken as exc:
        raise SecretsUnreadable(
            "app env vars cannot be decrypted: SECRET_KEY (or DATA_DIR/secret.key) changed"
        ) from exc
    return {str(k): str(v) for k, v in value.items()}


def _private_key_fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derived("tls-private-key")))


def encrypt_private_key(pem: str) -> str:
    """A TLS or ACME account key as stored in PostgreSQL: encrypted under SECRET_KEY."""
    return _private_key_fernet().encrypt(pem.encode()).decode()


def decrypt_private_key(ciphertext: str) -> str:
    try:
        return _private_key_fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretsUnreadable(
            "a TLS private key cannot be decrypted: SECRET_KEY (or DATA_DIR/secret.key) changed"
        ) from exc


def reset_cache() -> None:
    _root_key.cache_clear()
    _derived.cache_clear()


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer ...` header value ("" when there is none)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
