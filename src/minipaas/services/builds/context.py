"""Uploaded build contexts: every entry checked before the engine sees any of it.

The upload (tar, or tar.gz) is read as a stream and written again as a plain tar holding only
entries that passed: Docker then reads exactly what was checked, never a second parser's idea
of the same bytes. Refused, with the entry named: absolute paths, `..`, links (symbolic or
hard) that lead outside the context, even through other links, devices and fifos, and archives
that expand past BUILD_MAX_CONTEXT_MB or BUILD_MAX_FILES.
"""

from __future__ import annotations

import copy
import gzip
import io
import posixpath
import tarfile
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from minipaas.services.errors import InvalidRequest

GZIP_MAGIC = b"\x1f\x8b"
# Header and padding bytes a tar may hold besides file data, per entry (pax headers included)
_OVERHEAD_PER_ENTRY = 8 * 1024
# A directory that never exists: the data filter resolves paths under it lexically
_FILTER_ROOT = Path("/nonexistent/minipaas-build-context")
# Links followed while resolving one path, as the kernel's own limit
_MAX_LINK_HOPS = 40
# Python's rules for untrusted archives (PEP 706) came in 3.11.4: the platform image's
# Python (Debian 12's 3.11.2) has neither, and the checks here (paths and links resolved
# inside the context, no special files, no setuid/setgid bits, no owners) stand alone there
_DATA_FILTER = getattr(tarfile, "data_filter", None)
_FILTER_ERROR: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())


class ContextRefused(InvalidRequest):
    """A 422 on the request body that names the entry at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message, loc=("body",))


@dataclass(frozen=True)
class ContextSummary:
    files: int
    bytes: int
    dockerfile: str  # its text, for the checks of the images it builds on


# A Dockerfile larger than this is not a Dockerfile
_MAX_DOCKERFILE = 1024 * 1024
# Paths longer or deeper than Linux's own limits (PATH_MAX) are refused before they are
# resolved: resolving one of 500,000 components took minutes of CPU
_MAX_PATH_BYTES = 4096
_MAX_PATH_PARTS = 256


# A pax or GNU long-name header is read whole into memory by tarfile: a real one is a few
# hundred bytes, a hostile one could be gigabytes from a small gzip
_MAX_HEADER_ENTRY = 1024 * 1024
_HEADER_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
# The free disk is checked again each time this many more bytes of clean tar are written
_DISK_CHECK_EVERY = 16 * 1024 * 1024


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses an extended header entry larger than _MAX_HEADER_ENTRY before tarfile reads it
    into memory (it would, whole, in `_proc_pax` / `_proc_gnulong`)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > _MAX_HEADER_ENTRY:
            raise ContextRefused(
                f"context entry {self.name!r}: an extended header of {self.size} bytes "
                f"(at most {_MAX_HEADER_ENTRY}); make the archive with a standard tar"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


class _CappedReader:
    """Reads at most `limit` bytes of the decompressed stream: a gzip bomb stops here."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.count + size > self.limit:
            size = self.limit - self.count + 1
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise ContextRefused(
                f"the context expands past {self.limit // (1024 * 1024)} MB of tar data "
                "(BUILD_MAX_CONTEXT_MB); leave build outputs out (.dockerignore)"
            )
        return data


def check_dockerfile_path(path: str) -> str:
    """The Dockerfile's path inside the context, normalized; 422 if it could leave it."""
    cleaned = path.strip()
    if not cleaned or cleaned.startswith("/") or "\\" in cleaned or "\x00" in cleaned:
        raise InvalidRequest(
            f"dockerfile {path!r} must be a relative path inside the context",
            loc=("query", "dockerfile"),
        )
    if ".." in cleaned.split("/"):
        raise InvalidRequest(
            f"dockerfile {path!r} may not contain '..': it must stay inside the context",
            loc=("query", "dockerfile"),
        )
    normalized = posixpath.normpath(cleaned)
    if normalized in (".", "") or len(normalized) > 255:
        raise InvalidRequest(
            f"dockerfile {path!r} must name a file inside the context",
            loc=("query", "dockerfile"),
        )
    return normalized


