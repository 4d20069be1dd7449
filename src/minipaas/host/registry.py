"""The embedded image registry (RUNTIME=swarm, REGISTRY_URL empty): Debian's docker-registry
(the CNCF distribution registry 2.8) on 127.0.0.1:REGISTRY_PORT, under DATA_DIR/registry.

Swarm nodes can only run an image a registry serves them, so the platform pushes what it built
or pulled there and runs it by digest (runtime/registry.py). The registry asks for a password
(htpasswd, bcrypt) so no other local user can push images the platform would then run; delete
is on, so images of releases gone can be garbage-collected.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from minipaas.config import Settings
from minipaas.files import create_once
from minipaas.host.errors import HostServiceError, wait_listening

REGISTRY_BIN = "docker-registry"
HTPASSWD_BIN = "htpasswd"
# The password is random (or the operator's): bcrypt's cost guards weak passwords, and the
# registry checks it on every request of a push; htpasswd's own default
BCRYPT_COST = 5
# Settings the registry would read as overrides of its config (REGISTRY_<SECTION>_<KEY>)
_PLATFORM_ENV = ("REGISTRY_URL", "REGISTRY_PORT", "REGISTRY_USER", "REGISTRY_PASSWORD")


@dataclass(frozen=True)
class RegistryAccess:
    """Where the registry every node pulls from is, and how the platform logs in to it."""

    address: str  # host:port, the registry part of an image reference
    user: str
    password: str | None  # None: push without logging in (an external registry's choice)


@dataclass(frozen=True)
class LocalRegistry:
    dir: Path
    port: int
    user: str
    password: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.yml"

    @property
    def htpasswd_file(self) -> Path:
        return self.dir / "htpasswd"

    @property
    def storage_dir(self) -> Path:
        return self.dir / "storage"

    def render_config(self, http_secret: str) -> str:
        """The registry's config; JSON, which its YAML parser reads as it is (no quoting)."""
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                # Images of removed releases can be deleted, then `garbage-collect`ed
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": self.address,
                # Signs upload state; a fixed one lets an upload survive a restart
                "secret": http_secret,
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {"htpasswd": {"realm": "minipaas-registry", "path": str(self.htpasswd_file)}},
            "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
        }
        return json.dumps(config, indent=1) + "\n"

    def write_config(self) -> None:
        """Config and htpasswd (0600 under a 0700 directory): written before every start."""
        if shutil.which(REGISTRY_BIN) is None:
            raise HostServiceError(
                "docker-registry is not installed (RUNTIME=swarm runs it for the nodes' "
                "images): apt-get install docker-registry apache2-utils, or set REGISTRY_URL"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.storage_dir.mkdir(exist_ok=True)
        secret = load_or_create_secret(self.dir / "http.secret", None)
        _write_private(self.config_file, self.render_config(secret))
        _write_private(self.htpasswd_file, htpasswd_line(self.user, self.password))

    def server_command(self) -> tuple[str, ...]:
        # The platform's REGISTRY_* settings are not the registry's own overrides
        unset = [arg for name in _PLATFORM_ENV for arg in ("-u", name)]
        return ("env", *unset, REGISTRY_BIN, "serve", str(self.config_file))

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_listening(self.port, "docker-registry", timeout)


def htpasswd_line(user: str, password: str) -> str:
    """`user:$2y$...` from apache2-utils' htpasswd (bcrypt), the password through stdin."""
    if shutil.which(HTPASSWD_BIN) is None:
        raise HostServiceError(
            "htpasswd is not installed (the registry's password file needs it): "
            "apt-get install apache2-utils"
        )
    if "\n" in password or "\r" in password:
        raise HostServiceError("REGISTRY_PASSWORD must be one line")
    result = subprocess.run(
        [HTPASSWD_BIN, "-n", "-i", "-B", "-C", str(BCRYPT_COST), user],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    line = result.stdout.strip()
    if result.returncode != 0 or not line.startswith(f"{user}:$2"):
        raise HostServiceError(f"htpasswd failed: {result.stderr.strip() or line}")
    return line + "\n"


def registry_password(settings: Settings) -> str:
    """REGISTRY_PASSWORD, else the one kept in DATA_DIR (made once, by whoever asks first)."""
    wanted = settings.registry_password
    return load_or_create_secret(
        settings.registry_password_file, None if wanted is None else wanted.get_secret_value()
    )


def embedded_registry(settings: Settings) -> LocalRegistry | None:
    """The registry the platform runs itself: only with RUNTIME=swarm and no REGISTRY_URL."""
    if settings.runtime != "swarm" or settings.registry_url:
        return None
    return LocalRegistry(
        dir=settings.data_dir / "registry",
        port=settings.registry_port,
        user=settings.registry_user,
        password=registry_password(settings),
    )


def registry_access(settings: Settings) -> RegistryAccess:
    """The registry swarm nodes pull from: REGISTRY_URL, else the embedded one."""
    if settings.registry_url:
        password = settings.registry_password
        return RegistryAccess(
            settings.registry_url,
            settings.registry_user,
            None if password is None else password.get_secret_value(),
        )
    return RegistryAccess(
        f"127.0.0.1:{settings.registry_port}", settings.registry_user, registry_password(settings)
    )


def load_or_create_secret(path: Path, wanted: str | None) -> str:
    """`wanted` (kept in `path` too), else the random one in `path`, made once."""
    if wanted is not None:
        if not path.exists() or path.read_text().strip() != wanted:
            _write_private(path, wanted + "\n")
        return wanted
    create_once(path, secrets.token_urlsafe(32).encode() + b"\n")
    value = path.read_text().strip()
    if len(value) < 16:
        raise HostServiceError(f"{path} holds a secret shorter than 16 characters; delete it")
    return value


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
