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
# Not after a clean stop: `make down` (supervisorctl shutdown) must leave it stopped
Restart=on-failure
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


def stop_unit_if_installed(unit_dir: Path = UNIT_DIR) -> bool:
    """Stops the unit (it stays enabled for the next boot); True if there was one to stop.
    `make down` calls it first: a supervisord the unit runs would otherwise be started again,
    or take over the socket of the one `make up` ran."""
    if not systemd_runs() or not (unit_dir / UNIT_NAME).exists():
        return False
    subprocess.run(["systemctl", "stop", UNIT_NAME], check=False)
    return True
