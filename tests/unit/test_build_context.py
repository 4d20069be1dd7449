"""Uploaded build contexts: every unsafe entry is refused with its name; safe ones pass."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from minipaas.services.builds.context import (
    ContextRefused,
    check_dockerfile_path,
    sanitize_context,
)
from minipaas.services.errors import InvalidRequest

DOCKERFILE = b"FROM scratch\nCOPY . /\n"


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    return (name, kind, data, link)


def _archive(path: Path, entries: list[tuple], *, compress: bool = False) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o4755 if kind == tarfile.REGTYPE else 0o755
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _sanitize(tmp_path: Path, entries: list[tuple], **caps: int) -> Path:
    upload = _archive(tmp_path / "upload", entries)
    clean = tmp_path / "clean.tar"
    sanitize_context(
        upload,
        clean,
        dockerfile="Dockerfile",
        max_bytes=caps.get("max_bytes", 10_000_000),
        max_files=caps.get("max_files", 1000),
    )
    return clean


def test_a_plain_context_passes_and_loses_setuid_bits(tmp_path: Path) -> None:
    clean = _sanitize(
        tmp_path,
        [
            _entry("./"),
            _entry("./Dockerfile", data=DOCKERFILE),
            _entry("src", tarfile.DIRTYPE),
            _entry("src/app.py", data=b"print('hi')\n"),
            _entry("src/link", tarfile.SYMTYPE, link="app.py"),
            _entry("latest", tarfile.SYMTYPE, link="src/app.py"),
            _entry("hard", tarfile.LNKTYPE, link="src/app.py"),
        ],
    )
    with tarfile.open(clean) as archive:
        members = {member.name: member for member in archive}
    assert set(members) >= {"Dockerfile", "src/app.py", "src/link", "latest", "hard"}
    assert members["Dockerfile"].mode & 0o7000 == 0


def test_gzip_is_accepted(tmp_path: Path) -> None:
    upload = _archive(tmp_path / "upload", [_entry("Dockerfile", data=DOCKERFILE)], compress=True)
    summary = sanitize_context(
        upload, tmp_path / "c.tar", dockerfile="Dockerfile", max_bytes=1000, max_files=10
    )
    assert summary.files == 1


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (_entry("/etc/passwd", data=b"x"), "absolute paths"),
        (_entry("../outside", data=b"x"), "'..'"),
        (_entry("a/../../outside", data=b"x"), "'..'"),
        (_entry("escape", tarfile.SYMTYPE, link="../../etc"), "outside"),
        (_entry("abs", tarfile.SYMTYPE, link="/etc/passwd"), "absolute"),
        (_entry("hard", tarfile.LNKTYPE, link="../etc/passwd"), "outside"),
        (_entry("dev", tarfile.CHRTYPE), "devices"),
        (_entry("blk", tarfile.BLKTYPE), "devices"),
        (_entry("fifo", tarfile.FIFOTYPE), "fifos"),
    ],
)
def test_unsafe_entries_are_refused_by_name(tmp_path: Path, entry: tuple, said: str) -> None:
    with pytest.raises(ContextRefused) as refused:
        _sanitize(tmp_path, [_entry("Dockerfile", data=DOCKERFILE), entry])
    assert said in refused.value.message
    assert entry[0] in refused.value.message


def test_a_chain_of_links_cannot_climb_out(tmp_path: Path) -> None:
    # Each link looks harmless alone; followed together they leave the context
    entries = [
        _entry("Dockerfile", data=DOCKERFILE),
        _entry("sub", tarfile.DIRTYPE),
        _entry("sub/up", tarfile.SYMTYPE, link="."),
        _entry("sub/deeper", tarfile.SYMTYPE, link="up/../.."),
        _entry("out", tarfile.SYMTYPE, link="sub/deeper/.."),
    ]
    with pytest.raises(ContextRefused, match="outside the context"):
        _sanitize(tmp_path, entries)


def test_a_file_written_through_a_link_that_leaves_is_refused(tmp_path: Path) -> None:
    entries = [
        _entry("Dockerfile", data=DOCKERFILE),
        _entry("dir", tarfile.SYMTYPE, link="."),
        _entry("dir/x", data=b"fine: dir is the root"),
    ]
    _sanitize(tmp_path, entries)


def test_size_and_count_caps(tmp_path: Path) -> None:
    many = [_entry("Dockerfile", data=DOCKERFILE)] + [_entry(f"f{i}", data=b"x") for i in range(20)]
    with pytest.raises(ContextRefused, match="BUILD_MAX_FILES"):
        _sanitize(tmp_path, many, max_files=10)
    big = [_entry("Dockerfile", data=DOCKERFILE), _entry("big", data=b"x" * 5000)]
    with pytest.raises(ContextRefused, match="BUILD_MAX_CONTEXT_MB"):
        _sanitize(tmp_path, big, max_bytes=1000)


def test_a_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    upload = tmp_path / "bomb"
    upload.write_bytes(gzip.compress(b"\0" * 50_000_000))  # 50 MB of zeros, ~50 KB packed
    with pytest.raises(ContextRefused):
        sanitize_context(
            upload, tmp_path / "c.tar", dockerfile="Dockerfile", max_bytes=1000, max_files=10
        )


def test_not_a_tar_and_no_dockerfile(tmp_path: Path) -> None:
    upload = tmp_path / "junk"
    upload.write_bytes(b"this is not a tar archive at all" * 100)
    with pytest.raises(ContextRefused, match="tar"):
        sanitize_context(
            upload, tmp_path / "c", dockerfile="Dockerfile", max_bytes=10**6, max_files=9
        )
    with pytest.raises(ContextRefused, match="no file 'Dockerfile'"):
        _sanitize(tmp_path, [_entry("main.py", data=b"")])


@pytest.mark.parametrize("path", ["/Dockerfile", "../Dockerfile", "a/../../b", "", "."])
def test_the_dockerfile_path_stays_inside(path: str) -> None:
    with pytest.raises(InvalidRequest):
        check_dockerfile_path(path)


def test_a_nested_dockerfile_path_is_normalized() -> None:
    assert check_dockerfile_path("./docker/Dockerfile.prod") == "docker/Dockerfile.prod"


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """tarfile reads an extended header whole: a 300 MB one from a small gzip would take
    gigabytes of the API's memory; it is refused from its size alone."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 300 * 1024 * 1024
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 4096  # the rest never comes
    upload = tmp_path / "upload"
    upload.write_bytes(gzip.compress(raw))
    with pytest.raises(ContextRefused, match="extended header of 314572800 bytes"):
        sanitize_context(
            upload,
            tmp_path / "clean.tar",
            dockerfile="Dockerfile",
            max_bytes=10**9,
            max_files=1000,
        )


