"""The registries a build may reach: the allowlist's entries and how their text is read.

Below both the server's config (which checks ``registry-hosts`` when it is read) and the egress
proxy (which enforces it), so neither imports the other.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: What builds may reach when the operator names nothing else.
DEFAULT_REGISTRY_HOSTS = ("registry.npmjs.org", "pypi.org", "files.pythonhosted.org")
#: Ports a registry named without one may be reached on (https, http).
DEFAULT_PORTS = (443, 80)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


@dataclass(frozen=True)
class RegistryHost:
    """One allowlist entry: ``name``, ``name:port``, an address (``10.1.2.3:8081``, ``[::1]:4873``)
    or a name pinned to an address (``mirror.corp:443=10.1.2.3``)."""

    host: str                      # lower-case name, or the address as text
    port: int | None = None        # None: DEFAULT_PORTS
    address: IP | None = None      # an address entry, or a pinned name: connect only here

    def ports(self) -> tuple[int, ...]:
        return (self.port,) if self.port is not None else DEFAULT_PORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{host}:{self.port}" if self.port is not None else host
        if self.address is not None and str(self.address) != self.host:
            text += f"={self.address}"
        return text


def parse_registry_host(text: str) -> RegistryHost:
    """An allowlist entry from its text; ValueError names what is wrong."""
    raw = text.strip()
    pinned: IP | None = None
    if "=" in raw:
        raw, _, pin = raw.partition("=")
        try:
            pinned = ipaddress.ip_address(pin.strip().strip("[]"))
        except ValueError:
            raise ValueError(f"{text!r}: {pin.strip()!r} after '=' is not an IP address") from None
    host, port = split_authority(raw.strip(), default_port=None)
    address: IP | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        if not _NAME_RE.match(host):
            raise ValueError(f"{text!r} is not a host name, host:port or address") from None
    if address is not None and pinned is not None:
        raise ValueError(f"{text!r}: an address entry cannot be pinned to another address")
    return RegistryHost(host=str(address) if address is not None else host, port=port,
                        address=address if address is not None else pinned)


def parse_registry_hosts(entries: Iterable[str]) -> tuple[RegistryHost, ...]:
    return tuple(parse_registry_host(e) for e in entries)


def split_authority(text: str, default_port: int | None) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``host`` or a bare IPv6 address -> (lower-case host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not host:port")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""   # a name, or a bare IPv6 address
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be 1-65535")
        port = int(port_text)
    if not host:
        raise ValueError(f"{text!r} has no host")
    return host.lower().rstrip("."), port
