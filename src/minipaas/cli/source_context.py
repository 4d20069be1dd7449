"""A directory as a build context: a tar.gz that honours .dockerignore, as `docker build` does.

Kept free of the `docker` package (the client stays light): .dockerignore patterns follow
Docker's rules: Go's filepath.Match per path component, `**` for any number of them, `!` to
take a path back, the last matching line wins, a pattern that matches a directory matches
everything under it, and the Dockerfile and .dockerignore are always sent.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    exception: bool  # a `!` line: the path is sent after all


def _translate(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match plus `**`, as a regex over a slash-separated relative path."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/x`: x at any depth, the top included
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/")
        if cleaned in ("", "."):
            continue
        rules.append(IgnoreRule(_translate(cleaned), exception))
    return rules


def is_ignored(path: str, rules: list[IgnoreRule]) -> bool:
    """Whether the relative path (slash-separated) is left out of the context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        if any(rule.pattern.match(prefix) for prefix in prefixes):
            ignored = not rule.exception
    return ignored


@dataclass(frozen=True)
class PackedContext:
    files: int
    bytes: int


def pack_context(root: Path, target: Path, *, dockerfile: str = "Dockerfile") -> PackedContext:
    """Writes the directory's context as a tar.gz at `target` (owner root, links kept as
    links, sockets and devices left out)."""
    ignore_file = root / ".dockerignore"
    rules = parse_dockerignore(ignore_file.read_text()) if ignore_file.is_file() else []
    always = {posixpath.normpath(dockerfile), ".dockerignore"}
    files = 0
    size = 0
    with tarfile.open(target, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as out:
        for current, directories, names in os.walk(root):
            directories.sort()
            relative_dir = Path(current).relative_to(root).as_posix()
            for name in sorted(names) + [d for d in directories if _is_link(current, d)]:
                relative = name if relative_dir == "." else f"{relative_dir}/{name}"
                if relative not in always and is_ignored(relative, rules):
                    continue
                info = out.gettarinfo(os.path.join(current, name), arcname=relative)
                if not (info.isreg() or info.issym() or info.isdir()):
                    continue
                _as_root(info)
                if info.isreg():
                    with open(os.path.join(current, name), "rb") as handle:
                        out.addfile(info, handle)
                    size += info.size
                else:
                    out.addfile(info)
                files += 1
            # An ignored directory is still walked: an exception (`!`) may take a file back
            for directory in directories:
                relative = directory if relative_dir == "." else f"{relative_dir}/{directory}"
                if _is_link(current, directory) or is_ignored(relative, rules):
                    continue
                info = out.gettarinfo(os.path.join(current, directory), arcname=relative)
                _as_root(info)
                out.addfile(info)
                files += 1
            directories[:] = [d for d in directories if not _is_link(current, d)]
    return PackedContext(files=files, bytes=size)


def _is_link(parent: str, name: str) -> bool:
    return os.path.islink(os.path.join(parent, name))


def _as_root(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