def _entry_path(member: tarfile.TarInfo) -> str:
    """The entry's path relative to the context root, or a 422 naming it."""
    name = member.name
    _check_length(name, name)
    if "\x00" in name or "\\" in name:
        raise ContextRefused(f"context entry {name!r}: the name has a NUL or a backslash")
    if name.startswith("/"):
        raise ContextRefused(f"context entry {name!r}: absolute paths are not allowed")
    if ".." in name.split("/"):
        raise ContextRefused(f"context entry {name!r}: '..' is not allowed in paths")
    return posixpath.normpath(name)


def _check_length(path: str, what: str) -> None:
    if len(path.encode(errors="surrogateescape")) > _MAX_PATH_BYTES or (
        path.count("/") >= _MAX_PATH_PARTS
    ):
        raise ContextRefused(
            f"context entry {what[:200]!r}: a path of more than {_MAX_PATH_BYTES} bytes or "
            f"{_MAX_PATH_PARTS} levels"
        )


def _resolve(path: str, links: dict[str, str], what: str) -> str:
    """`path` with every link of the archive followed; a 422 naming `what` if it leaves."""
    pending = deque(part for part in path.split("/") if part not in ("", "."))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if not resolved:
                raise ContextRefused(f"context entry {what!r}: a link leads outside the context")
            resolved.pop()
            continue
        here = "/".join([*resolved, part])
        target = links.get(here)
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS or target.startswith("/"):
            raise ContextRefused(f"context entry {what!r}: a link leads outside the context")
        # Stored from the root: start over there
        resolved = []
        pending.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return "/".join(resolved)


def _check_link(member: tarfile.TarInfo, path: str, links: dict[str, str]) -> None:
    target = member.linkname
    _check_length(target, member.name)
    if "\x00" in target or target.startswith("/"):
        raise ContextRefused(
            f"context entry {member.name!r}: links to absolute paths are not allowed"
        )
    if member.issym():
        # A symbolic link is read from its own directory
        parent = posixpath.dirname(path)
        from_root = posixpath.join(parent, target) if parent else target
        _resolve(from_root, links, member.name)
        links[path] = from_root
    else:  # a hard link names another entry, from the root
        _resolve(target, links, member.name)


def sanitize_context(
    upload: Path,
    clean: Path,
    *,
    dockerfile: str,
    max_bytes: int,
    max_files: int,
    check_disk: Callable[[], None] = lambda: None,
) -> ContextSummary:
    """Checks every entry of `upload` and writes those that pass as a plain tar at `clean`;
    `check_disk` raises when the disk gets too full to go on (called every 16 MB written)."""
    with upload.open("rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
        )
        capped = _CappedReader(stream, max_bytes + max_files * _OVERHEAD_PER_ENTRY)
        try:
            return _copy_checked(capped, clean, dockerfile, max_bytes, max_files, check_disk)
        # ValueError: tarfile's own, for a malformed GNU sparse map say (not a 500)
        except (
            tarfile.TarError,
            EOFError,
            gzip.BadGzipFile,
            OSError,
            UnicodeError,
            ValueError,
            zlib.error,
        ) as exc:
            if isinstance(exc, _FILTER_ERROR):
                raise ContextRefused(f"context entry: {exc}") from None
            raise ContextRefused(
                f"the body is not a readable tar or tar.gz archive ({exc}); "
                "send the context as `tar -c` or `tar -cz` output"
            ) from None


