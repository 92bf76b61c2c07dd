"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses. Checked when a
subscription is made and again at every delivery, which then connects to the very address it checked (a DNS
answer that changes in between, to a private address, cannot redirect the POST)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from core.errors import ApplicationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ApplicationError):
    """A URL the platform will not post to; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as the URL names it (the Host header and the TLS name)
    port: int
    path: str  # with its query
    address: str  # the checked address the POST goes to

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS]


def address_refusal(address: IPAddress) -> str | None:
    """Why posting to ``address`` is refused, or None. Only global unicast addresses are allowed, apart from the
    networks the site allows (``DUMPSITE_WEBHOOK_ALLOWED_NETWORKS``)."""
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if any(address in network for network in allowed_networks()):
        return None
    for test, what in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "an unspecified"),
        ("is_reserved", "a reserved"),
        ("is_private", "a private"),
    ):
        if getattr(address, test):
            return f"{what} address"
    if not address.is_global:
        return "a non-public address"
    return None


def split_url(url: str) -> tuple[str, str, int, str]:
    """scheme, host, port and path of an http(s) URL; TargetRefused otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Not a valid URL: {exc}.", {"url": "invalid"}) from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("Only http and https URLs can receive webhooks.", {"url": "scheme"})
    if not parts.hostname:
        raise TargetRefused("The URL names no host.", {"url": "host"})
    if parts.username or parts.password:
        raise TargetRefused("The URL may not hold a user name or password; the secret signs each body.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"The host {host!r} could not be resolved ({exc}).", {"url": "unresolved"}) from None
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def check_target(url: str) -> Target:
    """The URL's target, checked now: every address its host resolves to must be allowed (one refused address
    refuses the URL, so a round-robin answer cannot slip a private address in)."""
    scheme, host, port, path = split_url(url)
    addresses = resolve(host, port)
    if not addresses:
        raise TargetRefused(f"The host {host!r} resolves to no address.", {"url": "unresolved"})
    for address in addresses:
        why = address_refusal(address)
        if why:
            raise TargetRefused(
                f"{host} resolves to {address}, {why}: webhooks are sent to public addresses only.",
                {"url": "address refused"},
            )
    return Target(scheme=scheme, host=host, port=port, path=path, address=str(addresses[0]))
