"""How the supervisor starts each platform process: no orphan of an earlier run survives.

    python -m minipaas.host.service_exec --env FILE --group-file FILE -- COMMAND ...

Loads the platform's environment (written by `make up`, so a start at boot gets the same
settings; not for a program run as another user, such as PostgreSQL), ends every process
left in the process group an earlier run of this service recorded (an nginx or API worker
whose master was killed keeps the port otherwise), records its own group, then becomes
COMMAND. Only the standard library: it runs on every (re)start.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import sys
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...; zombies are already dead
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_group(group_file: Path) -> None:
    """Records this process's group, with what tells it from a later one of that number."""
    group_file.parent.mkdir(parents=True, exist_ok=True)
    group_file.write_text(group_record(os.getpgrp()))


def group_record(pgid: int) -> str:
    """A group as a group file holds it: its number, the boot, and when its leader started."""
    return f"{pgid} {_boot_id()} {_start_time(pgid)}\n"


def recorded_group(group_file: Path) -> int | None:
    """The group `group_file` recorded, if it can still be that group: recorded in this
    boot, and its leader, if alive, is the same process. After a reboot (the file is on
    disk) or once pids wrapped, the number may be any other process's group, even one of
    the host's own daemons, and ending it would be ending that."""
    try:
        pgid_text, boot, start = group_file.read_text().split()
        pgid = int(pgid_text)
    except (OSError, ValueError):
        return None  # none, or written before groups were recorded with their boot
    if boot != _boot_id():
        return None
    leader_start = _start_time(pgid)
    if leader_start is not None and leader_start != start:
        return None
    # With its leader gone, the number stays taken while any member lives: those are its
    return pgid


def end_leftovers(group_file: Path, *, grace: float = 3.0) -> list[int]:
    """Ends the processes still in the group recorded in `group_file`; returns their pids."""
    pgid = recorded_group(group_file)
    if pgid is None or pgid == os.getpgrp():
        return []
    left = [pid for pid in group_members(pgid) if pid != os.getpid()]
    if not left:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return left
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.05)
    return left


def remove_stale_pidfile(path: Path, name: str) -> bool:
    """A killed server's pid file whose pid now belongs to some other process (pids wrap
    around quickly on a busy host) would make the server refuse to start forever."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = ""
    if comm == name:
        return False
    path.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: service_exec --env FILE --group-file FILE -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="service_exec")
    parser.add_argument("--env", type=Path, required=True)
    parser.add_argument("--group-file", type=Path, required=True)
    parser.add_argument("--user", help="run COMMAND as this user (PostgreSQL refuses root)")
    parser.add_argument(
        "--stale-pidfile",
        metavar="PATH:NAME",
        action="append",
        default=[],
        help="a pid file (e.g. postmaster.pid) whose pid is not a live NAME process any more",
    )
    parser.add_argument(
        "--stale-socket",
        type=Path,
        action="append",
        default=[],
        help="a unix socket a killed run left behind (bind() would refuse it)",
    )
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command after --")
    if args.env.exists() and not args.user:
        os.environ.update(json.loads(args.env.read_text()))
    # The supervisor made us a process group of our own; the command keeps it
    os.setpgid(0, 0)
    ended = end_leftovers(args.group_file)
    if ended:
        print(f"ended {len(ended)} leftover process(es) of an earlier run: {ended}", flush=True)
    for path in args.stale_socket:
        path.unlink(missing_ok=True)
    for spec in args.stale_pidfile:
        path, _, name = spec.rpartition(":")
        remove_stale_pidfile(Path(path), name)
    record_group(args.group_file)
    if args.user:
        _become(args.user)
    os.execvp(command[0], command)


# All a program run as another user keeps of the environment
_KEPT_FOR_OTHER_USERS = ("PATH", "LANG", "LC_ALL", "TZ")


def _become(user: str) -> None:
    """Runs on as `user`, with none of the platform's settings: its secrets (Redis's password,
    SECRET_KEY) would be readable by anything running as that user, in /proc/<pid>/environ."""
    entry = pwd.getpwnam(user)
    os.setgroups(os.getgrouplist(user, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    kept = {name: os.environ[name] for name in _KEPT_FOR_OTHER_USERS if name in os.environ}
    os.environ.clear()
    os.environ.update(kept, HOME=entry.pw_dir, USER=user, LOGNAME=user)


if __name__ == "__main__":
    main()
