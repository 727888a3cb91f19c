"""Which networks count as private: what an export or a dashboard may be opened to.

An NFS export (`no_root_squash`) or a Ray dashboard (a job-submission API) opened
to a public range hands the cluster to the internet. They go to the ranges meant
for private use, plus any the inventory names as private (`private_ranges`: the
lab's 198.18.0.0/15 is one). Anything else needs `allow_public_networks: true`,
and the step then says so in the report, every run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from .errors import InputError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: RFC 1918, carrier-grade NAT (RFC 6598, what many clouds give as private), IPv6 ULA.
PRIVATE_RANGES: Tuple[Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
LOOPBACK: Tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128"))


@dataclass(frozen=True)
class Reach:
    """The cluster's idea of private: the standard ranges, the inventory's own, and the override."""

    extra: Tuple[Network, ...] = ()
    allow_public: bool = False

    @property
    def ranges(self) -> Tuple[Network, ...]:
        return PRIVATE_RANGES + self.extra

    def is_private(self, net: Network) -> bool:
        return _within(net, self.ranges)

    def warnings(self) -> List[str]:
        """The report's word on `private_ranges` entries that hold internet addresses: said every run."""
        return [f"private_ranges declares {net} private, though it holds public (internet) addresses: gpufab's "
                f"listeners accept it as the cluster's private network" for net in self.extra if _holds_global(net)]


def _holds_global(net: Network) -> bool:
    """Whether any address of `net` is routable on the internet (not a reserved or private block)."""
    if net.is_private or net.is_reserved or net.is_loopback or net.is_link_local or net.is_multicast:
        return False
    return net.is_global or any(a.is_global for a in (net.network_address, net.broadcast_address))


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def strict_ip(value: Any) -> Address:
    """One IP address, as gpufab takes it from any input; ValueError otherwise.

    `ipaddress` accepts an IPv6 scope id (`fd00::1%<anything>`) holding any
    character but `/` and `%`: shell metacharacters, commas, a newline. A
    cluster's addresses are never link-local, so no scope id is taken at all.
    """
    text = str(value)
    if isinstance(value, bool) or "%" in text or text != text.strip() or not text:
        raise ValueError(f"not an IP address without a scope id: {value!r}")
    return ipaddress.ip_address(text)


def strict_network(value: Any) -> Network:
    """One CIDR (host bits allowed), as `strict_ip` takes an address: no scope id, nothing around it."""
    text = str(value).strip()
    if isinstance(value, bool) or "%" in text or not text or any(c.isspace() for c in text):
        raise ValueError(f"not a CIDR without a scope id: {value!r}")
    return ipaddress.ip_network(text, strict=False)


def _within(net: Network, ranges: Tuple[Network, ...]) -> bool:
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)  # type: ignore[arg-type]


def read_reach(extra: Any, allow_public: Any) -> Reach:
    """Settings `private_ranges` (CIDRs, a list or comma-separated) and `allow_public_networks`."""
    items = extra.split(",") if isinstance(extra, str) else (extra or [])
    if not isinstance(items, (list, tuple)):
        raise InputError(f"private_ranges must be a list of CIDRs, not {extra!r}", path="private_ranges")
    nets = []
    for item in items:
        try:
            net = strict_network(item)
        except ValueError:
            raise InputError(f"invalid CIDR {item!r}", path="private_ranges") from None
        if net.prefixlen == 0:
            raise InputError(f"{net} is every address, not a private range", path="private_ranges")
        nets.append(net)
    if not isinstance(allow_public, (bool, type(None))) and str(allow_public).lower() not in ("true", "false"):
        raise InputError(f"expected true or false, not {allow_public!r}", path="allow_public_networks")
    return Reach(tuple(nets), allow_public is True or str(allow_public).lower() == "true")


def check_network(value: Any, what: str, reach: Reach) -> Tuple[str, Optional[str]]:
    """A CIDR the cluster may open `what` to, and the warning when only the override allows it."""
    try:
        net = strict_network(value)
    except ValueError:
        raise InputError(f"invalid CIDR {value!r} for {what}", path="private_subnet") from None
    if net.prefixlen == 0:
        raise InputError(f"refusing to open {what} to {net}: that is every address", path="private_subnet")
    return str(net), _judge(net, str(net), what, reach, "private_subnet")


def check_bind_address(value: Any, what: str, reach: Reach, option: str) -> Tuple[str, Optional[str]]:
    """An address to listen on: one IP (no names, spaces or newlines), loopback or private."""
    try:
        ip = strict_ip(str(value).strip())
    except ValueError:
        raise InputError(f"invalid address {value!r} for {what}: give one IP address", path=option) from None
    net = ipaddress.ip_network(ip)
    if _within(net, LOOPBACK):
        return str(ip), None
    if ip.is_unspecified:
        if not reach.allow_public:
            raise InputError(f"refusing to bind {what} to {ip} (every interface, the public one too); give the "
                             "private address, or set allow_public_networks: true", path=option)
        return str(ip), f"{what} listens on every interface ({ip}): allow_public_networks is set"
    return str(ip), _judge(net, str(ip), what, reach, option)


def _judge(net: Network, shown: str, what: str, reach: Reach, option: str) -> Optional[str]:
    if reach.is_private(net):
        return None
    if not reach.allow_public:
        raise InputError(f"refusing to open {what} to {shown}: not a private range (10/8, 172.16/12, 192.168/16, "
                         "100.64/10, fc00::/7, or the inventory's private_ranges); set allow_public_networks: true "
                         "to do it anyway", path=option)
    return f"{what} is open to {shown}, which is not private: allow_public_networks is set"
