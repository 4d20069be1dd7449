"""How the supervisor starts each platform process: no orphan of an earlier run survives.

    python -m minipaas.host.service_exec --env FILE --group-file FILE -- COMMAND ...

Loads the platform's environment (written by `make up`, so a start at boot gets the same
settings), ends every process left in the process group an earlier run of this service
recorded (an nginx or API worker whose master was killed keeps the port otherwise), records
its own group, then becomes COMMAND. Only the standard library: it runs on every (re)start.
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


def end_leftovers(group_file: Path, *, grace: float = 3.0) -> list[int]:
    """Ends the processes still in the group recorded in `group_file`; returns their pids."""
    try:
        pgid = int(group_file.read_text().strip())
    except (OSError, ValueError):
        return []
    if pgid == os.getpgrp():
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
    if args.env.exists():
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
    args.group_file.parent.mkdir(parents=True, exist_ok=True)
    args.group_file.write_text(f"{os.getpgrp()}\n")
    if args.user:
        _become(args.user)
    os.execvp(command[0], command)


def _become(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups(os.getgrouplist(user, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)


if __name__ == "__main__":
    main()
