"""scripts/install-deps.sh's choices, run for real against a PATH whose package tools
(dpkg-query, apt-get) are stand-ins that report a given machine and record what was asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The script installs as root only (else it says "run as root" and stops)
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install-deps.sh runs as root")

ROOT = Path(__file__).resolve().parents[2]
# What the script decides by: never the machine's own
_STAND_INS = {"dpkg-query", "apt-get", "dockerd", "docker-compose", "systemctl"}


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _run(
    tmp_path: Path, *, installed: set[str], tools: tuple[str, ...], python: str = sys.executable
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script in a copy of the repository, as root; returns its result and apt-get's
    install arguments."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install-deps.sh", repo / "scripts")
    (repo / ".venv" / "bin").mkdir(parents=True)
    _tool(repo / ".venv" / "bin", "python", "exit 0")  # the pinned pip install: not run here
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.args"
    listed = " ".join(sorted(installed))
    _tool(
        bin_dir,
        "dpkg-query",
        f'for p in {listed}; do [[ "${{@: -1}}" == "$p" ]] && echo "install ok installed"; done; '
        "exit 0",
    )
    _tool(bin_dir, "apt-get", f'[[ "$1" == install ]] && echo "$@" >> {asked}; exit 0')
    for name in tools:  # programs the machine has, installed some other way
        _tool(bin_dir, name, "exit 0")
    for system_dir in (Path("/usr/bin"), Path("/bin")):  # the rest of the machine's tools
        for program in system_dir.iterdir():
            if program.name not in _STAND_INS and not os.path.lexists(bin_dir / program.name):
                os.symlink(program, bin_dir / program.name)
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "install-deps.sh"), "--dev"],
        env={
            "PATH": str(bin_dir),
            "PYTHON": python,
            "HOME": str(tmp_path),
            "DOCKER_DAEMON_JSON": str(_daemon_json(tmp_path)),  # never the machine's own
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    words = asked.read_text().split() if asked.exists() else []
    return result, words


def _daemon_json(tmp_path: Path) -> Path:
    return tmp_path / "etc-docker" / "daemon.json"


def test_a_machine_with_docker_ce_is_not_given_debian_s_docker_io(tmp_path: Path) -> None:
    # docker.io would conflict with docker-ce's containerd.io and stop the install
    result, asked = _run(tmp_path, installed=set(), tools=("dockerd", "docker-compose"))
    assert result.returncode == 0, result.stderr
    assert "nginx" in asked
    assert "docker.io" not in asked
    assert "docker-compose" not in asked


def test_a_machine_without_docker_gets_the_engine_and_compose(tmp_path: Path) -> None:
    result, asked = _run(tmp_path, installed={"nginx"}, tools=())
    assert result.returncode == 0, result.stderr
    assert {"docker.io", "docker-compose"} <= set(asked)
    assert "nginx" not in asked
    # The new engine keeps containers on its default bridge apart: apps run there
    assert _daemon_json(tmp_path).read_text().strip() == '{"icc": false}'


def test_an_engine_configured_before_keeps_its_configuration(tmp_path: Path) -> None:
    _daemon_json(tmp_path).parent.mkdir()
    _daemon_json(tmp_path).write_text('{"log-driver": "journald"}\n')
    result, asked = _run(tmp_path, installed={"nginx"}, tools=())
    assert result.returncode == 0, result.stderr
    assert "docker.io" in asked
    assert _daemon_json(tmp_path).read_text() == '{"log-driver": "journald"}\n'
    # and an engine already installed gets no configuration at all
    other = tmp_path / "other"
    other.mkdir()
    result, asked = _run(other, installed={"nginx"}, tools=("dockerd", "docker-compose"))
    assert result.returncode == 0, result.stderr
    assert not _daemon_json(other).exists()


def test_a_python_older_than_3_11_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old_python = tmp_path / "python3.10"
    old_python.write_text("#!/bin/bash\n[[ $1 == -V ]] && echo 'Python 3.10.12'; exit 1\n")
    old_python.chmod(0o755)
    result, asked = _run(
        tmp_path,
        installed={"docker.io", "nginx"},
        tools=("dockerd", "docker-compose"),
        python=str(old_python),
    )
    assert result.returncode == 1
    assert "needs Python 3.11 or later" in result.stderr
    assert "Python 3.10.12" in result.stderr
    assert "PYTHON=" in result.stderr
    assert asked == [], "packages were installed before the Python was refused"
