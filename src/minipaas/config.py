"""Settings, read from environment variables and an optional `.env` file."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # HTTP API
    app_host: str = "127.0.0.1"
    app_port: int = 8081
    # API server processes `make up` runs, each accepting on its own SO_REUSEPORT socket;
    # 0: one per CPU, at least 2, at most 8
    api_processes: int = Field(default=0, ge=0, le=64)

    # PostgreSQL: host may be a unix socket directory (starts with "/")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "minipaas"
    postgres_password: str = "minipaas"
    postgres_db: str = "minipaas"

    # Redis
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = None

    # Router (nginx)
    router_port: int = 80
    router_host: str = "127.0.0.1"
    nginx_bin: str = "nginx"
    # Reload-free router (nginx + Lua): an app answers at <name>.<APPS_DOMAIN> and at its own
    # domains; PLATFORM_HOST, a bare IP or no Host at all reach the platform (the API at /api/)
    apps_domain: str = "apps.localhost"
    platform_host: str = "minipaas.localhost"
    # Also serve apps at /apps/<id>/ on the platform's own origin (the seed design's paths)
    router_path_routes: bool = True
    # nginx's shared route table; one app with a few hosts takes well under 1 KiB
    router_table_mb: int = Field(default=64, ge=1, le=4096)
    # Per-app traffic metrics counted by the router (log phase), in a shared dict of their own;
    # a full dict drops data, never requests. About 100 bytes a key, ~8 keys a busy app-minute
    router_metrics: bool = True
    router_metrics_mb: int = Field(default=16, ge=1, le=1024)
    # Secret of the router's control socket; when unset, a random one is kept in DATA_DIR
    router_control_secret: SecretStr | None = None

    # HTTPS (router/tls.py): the router's TLS port (443 on a real server), 0 for none;
    # certificates are chosen by SNI
    router_tls_port: int = Field(default=0, ge=0, le=65535)
    # A certificate (chain) and key in PEM files, e.g. a wildcard for APPS_DOMAIN and the
    # platform host; served for every name it lists, read again by each reconciler pass
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # ACME (RFC 8555, HTTP-01) for apps' own domains; empty directory URL: no ACME
    acme_directory_url: str = ""
    acme_email: str = ""
    # PEM bundle to trust for the ACME directory's own HTTPS; empty: the system's roots
    acme_ca_bundle: Path | None = None
    # nginx's shared memory for certificates and challenge tokens (~5 KiB a certificate)
    router_tls_mb: int = Field(default=16, ge=1, le=1024)

    # Where local state lives: nginx config, logs, pid files, local databases
    data_dir: Path = Path("/var/lib/minipaas")

    # Names every container, network and queue of this installation
    instance_name: str = "minipaas"

    # Which engine runs apps: "docker" (this host) or "swarm" (this host is a swarm manager;
    # every replica is a one-task service, images go through REGISTRY_URL)
    runtime: Literal["docker", "swarm"] = "docker"
    # Which network app containers join on one host (RUNTIME=docker): "auto", Docker's default
    # bridge when the engine keeps containers on it apart (daemon `icc: false`), else a bridge
    # network of the install's own with inter-container traffic off; "own": always the latter.
    # The default bridge starts a container ~45 ms sooner: no embedded DNS server to set up
    apps_bridge: Literal["auto", "own"] = "auto"
    # The registry every swarm node pulls app images from (host:port, plain HTTP on loopback
    # or TLS elsewhere); empty with RUNTIME=swarm: the embedded one on 127.0.0.1:REGISTRY_PORT
    registry_url: str = ""
    registry_port: int = Field(default=5000, ge=1, le=65535)
    registry_user: str = "minipaas"
    # empty: generated once and kept in DATA_DIR (host/registry.py)
    registry_password: SecretStr | None = None

    # Deploys
    queue_name: str = "deployments"
    # Worker processes `make up` runs (deploys of different apps in parallel; one app's jobs
    # never overlap); 0: one per CPU, at least 2, at most 8
    worker_processes: int = Field(default=0, ge=0, le=64)
    # Deployments of one member's apps handed to the workers at once (the rest wait, in
    # order, with their place shown); 0: half the worker processes, at least 1. Admins' apps
    # have no cap.
    deploys_per_member: int = Field(default=0, ge=0, le=64)
    deploy_timeout_seconds: int = Field(default=300, ge=10)
    ready_timeout_seconds: float = Field(default=60.0, gt=0)
    ready_poll_interval_seconds: float = Field(default=0.01, gt=0)
    action_timeout_seconds: int = Field(default=60, ge=5)
    # How long a lifecycle request waits for the worker before answering 202
    # A lifecycle request answers 202 (follow the action) when it is not done by then
    action_wait_seconds: float = Field(default=5.0, ge=0)
    stop_grace_seconds: int = Field(default=10, ge=0)
    # After a deploy switched the route: how long requests still running on the old
    # container may take before it is stopped (a websocket would hold it forever)
    drain_timeout_seconds: float = Field(default=10.0, ge=0)
    # The reconciler compares database, Docker and router this often (in the worker)
    reconcile_interval_seconds: float = Field(default=15.0, gt=0)
    # Images of this many newest releases per app are kept for rollbacks; older ones are removed
    keep_release_images: int = Field(default=5, ge=1)
    # Builds from source (services/builds): upload cap, what one context may expand to,
    # builder processes (a queue of their own), limits the engine enforces on each step
    build_max_upload_mb: int = Field(default=200, ge=1)
    build_max_context_mb: int = Field(default=1024, ge=1)
    build_max_files: int = Field(default=50_000, ge=1)
    build_concurrency: int = Field(default=1, ge=1, le=16)
    builds_per_member: int = Field(default=2, ge=1, le=64)
    build_timeout_seconds: int = Field(default=900, ge=10)
    build_memory_mb: int = Field(default=1024, ge=6)
    build_cpus: float = Field(default=1.0, ge=0.01)
    build_pids: int = Field(default=1024, ge=16)
    # A build is refused when DATA_DIR or Docker's root has less free disk than this
    build_min_free_disk_mb: int = Field(default=2048, ge=0)
    # Images of this many newest builds per app are kept (besides the releases' images)
    keep_build_images: int = Field(default=5, ge=1)
    log_max_size: str = "10m"
    log_max_files: int = Field(default=3, ge=1)

    # Secrets: SECRET_KEY keys token hashes and env encryption; when unset, a random key is
    # kept in DATA_DIR/secret.key. ADMIN_TOKEN, when set, is the first admin's token.
    secret_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    # Failed authentications per client and minute before answering 429
    auth_failures_per_minute: int = Field(default=20, ge=1)
    # Active (unrevoked, unexpired) tokens a user may hold; one more is a 409
    user_max_tokens: int = Field(default=50, ge=1)
    # Followed logs and event streams open at once per user, across API processes (429 past it)
    user_max_streams: int = Field(default=10, ge=1)
    # How often an open stream checks again that its token, user and app still allow it
    stream_recheck_seconds: float = Field(default=5.0, gt=0, le=300)

    # Per-app limits: the defaults an app gets, and the most it may ask for
    default_memory_mb: int = Field(default=256, ge=6)
    max_memory_mb: int = Field(default=2048, ge=6)
    default_cpus: float = Field(default=0.5, ge=0.01)
    max_cpus: float = Field(default=2.0, ge=0.01)
    default_pids: int = Field(default=256, ge=8)
    max_pids: int = Field(default=1024, ge=8)
    # The most containers (replicas) one app may run side by side
    app_max_replicas: int = Field(default=10, ge=1, le=100)
    # Per-user quotas
    user_max_apps: int = Field(default=20, ge=0)
    user_max_memory_mb: int = Field(default=8192, ge=0)
    # Like memory, these count what a member's containers run (or a pending deploy will),
    # not only what their apps are set to (services/quotas.py)
    user_max_cpus: float = Field(default=10.0, ge=0)
    user_max_pids: int = Field(default=8192, ge=0)
    # The most an app container may write to its own filesystem, where the engine can bound
    # it (overlay2 on xfs with pquota, btrfs, zfs); 0: no bound. See README's security section
    app_disk_mb: int = Field(default=1024, ge=0)
    # Image policy: shell-style patterns (fnmatch) an app's image must match, comma-separated
    allowed_images: str = "*"
    # Domain policy for members (admins are exempt): shell-style patterns, comma-separated
    allowed_domains: str = "*"

    @field_validator("tls_cert_file", "tls_key_file", "acme_ca_bundle", mode="before")
    @classmethod
    def _empty_path_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("acme_directory_url")
    @classmethod
    def _acme_url_is_https(cls, value: str) -> str:
        if value and not re.fullmatch(r"https://[^\s/]+(/\S*)?", value):
            raise ValueError(
                "ACME_DIRECTORY_URL must be an https:// URL, e.g. "
                "https://acme-v02.api.letsencrypt.org/directory (or empty for no ACME)"
            )
        return value

    @model_validator(mode="after")
    def _tls_files_in_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        return self

    @field_validator(
        "secret_key", "admin_token", "redis_password", "registry_password", mode="before"
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `SECRET_KEY=` in a .env file means "not set", never "the empty key"
        if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            return None
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("SECRET_KEY must be at least 32 characters (or unset)")
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_a_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The router strips only "Bearer mp_..." before a request reaches an app: another
        # shape would be handed to apps, and a short one can be guessed
        if value is None:
            return value
        token = value.get_secret_value()
        if not token.startswith("mp_") or len(token) < 32:
            raise ValueError(
                "ADMIN_TOKEN must start with 'mp_' and be at least 32 characters, "
                "e.g. mp_$(openssl rand -hex 32); or leave it unset to have one generated"
            )
        return value

    @field_validator("apps_domain", "platform_host")
    @classmethod
    def _is_a_hostname(cls, value: str) -> str:
        value = value.lower().removesuffix(".")
        if len(value) > 253 or not re.fullmatch(rf"{_LABEL}(\.{_LABEL})*", value):
            raise ValueError("must be a host name such as 'apps.example.com'")
        return value

    @field_validator("router_control_secret", mode="before")
    @classmethod
    def _control_secret(cls, value: object) -> object:
        if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        # It travels in an HTTP header and a file nginx reads: letters, digits, '-', '_' only
        if isinstance(text, str) and not re.fullmatch(r"[A-Za-z0-9_-]{32,256}", text):
            raise ValueError("ROUTER_CONTROL_SECRET must be 32-256 letters, digits, '-' or '_'")
        return value

    @field_validator("registry_url")
    @classmethod
    def _registry_is_an_address(cls, value: str) -> str:
        # The registry part of an image reference: host[:port], no scheme, no path
        value = value.strip().lower()
        if value and not re.fullmatch(rf"{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?", value):
            raise ValueError(
                "REGISTRY_URL must be a registry's host[:port] without a scheme, e.g. "
                "registry.example.com:5000 (or empty for the embedded one)"
            )
        return value

    @field_validator("registry_user")
    @classmethod
    def _registry_user_is_a_name(cls, value: str) -> str:
        # It goes into an htpasswd line ("user:hash") and HTTP basic auth ("user:password")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError("REGISTRY_USER must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("instance_name")
    @classmethod
    def _instance_is_a_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,29}", value):
            raise ValueError("INSTANCE_NAME must be 1-30 lowercase letters, digits or '-'")
        return value

    @property
    def database_url(self) -> str:
        from sqlalchemy.engine import URL

        if self.postgres_host.startswith("/"):
            return URL.create(
                "postgresql+psycopg",
                username=self.postgres_user,
                password=self.postgres_password,
                database=self.postgres_db,
                query={"host": self.postgres_host, "port": str(self.postgres_port)},
            ).render_as_string(hide_password=False)
        return URL.create(
            "postgresql+psycopg",
            username=self.postgres_user,
            password=self.postgres_password,
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_db,
        ).render_as_string(hide_password=False)

    @property
    def nginx_dir(self) -> Path:
        return self.data_dir / "nginx"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def builds_dir(self) -> Path:
        """Uploaded build contexts, while they wait for and go through their build."""
        return self.data_dir / "builds"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @model_validator(mode="after")
    def _generated_local_passwords(self) -> Settings:
        """`make up` generates passwords for the PostgreSQL and Redis it runs; use them unless
        the environment names others."""
        for field, path in (
            ("postgres_password", self.postgres_password_file),
            ("redis_password", self.redis_password_file),
        ):
            if field not in self.model_fields_set and path.exists():
                setattr(self, field, path.read_text().strip())
        return self

    @property
    def postgres_password_file(self) -> Path:
        return self.data_dir / "postgres.password"

    @property
    def redis_password_file(self) -> Path:
        return self.data_dir / "redis.password"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def registry_password_file(self) -> Path:
        """The embedded registry's password when REGISTRY_PASSWORD is unset (made once)."""
        return self.data_dir / "registry.password"

    @property
    def install_id_file(self) -> Path:
        """This install's random id, stamped on its containers and network (first start)."""
        return self.data_dir / "install-id"

    @property
    def router_control_secret_file(self) -> Path:
        return self.data_dir / "router-control.secret"

    @property
    def router_control_socket(self) -> Path:
        """The router's control endpoint: a unix socket, never a network port."""
        return self.run_dir / "router" / "control.sock"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def allowed_image_patterns(self) -> list[str]:
        return [p.strip() for p in self.allowed_images.split(",") if p.strip()]

    @property
    def apps_network(self) -> str:
        return f"{self.instance_name}-apps"

    @property
    def api_url(self) -> str:
        return f"http://{_url_host(_reachable(self.app_host))}:{self.app_port}"

    @property
    def router_url(self) -> str:
        return f"http://{_url_host(self.router_host)}:{self.router_port}"

    @property
    def router_probe_url(self) -> str:
        """Where this host reaches its own router (loopback when nginx listens everywhere)."""
        return f"http://{_url_host(_reachable(self.router_host))}:{self.router_port}"

    @property
    def router_listen(self) -> str:
        """nginx's `listen` value: IPv6 addresses go in brackets."""
        return f"{_url_host(self.router_host)}:{self.router_port}"

    @property
    def router_tls_listen(self) -> str | None:
        """nginx's `listen` value of the HTTPS port, None when there is none."""
        if not self.router_tls_port:
            return None
        return f"{_url_host(self.router_host)}:{self.router_tls_port}"

    @property
    def tls_dir(self) -> Path:
        """The fallback certificate and the certificates nginx loads when it starts (0700)."""
        return self.data_dir / "tls"


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"


def _reachable(host: str) -> str:
    """A wildcard bind address is reached through loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def worker_count(settings: Settings) -> int:
    """WORKER_PROCESSES, or one per CPU (at least 2: a slow deploy never holds every other)."""
    if settings.worker_processes:
        return settings.worker_processes
    return min(8, max(2, os.cpu_count() or 1))


@lru_cache
def get_settings() -> Settings:
    return Settings()
