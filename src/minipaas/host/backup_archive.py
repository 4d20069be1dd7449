"""The encrypted backup archive: named members streamed through AES-256-GCM in chunks.

Layout: MAGIC, a 4-byte length and a JSON header (format, key derivation and its salt, nonce
prefix), then chunks, each a 4-byte length and its ciphertext. A chunk's plaintext is one
piece of one member: a 1-byte name length, the name, the data. The nonce of chunk i is the
archive's 7-byte prefix, i (4 bytes) and a last-chunk flag (the STREAM construction of
Hoang, Reyhanitabar, Rogaway and Vizar), and every chunk authenticates the header: a chunk
altered, dropped, moved or taken from another archive, or a header changed, fails to decrypt,
and an archive whose flagged last chunk is missing is truncated.

Keys: scrypt from a passphrase, or HKDF-SHA256 from a key file (already random).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"MINIPAAS-BACKUP\n"
FORMAT = 1
CHUNK_SIZE = 1024 * 1024
# scrypt at 2**17 x 8: 128 MiB and ~0.4 s, once per backup or restore
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
# A hostile header must not make a restore allocate gigabytes: scrypt takes 128 * n * r bytes
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_HEADER = 4096
_MIN_KEY_FILE_BYTES = 32
_MIN_PASSPHRASE = 12


class ArchiveError(Exception):
    """The archive cannot be read: the message says why and what to do."""


@dataclass(frozen=True)
class Secret:
    """What opens an archive: a passphrase or the contents of a key file."""

    value: bytes
    from_key_file: bool

    @classmethod
    def passphrase(cls, text: str) -> Secret:
        return cls(text.encode(), from_key_file=False)

    @classmethod
    def key_file(cls, path: Path) -> Secret:
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            raise ArchiveError(f"cannot read the key file {path}: {exc.strerror}") from None
        if len(value) < _MIN_KEY_FILE_BYTES:
            raise ArchiveError(
                f"the key file {path} holds {len(value)} bytes; it needs at least "
                f"{_MIN_KEY_FILE_BYTES} random ones (e.g. `openssl rand -base64 48 > {path}`)"
            )
        return cls(value, from_key_file=True)

    def check_strong_enough(self) -> None:
        """For a new archive only: a restore must open old ones whatever they used."""
        if not self.from_key_file and len(self.value) < _MIN_PASSPHRASE:
            raise ArchiveError(
                f"the passphrase is shorter than {_MIN_PASSPHRASE} characters; the archive "
                "holds the key to every app secret, choose a longer one"
            )


def _derive(secret: Secret, kdf: dict[str, object]) -> bytes:
    salt = base64.b64decode(str(kdf["salt"]))
    if kdf.get("name") == "hkdf-sha256":
        if not secret.from_key_file:
            raise ArchiveError("this archive was made with --key-file: give that key file")
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=salt, info=b"minipaas-backup"
        ).derive(secret.value)
    if kdf.get("name") != "scrypt":
        raise ArchiveError(f"unknown key derivation {kdf.get('name')!r}: a newer mini-paas?")
    if secret.from_key_file:
        raise ArchiveError("this archive was made with a passphrase: give the passphrase")
    n, r, p = int(str(kdf["n"])), int(str(kdf["r"])), int(str(kdf["p"]))
    if not (n >= 2 and 1 <= r <= 32 and 1 <= p <= 16 and 128 * n * r <= _MAX_SCRYPT_MEMORY):
        raise ArchiveError("the archive's key derivation parameters are out of range")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret.value)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I?", index, last)


class ArchiveWriter:
    """Writes members one after another; `close` writes the final (flagged) chunk."""

    def __init__(self, out: IO[bytes], secret: Secret) -> None:
        secret.check_strong_enough()
        salt = os.urandom(16)
        if secret.from_key_file:
            kdf: dict[str, object] = {"name": "hkdf-sha256"}
        else:
            kdf = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        kdf["salt"] = base64.b64encode(salt).decode()
        self._prefix = os.urandom(7)
        header = {"format": FORMAT, "kdf": kdf, "nonce_prefix": self._prefix.hex()}
        self._header = json.dumps(header, sort_keys=True).encode()
        self._aead = AESGCM(_derive(secret, kdf))
        self._out = out
        self._index = 0
        out.write(MAGIC + struct.pack(">I", len(self._header)) + self._header)

    def _chunk(self, name: str, data: bytes, *, last: bool) -> None:
        encoded = name.encode()
        plain = bytes([len(encoded)]) + encoded + data
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), plain, self._header)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def add_stream(self, name: str, source: IO[bytes]) -> tuple[int, str]:
        """Copies `source` in as member `name`; returns its size and sha256."""
        digest, size = hashlib.sha256(), 0
        while piece := source.read(CHUNK_SIZE):
            digest.update(piece)
            size += len(piece)
            self._chunk(name, piece, last=False)
        if size == 0:
            self._chunk(name, b"", last=False)  # an empty member still exists
        return size, digest.hexdigest()

    def add_bytes(self, name: str, data: bytes) -> tuple[int, str]:
        self._chunk(name, data, last=False)
        return len(data), hashlib.sha256(data).hexdigest()

    def close(self, final_name: str, final_data: bytes) -> None:
        """The last member (the manifest) goes in the flagged chunk."""
        self._chunk(final_name, final_data, last=True)


@dataclass(frozen=True)
class Piece:
    name: str
    data: bytes
    last: bool


def read_pieces(source: IO[bytes], secret: Secret) -> Iterator[Piece]:
    """Decrypts chunk by chunk; raises ArchiveError at the first thing wrong."""
    if source.read(len(MAGIC)) != MAGIC:
        raise ArchiveError("this is not a mini-paas backup archive")
    header_length = _read_exact(source, 4)
    (length,) = struct.unpack(">I", header_length)
    if length > _MAX_HEADER:
        raise ArchiveError("the archive's header is damaged")
    header_bytes = _read_exact(source, length)
    try:
        header = json.loads(header_bytes)
        if header.get("format") != FORMAT:
            raise ArchiveError(
                f"archive format {header.get('format')} is not {FORMAT}: made by another version"
            )
        prefix = bytes.fromhex(header["nonce_prefix"])
        key = _derive(secret, header["kdf"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArchiveError("the archive's header is damaged") from None
    if len(prefix) != 7:
        raise ArchiveError("the archive's header is damaged")
    aead = AESGCM(key)
    index = 0
    while True:
        size_bytes = source.read(4)
        if len(size_bytes) < 4:
            raise ArchiveError(
                "the archive is truncated (it ends before its last part): copy it again"
            )
        (size,) = struct.unpack(">I", size_bytes)
        if size > CHUNK_SIZE + 512:
            raise ArchiveError("the archive is damaged (a part is larger than any written)")
        sealed = _read_exact(source, size)
        plain, last = _open(aead, prefix, index, sealed, header_bytes)
        name_length = plain[0]
        yield Piece(plain[1 : 1 + name_length].decode(), plain[1 + name_length :], last)
        index += 1
        if last:
            if source.read(1):
                raise ArchiveError("the archive has data after its end: it was altered")
            return


def _open(
    aead: AESGCM, prefix: bytes, index: int, sealed: bytes, header: bytes
) -> tuple[bytes, bool]:
    for last in (False, True):
        try:
            return aead.decrypt(_nonce(prefix, index, last), sealed, header), last
        except InvalidTag:
            continue
    if index == 0:
        raise ArchiveError(
            "the passphrase (or key file) does not open this archive: check it "
            "(or the archive was altered)"
        )
    raise ArchiveError(f"the archive is damaged or was altered (part {index} fails its check)")


def _read_exact(source: IO[bytes], size: int) -> bytes:
    data = source.read(size)
    if len(data) < size:
        raise ArchiveError(
            "the archive is truncated (it ends in the middle of a part): copy it again"
        )
    return data
