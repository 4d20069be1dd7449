"""The CLI's build context: .dockerignore as Docker reads it, links kept, owner root."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from minipaas.cli.source_context import is_ignored, pack_context, parse_dockerignore


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("node_modules", "node_modules/a/b.js", True),
        ("node_modules", "src/node_modules/a.js", False),
        ("**/node_modules", "src/node_modules/a.js", True),
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "pkg/a.pyc", False),
        ("**/*.pyc", "pkg/deep/a.pyc", True),
        ("*/temp*", "somedir/temporary.txt", True),
        ("temp?", "temp1", True),
        ("temp?", "temp12", False),
        ("/build", "build/out.o", True),
        ("docs\n!docs/README.md", "docs/README.md", False),
        ("docs\n!docs/README.md", "docs/other.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
        ("# comment\n\n.git", ".git/config", True),
        ("[abc].txt", "b.txt", True),
        ("[!abc].txt", "b.txt", False),
    ],
)
def test_dockerignore_patterns(patterns: str, path: str, ignored: bool) -> None:
    assert is_ignored(path, parse_dockerignore(patterns)) is ignored


def test_pack_context(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print(1)\n")
    (root / "app" / "cache.pyc").write_bytes(b"x")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "latest").symlink_to("app/main.py")
    (root / ".dockerignore").write_text("**/*.pyc\nDockerfile\n")
    target = tmp_path / "c.tar.gz"
    packed = pack_context(root, target)
    with tarfile.open(target) as archive:
        members = {m.name: m for m in archive}
    # The Dockerfile and .dockerignore go even when ignored, as with `docker build`
    assert set(members) == {"Dockerfile", ".dockerignore", "app", "app/main.py", "latest"}
    assert members["latest"].issym() and members["latest"].linkname == "app/main.py"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert packed.files == 5
