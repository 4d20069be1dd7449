"""Listening sockets read from a /proc-shaped tree."""

from __future__ import annotations

from pathlib import Path

from minipaas.runtime.listening import Listener, listeners

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0100007F:0050 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A
"""


def test_listeners_are_read_from_both_tables(tmp_path: Path) -> None:
    net = tmp_path / "42" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(TCP)
    (net / "tcp6").write_text(TCP6)
    found = listeners(42, proc=tmp_path)
    assert found == [
        Listener("::1", 22),
        Listener("127.0.0.1", 80),
        Listener("::", 5000),
        Listener("0.0.0.0", 8080),
    ]
    assert [str(item) for item in found] == ["::1:22", "127.0.0.1:80", "5000", "8080"]
    assert [item.reachable for item in found] == [False, False, True, True]


def test_no_proc_entry_means_unknown(tmp_path: Path) -> None:
    assert listeners(7, proc=tmp_path) is None
