from __future__ import annotations

import threading
from pathlib import Path

import pytest

from minipaas import security
from minipaas.config import Settings


def test_secret_key_file_is_created_once_even_under_a_race(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key=None)
    keys: list[bytes] = []

    def load() -> None:
        keys.append(security._load_or_create_key(settings))

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".secret.key.*"))


def test_short_secret_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret_key="short")
    assert Settings(secret_key="").secret_key is None  # empty means unset


def test_env_round_trip_and_ciphertext_hides_values() -> None:
    ciphertext = security.encrypt_env({"PASSWORD": "hunter2"})
    assert "hunter2" not in ciphertext
    assert security.decrypt_env(ciphertext) == {"PASSWORD": "hunter2"}
    assert security.decrypt_env(None) == {}


def test_tokens_have_a_prefix_and_hashes_are_keyed() -> None:
    token = security.new_token()
    assert token.startswith("mp_") and len(token) > 40
    assert security.shown_prefix(token) == token[:11]
    assert security.token_hash(token) != security.token_hash(token + "x")
    assert len(security.token_hash(token)) == 64


def test_the_key_a_backup_keeps_is_never_made_up(tmp_path: Path) -> None:
    """Run without the platform's settings, a backup made a new key and kept it: a restore
    then opened no env value and matched no token. It is an error now, and a key can be
    checked against what the database holds."""
    settings = Settings(data_dir=tmp_path, secret_key=None, _env_file=None)
    with pytest.raises(security.SecretsUnreadable, match="does not exist"):
        security.key_material(settings)
    assert not (tmp_path / "secret.key").exists()
    key = security._load_or_create_key(settings)  # as the platform makes it
    assert security.key_material(settings) == key
    security.reset_cache()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(security, "get_settings", lambda: settings)
            ciphertext = security.encrypt_env({"A": "1"})
    finally:
        security.reset_cache()
    assert security.key_opens(key, ciphertext)
    assert not security.key_opens(b"x" * 48, ciphertext)
