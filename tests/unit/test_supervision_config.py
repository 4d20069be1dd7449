"""The supervisor's config, the boot unit, and how a restart ends what a killed run left."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from minipaas.config import Settings
from minipaas.host.service_exec import (
    end_leftovers,
    group_members,
    group_record,
    recorded_group,
    remove_stale_pidfile,
)
from minipaas.host.supervisor import Program, Supervisor
from minipaas.host.systemd import render_unit


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]


def test_every_program_restarts_and_stops_as_a_group(tmp_path: Path) -> None:
    supervisor = Supervisor(_settings(tmp_path))
    programs = [
        Program("postgres", ("/usr/lib/postgresql/15/bin/postgres", "-D", "/d"), user="postgres"),
        Program("api", ("python", "-m", "minipaas", "api"), stale_sockets=(Path("/r/s.sock"),)),
    ]
    supervisor.write(programs, {"SECRET_KEY": "s" * 40})
    text = supervisor.conf.read_text()
    for name in ("postgres", "api"):
        section = text[text.index(f"[program:{name}]") :]
        section = section[: section.find("\n\n")]
        for line in ("autorestart = true", "stopasgroup = true", "killasgroup = true"):
            assert line in section, (name, line)
        assert "minipaas.host.service_exec" in section
        assert f"--group-file {tmp_path}/run/groups/{name}.pgid" in section
    assert "--user postgres" in text and "--stale-socket /r/s.sock" in text
    assert f"file = {tmp_path}/run/supervisor.sock\nchmod = 0700" in text
    # the environment (secrets) and the config are readable by root only
    for path in (supervisor.conf, supervisor.env_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_percent_signs_and_spaces_survive_supervisords_parsing(tmp_path: Path) -> None:
    supervisor = Supervisor(_settings(tmp_path))
    text = supervisor.render([Program("router", ("nginx", "-g", "daemon off;", "50%"))])
    assert "-g 'daemon off;' '50%%'" in text


def test_the_boot_unit_runs_the_same_supervisor(tmp_path: Path) -> None:
    unit = render_unit(_settings(tmp_path))
    assert f"ExecStart=/usr/bin/supervisord --nodaemon -c {tmp_path}/supervisor/" in unit
    # restarted after a crash, not after `make down`'s clean shutdown
    assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit


def test_a_restart_ends_the_workers_a_killed_master_left(tmp_path: Path) -> None:
    # a "master" with two "workers" in a process group of its own, like nginx or uvicorn
    master = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    group_file = tmp_path / "groups" / "router.pgid"
    group_file.parent.mkdir()
    group_file.write_text(group_record(master.pid))
    deadline = time.monotonic() + 5
    while len(group_members(master.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [pid for pid in group_members(master.pid) if pid != master.pid]
    assert len(workers) == 2
    os.kill(master.pid, signal.SIGKILL)
    master.wait()
    assert sorted(group_members(master.pid)) == sorted(workers)  # orphans, still running

    ended = end_leftovers(group_file)
    assert sorted(ended) == sorted(workers)
    assert group_members(master.pid) == []


def test_a_stale_pid_file_whose_pid_was_reused_is_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "postmaster.pid"
    me = Path("/proc/self/comm").read_text().strip()
    # the pid is alive but is not the server any more (pids wrap around on a busy host)
    pidfile.write_text(f"{os.getpid()}\n/data\n")
    assert remove_stale_pidfile(pidfile, "postgres") is True
    assert not pidfile.exists()
    # a live process of that name keeps its pid file
    pidfile.write_text(f"{os.getpid()}\n")
    assert remove_stale_pidfile(pidfile, me) is False
    assert pidfile.exists()


def test_a_recorded_group_number_that_may_be_another_groups_is_left_alone(
    tmp_path: Path,
) -> None:
    """The group files are on disk: after a reboot, or once pids wrapped, the number may be
    any process group (one of the host's daemons). Only the very group recorded is ended."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        group_file = tmp_path / "router.pgid"
        pgid, boot, start = group_record(other.pid).split()
        for stale in (
            f"{pgid}\n",  # written before groups were recorded with their boot
            f"{pgid} another-boot {start}\n",  # recorded before a reboot
            f"{pgid} {boot} {int(start) - 1}\n",  # its leader is another process now
        ):
            group_file.write_text(stale)
            assert recorded_group(group_file) is None
            assert end_leftovers(group_file) == []
            assert other.poll() is None  # still running
        group_file.write_text(group_record(other.pid))
        assert recorded_group(group_file) == other.pid
    finally:
        other.kill()
        other.wait()
