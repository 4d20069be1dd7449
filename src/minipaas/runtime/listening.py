"""Which TCP ports a process's network namespace listens on, read from /proc.

The worker runs on the container's host, so /proc/<pid>/net/tcp of a container's main process
lists the container's sockets. Used to say why a new container does not answer: the app
listens on another port, or on 127.0.0.1 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in the kernel's st column
_ANY = {"0.0.0.0", "::"}
_LOOPBACK = {"127.0.0.1", "::1"}


@dataclass(frozen=True)
class Listener:
    address: str
    port: int

    @property
    def loopback_only(self) -> bool:
        return self.address in _LOOPBACK

    @property
    def reachable(self) -> bool:
        """Reachable from the host through the published port (any address but loopback)."""
        return not self.loopback_only

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" if self.address not in _ANY else str(self.port)


def listeners(pid: int, proc: Path = Path("/proc")) -> list[Listener] | None:
    """The listening sockets of the process's namespace; None when /proc cannot tell."""
    found: list[Listener] = []
    readable = False
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            address, _, port = fields[1].rpartition(":")
            found.append(Listener(_address(address), int(port, 16)))
    return sorted(set(found), key=lambda item: (item.port, item.address)) if readable else None


def _address(hexadecimal: str) -> str:
    """The kernel prints addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hexadecimal)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    if len(packed) == 4:
        return ".".join(str(byte) for byte in packed)
    if packed == bytes(16):
        return "::"
    if packed == bytes(15) + b"\x01":
        return "::1"
    if packed[:12] == bytes(10) + b"\xff\xff":  # an IPv4 address in IPv6 form
        return ".".join(str(byte) for byte in packed[12:])
    return ":".join(packed[i : i + 2].hex() for i in range(0, 16, 2))
