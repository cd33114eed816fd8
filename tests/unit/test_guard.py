"""Which addresses an owner's push endpoint may reach: public unicast only, IPv6 forms of IPv4 unwrapped."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from infra.channels.guard import BlockedAddress, blocked, not_public, public_only_client


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::7f00:1", "loopback"),  # NAT64
        ("2002:7f00:1::", "loopback"),  # 6to4
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("224.0.1.1", "multicast"),  # is_global, but still multicast
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "private"),  # Python counts 0.0.0.0/8 ("this network") as private
        ("::", "unspecified"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "not global"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_addresses_that_are_not_public_are_named(address: str, why: str | None) -> None:
    assert not_public(address) == why


def test_a_refusal_is_found_behind_httpx_errors() -> None:
    refusal = BlockedAddress("x resolves to an address that is not public: 127.0.0.1 (loopback)")
    wrapped = httpx.ConnectError(str(refusal))
    wrapped.__cause__ = refusal  # as httpx re-raises httpcore's errors: `raise ConnectError(…) from exc`
    assert blocked(wrapped) is refusal
    assert blocked(httpx.ConnectError("connection refused")) is None


def test_the_push_client_refuses_before_connecting() -> None:
    """Resolution only: the names and literals below are refused before any connection is tried."""

    async def send(url: str) -> BaseException:
        async with public_only_client(5.0) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.post(url, content=b"x")
            return caught.value

    for url in ("http://localhost:9/push", "https://[::ffff:127.0.0.1]:9/push", "http://10.255.255.1:9/"):
        refusal = blocked(asyncio.run(send(url)))
        assert refusal is not None and "not public" in str(refusal), url
