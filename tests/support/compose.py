"""The containerized install (docker-compose.yml) built from local images and run for real.

Each run is a compose project of its own (unique name, INSTANCE_NAME and loopback ports), so
it can run beside the rest of the suite and beside a `make up` install.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT_LABEL = "com.docker.compose.project"
INSTANCE_LABEL = "io.minipaas.instance"


def run(
    command: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build_images() -> None:
    """scripts/compose-images.sh: cached between runs on one machine, so a rerun is fast."""
    result = run([str(ROOT / "scripts" / "compose-images.sh")], timeout=1200)
    assert result.returncode == 0, f"building the compose images failed:\n{result.stderr[-4000:]}"


@dataclass
class ComposeInstall:
    """One compose project: its own .env (written by scripts/compose-env.sh) in a temp dir."""

    project: str
    env_file: Path
    router_port: int
    redis_port: int
    work_dir: Path
    torn_down: bool = field(default=False)

    @property
    def instance(self) -> str:
        return self.project

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def api_url(self) -> str:
        return f"{self.router_url}/api"

    def env_value(self, name: str) -> str:
        values = [
            line.split("=", 1)[1]
            for line in self.env_file.read_text().splitlines()
            if line.startswith(f"{name}=")
        ]
        return values[-1]

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """docker-compose on this project; never reads a developer's .env in the repository."""
        return run(
            [
                "docker-compose",
                "--project-name",
                self.project,
                "--env-file",
                str(self.env_file),
                "-f",
                str(COMPOSE_FILE),
                *args,
            ],
            timeout=timeout,
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(self.work_dir),
                **{k: v for k, v in os.environ.items() if k.startswith("DOCKER_")},
            },
        )

    def up(self) -> None:
        result = self.compose("up", "-d", "--no-build", timeout=600)
        assert result.returncode == 0, f"docker-compose up failed:\n{result.stderr}\n{self.logs()}"

    def wait_ready(self, timeout: float = 180) -> None:
        try:
            wait_ready(self.api_url, timeout, what="the compose install (through its router)")
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def admin_token(self) -> str:
        """The token the API generated for the first admin, in the data volume."""
        result = self.compose("exec", "-T", "api", "cat", "/var/lib/minipaas/admin-token")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def logs(self, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", f"--tail={tail}", timeout=60)
        return result.stdout + result.stderr

    def tear_down(self) -> None:
        """`docker-compose down -v`, then what the platform started on the host's engine:
        the app containers, their network and the images built from source (the worker
        and the builder made them, not compose)."""
        if self.torn_down:
            return
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
        import docker

        client = docker.from_env()
        for container in client.containers.list(
            all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for network in client.networks.list(names=[f"{self.instance}-apps"]):
            if network.name == f"{self.instance}-apps":
                with contextlib.suppress(Exception):
                    network.remove()
        for tag in self.built_images():
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.torn_down = True

    def built_images(self) -> list[str]:
        """Tags of the images its builder made (builds from source) on the host's engine."""
        import docker

        prefix = f"{self.instance}-builds/"
        # One list call, no inspect per image (another session may remove one meanwhile)
        return [
            tag
            for image in docker.from_env().api.images()
            for tag in image.get("RepoTags") or []
            if tag.startswith(prefix)
        ]

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of this project or instance still on the engine."""
        import docker

        client = docker.from_env()
        found: list[str] = []
        project = {"label": f"{PROJECT_LABEL}={self.project}"}
        found += [f"container {c.name}" for c in client.containers.list(all=True, filters=project)]
        found += [
            f"container {c.name}"
            for c in client.containers.list(
                all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"}
            )
        ]
        found += [f"network {n.name}" for n in client.networks.list(filters=project)]
        found += [
            f"network {n.name}"
            for n in client.networks.list(names=[f"{self.instance}-apps"])
            if n.name == f"{self.instance}-apps"
        ]
        found += [f"volume {v.name}" for v in client.volumes.list(filters=project)]
        found += [f"image {tag}" for tag in self.built_images()]
        return sorted(set(found))


def new_install() -> ComposeInstall:
    """A project with a fresh .env: random secrets from scripts/compose-env.sh, free ports."""
    project = f"mpc{secrets.token_hex(4)}"
    work_dir = Path(tempfile.mkdtemp(prefix="minipaas-compose-"))
    env_file = work_dir / ".env"
    router_port, redis_port = free_port(), free_port()
    result = run(
        [
            str(ROOT / "scripts" / "compose-env.sh"),
            "--file",
            str(env_file),
            f"INSTANCE_NAME={project}",
            f"APP_PORT={free_port()}",
            f"ROUTER_PORT={router_port}",
            f"REDIS_PORT={redis_port}",
        ],
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return ComposeInstall(
        project=project,
        env_file=env_file,
        router_port=router_port,
        redis_port=redis_port,
        work_dir=work_dir,
    )
