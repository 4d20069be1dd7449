"""One app's route in the reload-free router: validated values and their JSON form."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOOPBACK",
    "MAX_HOSTS",
    "Backend",
    "Route",
    "RouteKind",
    "app_route",
    "check_address",
    "check_host_policy",
    "is_ipv4",
    "normalize_host",
]

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
APP_NAME = re.compile(_LABEL)
HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_APP_ID = 2**31 - 1
MAX_HOSTS = 64
# Backends of one app (its replicas); APP_MAX_REPLICAS is at most 100
MAX_BACKENDS = 100
# Where a backend is when a route names no address (every route before node addresses)
LOOPBACK = "127.0.0.1"
_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")


def is_ipv4(address: str) -> bool:
    """A dotted quad (no leading zeros): what nginx's balancer connects to without a lookup."""
    return bool(_IPV4.fullmatch(address)) and all(int(p) <= 255 for p in address.split("."))


def check_address(address: object) -> str:
    """A backend's node address, as nginx's Lua code takes it: an IPv4 dotted quad, or a host
    name of lowercase letters, digits, '-' and dots; nothing else (no port, path or space)."""
    if not isinstance(address, str) or not address or len(address) > 253:
        raise ValueError("a backend address is an IPv4 address or a host name")
    if _DIGITS_AND_DOTS.fullmatch(address):
        if not is_ipv4(address):
            raise ValueError(f"{address[:80]!r} is not an IPv4 address")
        return address
    if not HOSTNAME.fullmatch(address):
        raise ValueError(
            f"{address[:80]!r} is not a backend address (an IPv4 address or a lowercase "
            "host name, without a port)"
        )
    return address


@dataclass(frozen=True)
class Backend:
    """One replica as the router reaches it: a node's address and the published port."""

    address: str
    port: int

    def __post_init__(self) -> None:
        check_address(self.address)
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError("every backend port is between 1 and 65535")

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}

    @classmethod
    def from_json(cls, data: object) -> Backend:
        if not isinstance(data, Mapping):
            raise ValueError("a backend is a JSON object with address and port")
        return cls(data.get("address"), data.get("port"))  # type: ignore[arg-type]


def normalize_host(host: str) -> str:
    """Lowercase, no trailing dot; raises ValueError unless it is a plain DNS host name."""
    name = host.strip().lower().removesuffix(".")
    if len(name) > 253 or not HOSTNAME.fullmatch(name):
        raise ValueError(f"{host[:80]!r} is not a host name (letters, digits, '-' and dots)")
    # A dotted-number host is an IP address to browsers and to nginx: the platform's, not an app's
    if name.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"{name!r} looks like an IP address; an app needs a host name")
    if name == "localhost":
        raise ValueError("'localhost' cannot be an app's host")
    return name


class RouteKind(enum.StrEnum):
    PROXY = "proxy"  # the app has a running container
    STOPPED = "stopped"  # the app has a container that is not running: a 503 page


