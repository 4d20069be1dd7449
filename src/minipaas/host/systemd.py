"""Starting the platform at boot on hosts where systemd runs: one unit, the supervisor."""

from __future__ import annotations

import subprocess
from pathlib import Path

from minipaas.config import Settings
from minipaas.host.supervisor import SUPERVISORD, Supervisor

UNIT_NAME = "minipaas.service"
UNIT_DIR = Path("/etc/systemd/system")


def render_unit(settings: Settings) -> str:
    """supervisord in the foreground with the config `make up` wrote; it runs the rest."""
    supervisor = Supervisor(settings)
    return f"""\
# Written by `minipaas platform install-systemd`. `make up` must have run once: it writes
# {supervisor.conf}, which this unit starts at boot.
[Unit]
Description=mini-paas (supervisord running PostgreSQL, Redis, nginx, API and worker)
After=network-online.target docker.service
Wants=network-online.target docker.service

[Service]
Type=simple
ExecStart=/usr/bin/{SUPERVISORD} --nodaemon -c {supervisor.conf}
ExecStop=/usr/bin/supervisorctl -c {supervisor.conf} shutdown
Restart=always
RestartSec=2
KillMode=mixed
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
"""


def install_unit(settings: Settings, unit_dir: Path = UNIT_DIR) -> Path:
    path = unit_dir / UNIT_NAME
    path.write_text(render_unit(settings))
    return path


def systemd_runs() -> bool:
    return Path("/run/systemd/system").is_dir()


def enable_now() -> None:
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    subprocess.run(["systemctl", "enable", "--now", UNIT_NAME], check=True)
