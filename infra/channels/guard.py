"""Where an owner's push endpoint may make the server connect: public addresses only.

An endpoint is checked when it is registered and again on every connection. The send-time check is done by
the HTTP client's network backend, which resolves the name, refuses it if any of its addresses is not public,
and connects to an address it has just checked: a name whose answer changes between the check and the
connection (DNS rebinding) cannot steer the request to an internal host. TLS still verifies the certificate
against the name (httpcore passes the URL's host as the server name, not the address connected to).
Operator-configured URLs (chat webhook, ntfy, SMTP) are trusted and do not go through this.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), which is where it really goes."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip


def not_public(address: str) -> str | None:
    """Why an address is not a public unicast one (`loopback`, `private`, …), or None when it is."""
    ip = _embedded(ipaddress.ip_address(address.split("%", 1)[0]))  # drop an IPv6 zone index
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:  # shared address space (100.64/10) and the like
        return "not global"
    return None


def refused(addresses: Iterable[str]) -> list[str]:
    """`address (why)` for each address that is not public."""
    return [f"{a} ({why})" for a in dict.fromkeys(addresses) if (why := not_public(a)) is not None]


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, on the event loop's resolver (it runs in the loop's thread pool)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class BlockedAddress(httpcore.ConnectError):
    """An endpoint's name resolves to an address that is not public; nothing was sent."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's backend that connects only to public addresses, to the very address it checked."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        bad = refused(addresses)
        if bad or not addresses:
            raise BlockedAddress(f"{host} resolves to an address that is not public: {', '.join(bad)}")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("push endpoints are TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def public_only_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client that reaches public addresses only and follows no redirect.

    httpx takes no network backend, so its transport's connection pool is replaced by one built with ours
    (the same settings httpx uses by default). No proxy from the environment: the proxy's own address would
    be checked instead of the endpoint's.
    """
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            "httpx's transport has changed: push endpoints cannot be limited to public addresses"
        )
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PublicOnlyBackend(),
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def blocked(exc: BaseException) -> BlockedAddress | None:
    """The BlockedAddress behind an httpx error (httpx re-raises httpcore's errors as its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
