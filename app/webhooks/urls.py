"""Which webhook URLs may be called: the guard against server-side request forgery.

A URL must be https and its host must resolve only to public addresses. The check runs when an
endpoint is registered and again before every attempt, and the attempt then connects to the
address that was checked (never resolving the name a second time), so a DNS answer that changes
in between (rebinding) cannot point a delivery at the internal network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port → the addresses the name resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2000
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrlError(Exception):
    """The URL may not be called; the message says why (shown to whoever registered it)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL  # as registered
    address: IPAddress  # the checked address to connect to


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(url: str, *, allow_insecure: bool) -> httpx.URL:
    """The URL's form alone: scheme, host, length."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrlError(f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parsed.scheme not in allowed:
        raise UnsafeUrlError("webhook URLs must use https")
    if not parsed.host:
        raise UnsafeUrlError("the URL has no host")
    return parsed


def refusal(address: IPAddress, *, allow_insecure: bool) -> str | None:
    """Why `address` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one reaches that: ::ffff:10.0.0.1 (mapped),
        # 64:ff9b::10.0.0.1 (NAT64), 2002:0a00:0001:: (6to4).
        embedded = address.ipv4_mapped or address.sixtofour or _nat64(address)
        if embedded is not None:
            return refusal(embedded, allow_insecure=allow_insecure)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return None if allow_insecure else "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _nat64(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def check_url(url: str, *, allow_insecure: bool, resolver: Resolver) -> Target:
    """Resolve the URL's host and check every address it has; raises UnsafeUrlError.

    Resolving is bounded by the caller (asyncio.timeout)."""
    parsed = parse_url(url, allow_insecure=allow_insecure)
    host = parsed.host
    try:
        addresses, literal = [ipaddress.ip_address(host)], True
    except ValueError:
        addresses, literal = await _resolve(parsed, resolver), False
    # Every address, not only the one used: which one a later lookup returns first is the DNS
    # server's choice.
    for address in addresses:
        why = refusal(address, allow_insecure=allow_insecure)
        if why is not None:
            raise UnsafeUrlError(
                f"{host} is {why}" if literal else f"{host} resolves to {address}, {why}"
            )
    return Target(url=parsed, address=addresses[0])


async def _resolve(url: httpx.URL, resolver: Resolver) -> list[IPAddress]:
    host = url.raw_host.decode("ascii")
    try:
        found = await resolver(host, url.port or (443 if url.scheme == "https" else 80))
    except OSError as exc:
        raise UnsafeUrlError(f"{url.host} does not resolve ({exc.strerror or exc})") from None
    addresses = []
    for text in found:
        try:
            # A scoped IPv6 address (fe80::1%eth0) parses with its scope.
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise UnsafeUrlError(f"{url.host} resolves to {text!r}, not an address") from None
    if not addresses:
        raise UnsafeUrlError(f"{url.host} does not resolve")
    return addresses