def _copy_checked(
    capped: _CappedReader,
    clean: Path,
    dockerfile: str,
    max_bytes: int,
    max_files: int,
    check_disk: Callable[[], None],
) -> ContextSummary:
    links: dict[str, str] = {}
    regular: set[str] = set()
    dockerfile_text = ""
    files = 0
    total = 0
    # "r|": a stream, read once front to back; nothing is extracted to disk
    with (
        tarfile.open(  # type: ignore[call-overload]
            fileobj=capped, mode="r|", errorlevel=2, tarinfo=_BoundedTarInfo
        ) as archive,
        tarfile.open(clean, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in archive:
            files += 1
            if files > max_files:
                raise ContextRefused(
                    f"the context has more than {max_files} entries (BUILD_MAX_FILES); "
                    "leave dependencies and build outputs out (.dockerignore)"
                )
            path = _entry_path(member)
            if (
                member.ischr()
                or member.isblk()
                or member.isfifo()
                or not (member.isreg() or member.isdir() or member.issym() or member.islnk())
            ):
                raise ContextRefused(
                    f"context entry {member.name!r}: only files, directories and links are "
                    "allowed (no devices, fifos or sockets)"
                )
            if path != ".":
                # A path that goes through a link must still land inside
                _resolve(path, links, member.name)
            if member.issym() or member.islnk():
                _check_link(member, path, links)
            before = total
            total += member.size if member.isreg() else 0
            if total // _DISK_CHECK_EVERY != before // _DISK_CHECK_EVERY:
                check_disk()
            if total > max_bytes:
                raise ContextRefused(
                    f"context entry {member.name!r}: the context expands past "
                    f"{max_bytes // (1024 * 1024)} MB (BUILD_MAX_CONTEXT_MB)"
                )
            checked = _changed(
                member,
                name=path,
                uid=0,
                gid=0,
                uname="",
                gname="",
                # No setuid, setgid or sticky bits from an upload
                mode=member.mode & 0o777,
            )
            if member.islnk():
                checked = _changed(checked, linkname=posixpath.normpath(member.linkname))
            if _DATA_FILTER is not None:
                # Python's own rules for untrusted archives, on top of the ones above
                _DATA_FILTER(checked, str(_FILTER_ROOT))
            if member.isreg() and path == dockerfile:
                dockerfile_text = _read_dockerfile(archive, member)
                regular.add(path)
                out.addfile(checked, io.BytesIO(dockerfile_text.encode()))
            elif member.isreg():
                regular.add(path)
                out.addfile(checked, archive.extractfile(member))
            else:
                out.addfile(checked)
        if dockerfile in regular:
            # The checked text once more, last, at the Dockerfile's own path: the engine
            # unpacks the entries in order and then reads that path, so a later entry of the
            # same name (a link to another file, say) or a link on the way to it cannot give
            # it another text than the one checked
            text = dockerfile_text.encode()
            again = tarfile.TarInfo(dockerfile)
            again.size, again.mode = len(text), 0o644
            out.addfile(again, io.BytesIO(text))
    # A link checked early may lead outside through a link that came later in the archive
    for path, target in links.items():
        _resolve(target, links, path)
    if dockerfile not in regular:
        raise ContextRefused(
            f"the context has no file {dockerfile!r}: add a Dockerfile or name it with "
            "?dockerfile=PATH"
        )
    return ContextSummary(files=files, bytes=total, dockerfile=dockerfile_text)


def checked_dockerfile(clean: Path, dockerfile: str) -> str:
    """The Dockerfile text the engine reads from a context sanitize_context wrote: its last
    entry at that path (the checked text, written once more at the end)."""
    found: tarfile.TarInfo | None = None
    with tarfile.open(clean, mode="r:") as archive:
        for member in archive:
            if member.name == dockerfile:
                found = member
        if found is None:
            raise ContextRefused(f"the context has no file {dockerfile!r}")
        return _read_dockerfile(archive, found)


def _changed(member: tarfile.TarInfo, **changes: object) -> tarfile.TarInfo:
    """A shallow copy with `changes`: TarInfo.replace(deep=False), which Python < 3.11.4
    lacks."""
    copied = copy.copy(member)
    for name, value in changes.items():
        setattr(copied, name, value)
    return copied


def _read_dockerfile(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    if member.size > _MAX_DOCKERFILE:
        raise ContextRefused(
            f"context entry {member.name!r}: a Dockerfile of {member.size} bytes "
            f"(at most {_MAX_DOCKERFILE})"
        )
    data = archive.extractfile(member)
    raw = data.read() if data is not None else b""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContextRefused(
            f"context entry {member.name!r}: the Dockerfile is not UTF-8"
        ) from None
