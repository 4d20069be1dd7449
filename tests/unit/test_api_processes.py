"""API processes: each binds its own SO_REUSEPORT socket, so the kernel spreads connections."""

from __future__ import annotations

import select
import socket

from minipaas.host.lifeline import process_count, reuseport_socket


def test_connections_are_spread_over_the_processes_sockets() -> None:
    first = reuseport_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuseport_socket("127.0.0.1", port)  # a second process would bind the same
    listeners = [first, second]
    for listener in listeners:
        listener.listen(64)
        listener.setblocking(False)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    accepted = {0: 0, 1: 0}
    try:
        while sum(accepted.values()) < len(clients):
            ready, _, _ = select.select(listeners, [], [], 5)
            assert ready, f"only {accepted} of {len(clients)} connections arrived"
            for listener in ready:
                connection, _ = listener.accept()
                connection.close()
                accepted[listeners.index(listener)] += 1
    finally:
        for sock in [*clients, *listeners]:
            sock.close()
    # hashed by address and port: both get a share (all 32 on one: odds 2 in 4 billion)
    assert accepted[0] > 0 and accepted[1] > 0, accepted


def test_process_count_is_the_setting_or_one_per_cpu() -> None:
    assert process_count(3) == 3
    assert 2 <= process_count(0) <= 8