def test_a_link_that_leaves_through_a_later_link_is_refused(tmp_path: Path) -> None:
    """p -> q/.. is inside while q is a directory; once q -> . arrives, p points outside."""
    entries = [
        _entry("Dockerfile", data=DOCKERFILE),
        _entry("p", tarfile.SYMTYPE, link="q/.."),
        _entry("q", tarfile.SYMTYPE, link="."),
    ]
    with pytest.raises(ContextRefused, match=r"'p'.*outside"):
        _sanitize(tmp_path, entries)


def test_the_free_disk_is_checked_while_a_large_context_is_written(tmp_path: Path) -> None:
    class DiskFull(Exception):
        pass

    def full() -> None:
        raise DiskFull

    upload = _archive(
        tmp_path / "upload",
        [_entry("Dockerfile", data=DOCKERFILE), _entry("big", data=b"x" * (17 * 1024 * 1024))],
    )
    with pytest.raises(DiskFull):
        sanitize_context(
            upload,
            tmp_path / "clean.tar",
            dockerfile="Dockerfile",
            max_bytes=10**9,
            max_files=1000,
            check_disk=full,
        )


def test_the_checked_text_is_written_again_last_at_the_dockerfiles_path(tmp_path: Path) -> None:
    """A later entry of the Dockerfile's name (here a link to another file) would give the
    engine another text than the one checked: the checked one comes last, at that path."""
    upload = _archive(
        tmp_path / "upload",
        [
            _entry("evil.df", data=b"FROM mp-builds/app-9:3\n"),
            _entry("Dockerfile", data=DOCKERFILE),
            _entry("Dockerfile", tarfile.SYMTYPE, link="evil.df"),
        ],
    )
    clean = tmp_path / "clean.tar"
    summary = sanitize_context(
        upload, clean, dockerfile="Dockerfile", max_bytes=10_000, max_files=10
    )
    assert summary.dockerfile == DOCKERFILE.decode()
    with tarfile.open(clean) as archive:
        last = archive.getmembers()[-1]
        assert last.name == "Dockerfile" and last.isreg()
        copy = archive.extractfile(last)
        assert copy is not None and copy.read() == DOCKERFILE
    # Unpacked in order, the path reads as the checked text (through the link or not)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(clean) as archive:
        archive.extractall(unpacked, filter="fully_trusted")
    assert (unpacked / "Dockerfile").read_bytes() == DOCKERFILE


def test_a_path_past_linuxs_limits_is_refused_before_it_is_resolved(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 300) + "/f"
    with pytest.raises(ContextRefused, match="levels"):
        _sanitize(tmp_path, [_entry("Dockerfile", data=DOCKERFILE), _entry(deep, data=b"x")])
    with pytest.raises(ContextRefused, match="levels"):
        _sanitize(
            tmp_path,
            [_entry("Dockerfile", data=DOCKERFILE), _entry("l", tarfile.SYMTYPE, link=deep)],
        )


def test_a_malformed_sparse_header_is_a_422(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(DOCKERFILE)
        info.pax_headers = {"GNU.sparse.map": "zz"}
        archive.addfile(info, io.BytesIO(DOCKERFILE))
    upload = tmp_path / "upload"
    upload.write_bytes(buffer.getvalue())
    with pytest.raises(ContextRefused, match="not a readable tar"):
        sanitize_context(
            upload, tmp_path / "clean.tar", dockerfile="Dockerfile", max_bytes=10_000, max_files=10
        )