@dataclass(frozen=True)
class Route:
    """Where the router sends one app's traffic: by path /apps/<id>/ and by each of its hosts.

    `address`:`port` is the first replica's; `more_backends` the others' (the balancer
    spreads requests over all of them)."""

    app_id: int
    app_name: str
    kind: RouteKind
    port: int | None = None
    hosts: tuple[str, ...] = ()
    more_backends: tuple[Backend, ...] = ()
    address: str = LOOPBACK

    def __post_init__(self) -> None:
        # Everything here ends up in nginx's memory and in its error pages: validate it all
        if type(self.app_id) is not int or not 1 <= self.app_id <= MAX_APP_ID:
            raise ValueError(f"app_id must be an integer between 1 and {MAX_APP_ID}")
        if not isinstance(self.app_name, str) or not APP_NAME.fullmatch(self.app_name):
            raise ValueError("app names in routes are DNS labels")
        object.__setattr__(self, "kind", RouteKind(self.kind))
        if self.kind is RouteKind.PROXY:
            if type(self.port) is not int or not 1 <= self.port <= 65535:
                raise ValueError("a proxy route needs a port between 1 and 65535")
            check_address(self.address)
        else:
            # A stopped app has no target; keeping a stale port would only make drift checks lie
            object.__setattr__(self, "port", None)
            object.__setattr__(self, "more_backends", ())
            object.__setattr__(self, "address", LOOPBACK)
        more = tuple(self.more_backends)
        if len(more) + 1 > MAX_BACKENDS:
            raise ValueError(f"a route has at most {MAX_BACKENDS} backends")
        for extra in more:
            if not isinstance(extra, Backend):
                raise ValueError("more_backends holds Backend values (address and port)")
        object.__setattr__(self, "more_backends", more)
        if len(set(self.backends)) != len(more) + (self.port is not None):
            raise ValueError("a route lists each backend (address and port) once")
        if isinstance(self.hosts, str):
            raise ValueError("hosts is a sequence of host names, not one string")
        hosts = tuple(sorted({normalize_host(host) for host in self.hosts}))
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"an app may have at most {MAX_HOSTS} hosts")
        object.__setattr__(self, "hosts", hosts)

    def to_json(self) -> dict[str, Any]:
        """The form the router's Lua code and the snapshot files keep."""
        data: dict[str, Any] = {"id": self.app_id, "kind": self.kind.value, "name": self.app_name}
        if self.port is not None:
            data["port"] = self.port
            # Left out on loopback: a one-replica route on one host is what it always was
            if self.address != LOOPBACK:
                data["address"] = self.address
        if self.more_backends:
            data["backends"] = [backend.to_json() for backend in self.backends]
        if self.hosts:
            data["hosts"] = list(self.hosts)
        return data

    @property
    def backends(self) -> tuple[Backend, ...]:
        """Every backend, the first replica's first."""
        if self.port is None:
            return ()
        return (Backend(self.address, self.port), *self.more_backends)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Route:
        """Parses (and validates) what to_json wrote or nginx dumped; raises ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError("a route is a JSON object")
        hosts = data.get("hosts") or ()
        if not isinstance(hosts, list | tuple):
            raise ValueError("hosts must be a list")
        address = data.get("address")
        if address is None:  # as Lua reads it: no address (or null) is loopback
            address = LOOPBACK
        backends = _backends_of(data, address)
        if backends and (backends[0].address, backends[0].port) != (address, data.get("port")):
            raise ValueError("backends must start with the route's address and port")
        try:
            kind = RouteKind(data["kind"])
            return cls(
                data["id"],
                data["name"],
                kind,
                data.get("port"),
                tuple(hosts),
                tuple(backends[1:]),
                address,
            )
        except KeyError as exc:
            raise ValueError(f"a route needs {exc.args[0]!r}") from exc


def _backends_of(data: Mapping[str, Any], address: str) -> list[Backend]:
    """The `backends` list; or `ports`, the form written before node addresses (a snapshot
    kept from before an upgrade), whose backends are all at the route's address."""
    backends = data.get("backends")
    if backends is not None:
        if not isinstance(backends, list | tuple):
            raise ValueError("backends must be a list")
        return [Backend.from_json(item) for item in backends]
    ports = data.get("ports") or []
    if not isinstance(ports, list | tuple):
        raise ValueError("ports must be a list")
    return [Backend(address, port) for port in ports]


def app_route(
    *,
    app_id: int,
    app_name: str,
    kind: RouteKind,
    port: int | None = None,
    apps_domain: str,
    domains: Iterable[str] = (),
    more_backends: Iterable[Backend] = (),
    address: str = LOOPBACK,
) -> Route:
    """The usual route of an app: <name>.<apps_domain> plus its own domains."""
    hosts = (f"{app_name}.{apps_domain}", *domains)
    return Route(app_id, app_name, kind, port, hosts, tuple(more_backends), address)


def is_platform_host(host: str, platform_host: str) -> bool:
    """The platform's host or one under it: they share cookies with the platform."""
    return host == platform_host or host.endswith(f".{platform_host}")


def check_host_policy(route: Route, *, platform_host: str, apps_domain: str) -> None:
    """Refuses hosts an app must not answer for; raises ValueError saying which and why.

    The platform's host and its subdomains share cookies with the platform; a name under the
    apps domain other than the app's own belongs to another app (existing or future).
    """
    own = f"{route.app_name}.{apps_domain}"
    for host in route.hosts:
        if is_platform_host(host, platform_host):
            raise ValueError(f"{host!r} is the platform's own host or under it")
        if host == apps_domain:
            raise ValueError(f"{host!r} is the apps domain itself, not an app's host")
        if host.endswith(f".{apps_domain}") and host != own:
            raise ValueError(f"{host!r} is under the apps domain; app {route.app_name} has {own!r}")
