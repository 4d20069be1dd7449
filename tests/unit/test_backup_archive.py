"""The backup archive's encryption: round trip, and every way a bad archive is refused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from minipaas.host import backup_archive
from minipaas.host.backup_archive import ArchiveError, ArchiveWriter, Secret, read_pieces

PASSPHRASE = Secret.passphrase("correct horse battery staple")


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parameters travel in the header: a reader uses the archive's own
    monkeypatch.setattr(backup_archive, "SCRYPT_N", 2**10)


def _archive(secret: Secret = PASSPHRASE, dump: bytes = b"") -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, secret)
    writer.add_stream("database.dump", io.BytesIO(dump))
    writer.add_bytes("secret.key", b"k" * 48)
    writer.close("manifest.json", b"{}")
    return out.getvalue()


def _read(data: bytes, secret: Secret = PASSPHRASE) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for piece in read_pieces(io.BytesIO(data), secret):
        members[piece.name] = members.get(piece.name, b"") + piece.data
    return members


def test_round_trip_of_a_member_larger_than_a_chunk() -> None:
    dump = os.urandom(backup_archive.CHUNK_SIZE * 2 + 123)
    members = _read(_archive(dump=dump))
    assert members == {"database.dump": dump, "secret.key": b"k" * 48, "manifest.json": b"{}"}


def test_the_plaintext_does_not_show() -> None:
    assert b"k" * 48 not in _archive()


def test_a_wrong_passphrase_is_refused() -> None:
    with pytest.raises(ArchiveError, match=r"passphrase .* does not open"):
        _read(_archive(), Secret.passphrase("not the right passphrase"))


@pytest.mark.parametrize("cut", [1, 20, 100])
def test_a_truncated_archive_is_refused(cut: int) -> None:
    data = _archive(dump=os.urandom(5000))
    with pytest.raises(ArchiveError, match="truncated"):
        _read(data[:-cut])


def test_an_archive_cut_at_a_chunk_boundary_is_refused() -> None:
    """Dropping the last (manifest) chunk whole leaves a well-formed but unfinished stream."""
    whole = _archive()
    last_chunk = 4 + 16 + 1 + len("manifest.json") + 2
    with pytest.raises(ArchiveError, match="truncated"):
        _read(whole[:-last_chunk])


def test_an_altered_byte_is_refused() -> None:
    data = bytearray(_archive(dump=os.urandom(5000)))
    data[-200] ^= 1
    with pytest.raises(ArchiveError, match="altered"):
        _read(bytes(data))


def test_a_key_file_archive_needs_the_key_file(tmp_path: object) -> None:
    from pathlib import Path

    key = Path(str(tmp_path)) / "backup.key"
    key.write_bytes(os.urandom(48).hex().encode())
    data = _archive(Secret.key_file(key))
    assert _read(data, Secret.key_file(key))["secret.key"] == b"k" * 48
    with pytest.raises(ArchiveError, match="--key-file"):
        _read(data, PASSPHRASE)


def test_a_short_passphrase_or_key_file_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(ArchiveError, match="shorter than 12"):
        _archive(Secret.passphrase("short"))
    short = Path(str(tmp_path)) / "short.key"
    short.write_bytes(b"abc")
    with pytest.raises(ArchiveError, match="at least 32"):
        Secret.key_file(short)


def test_not_an_archive() -> None:
    with pytest.raises(ArchiveError, match="not a mini-paas backup"):
        _read(b"PGDMP" + b"\0" * 100)


def test_a_header_asking_scrypt_for_gigabytes_is_refused_before_deriving() -> None:
    """The header is authenticated only by the key it derives: its cost is bounded first."""
    import json
    import struct

    data = _archive()
    length = struct.unpack(">I", data[len(backup_archive.MAGIC) : len(backup_archive.MAGIC) + 4])[0]
    start = len(backup_archive.MAGIC) + 4
    header = json.loads(data[start : start + length])
    header["kdf"].update(n=2**20, r=32)  # 4 GiB of memory
    forged = json.dumps(header, sort_keys=True).encode()
    tampered = backup_archive.MAGIC + struct.pack(">I", len(forged)) + forged
    with pytest.raises(ArchiveError, match="out of range"):
        _read(tampered + data[start + length :])


def test_a_killed_backups_partial_file_is_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import time

    from minipaas.host.backup import SUFFIX, remove_abandoned_partials

    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid is now nobody's: the backup it stands for was killed
    abandoned = tmp_path / f".mp-20261128T101500Z{SUFFIX}.{ended.pid}.partial"
    running = tmp_path / f".mp-20261128T101600Z{SUFFIX}.{os.getpid()}.partial"
    fresh = tmp_path / f".mp-20261128T101700Z{SUFFIX}.{ended.pid + 1_000_000}.partial"
    unrelated = tmp_path / f".notes.{ended.pid}.partial"
    for path in (abandoned, running, fresh, unrelated):
        path.write_bytes(b"half")
    hour_ago = time.time() - 3600
    for path in (abandoned, running, unrelated):
        os.utime(path, (hour_ago, hour_ago))

    assert remove_abandoned_partials(tmp_path) == [abandoned]
    assert not abandoned.exists()
    # A live process's, a recently written one (from another host?), and others' files stay
    assert running.exists() and fresh.exists() and unrelated.exists()
