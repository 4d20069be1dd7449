"""The API's processes: a master and N servers, none of which serves on without its master.

    python -m minipaas.host.lifeline [--processes N] [--app module:factory] [--host] [--port]

Each server process binds its own listening socket with SO_REUSEPORT, so the kernel spreads
new connections evenly over the processes. With one socket shared by all (uvicorn's
`--workers`), whichever process happened to be in accept() took them: 16 kept-alive
connections split 15/1 and one process did all the work while the other idled.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

_PR_SET_PDEATHSIG = 1
API_FACTORY = "minipaas.api.app:create_app"
# A server that dies sooner than this after its start is restarted only after a pause
_FAST_CRASH_SECONDS = 5.0
# How long servers get to finish their requests after SIGTERM before they are killed
_STOP_GRACE_SECONDS = 10.0
# The cyclic collector's thresholds in a server (Python's: 700, 10, 10). A page of 200 apps
# allocates tens of thousands of objects, and the defaults ran a collection every 700 of
# them, each walking what the imports had left young: 1 in 5 of the page's CPU
# (measured in-process, 400 pages of 200 apps: 6.1 -> 4.9 ms of CPU a page, with the heap
# frozen as well)
_GC_THRESHOLDS = (10_000, 20, 100)

log = logging.getLogger(__name__)


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Asks Linux to send `sig` to this process when its parent exits; False if it cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # The parent may have died before the call: then nobody would send the signal
    if os.getppid() == 1:
        os.kill(os.getpid(), sig)
    return True


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that other processes of this user may bind as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_one(factory: str, host: str, port: int, options: dict[str, Any]) -> None:
    """One server process (the target of each child): its own socket, one event loop."""
    import uvicorn

    die_with_parent()
    config = uvicorn.Config(factory, factory=True, host=host, port=port, **options)
    config.load()  # the app and everything it imports, before the heap is frozen
    _settle_heap()
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


def _settle_heap() -> None:
    """What the server built to start lives as long as it does: moved out of the
    collector's sight (gc.freeze), so collections walk only what requests allocate, and
    they run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def serve(factory: str, host: str, port: int, processes: int, options: dict[str, Any]) -> None:
    """Runs `processes` servers until SIGTERM/SIGINT; restarts one that dies."""
    context = multiprocessing.get_context("spawn")  # no state of the master leaks in
    stop = threading.Event()

    def start() -> tuple[BaseProcess, float]:
        child = context.Process(
            target=serve_one, args=(factory, host, port, options), name="minipaas-api"
        )
        child.start()
        return child, time.monotonic()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: stop.set())
    children = [start() for _ in range(processes)]
    log.info("API on %s:%s: %d processes %s", host, port, processes, [c.pid for c, _ in children])
    while not stop.wait(0.5):
        for index, (child, started) in enumerate(children):
            if child.is_alive():
                continue
            log.warning("API process %s ended (exit code %s)", child.pid, child.exitcode)
            if time.monotonic() - started < _FAST_CRASH_SECONDS and stop.wait(1.0):
                break
            children[index] = start()
    _stop_all([child for child, _ in children])


def _stop_all(children: list[BaseProcess]) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()


def process_count(configured: int) -> int:
    """API_PROCESSES, or one per CPU (at least 2, at most 8)."""
    if configured:
        return configured
    return min(8, max(2, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> None:
    from minipaas.config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m minipaas.host.lifeline")
    parser.add_argument("--app", default=API_FACTORY, help="module:factory of the ASGI app")
    parser.add_argument("--host", default=settings.app_host)
    parser.add_argument("--port", type=int, default=settings.app_port)
    parser.add_argument("--processes", type=int, default=process_count(settings.api_processes))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # What `minipaas api` sets up: shared metrics, JSON logs, servers tied to this master
    metrics_dir = settings.run_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    os.environ["MINIPAAS_JSON_LOGS"] = "1"
    options = {
        "proxy_headers": True,
        "forwarded_allow_ips": "127.0.0.1",
        "log_config": None,  # JSON lines from minipaas.logs, set up in each process
        "log_level": "info",
        "access_log": False,
    }
    serve(args.app, args.host, args.port, max(1, args.processes), options)


if __name__ == "__main__":
    main()
