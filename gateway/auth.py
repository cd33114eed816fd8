"""Who is calling: bearer tokens (or the logged local mode), roles, and per-token rate limits."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field

import structlog
from starlette.requests import HTTPConnection

from gateway.problems import Problem
from infra.settings import Settings
from infra.tokens import Principal, Role, TokenStore

log = structlog.get_logger(__name__)
CACHE_SECONDS = 5.0  # a revoked token stops working within this long


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_bind_refusal(settings: Settings, local: bool) -> str | None:
    """Why serving would be refused: open local mode (no tokens) anywhere but on loopback."""
    if local and not is_loopback(settings.host):
        return (
            f"refusing to serve on {settings.host} without API tokens: create one with "
            "`progressd token create --role owner --owner NAME`, or bind to 127.0.0.1"
        )
    return None


@dataclass
class Bucket:
    """A token bucket: `rate` per second, up to `burst` at once."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 if allowed now, else the seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Auth:
    """Authenticates HTTP requests and WebSockets; open local mode only on loopback with no tokens."""

    def __init__(self, settings: Settings, tokens: TokenStore) -> None:
        self.settings = settings
        self.tokens = tokens
        self.local = not tokens.any_active()
        refusal = open_bind_refusal(settings, self.local)
        if refusal:
            raise AuthError(refusal)
        if self.local:
            who = settings.local_owner
            log.warning(
                "local_mode", detail=f"no API tokens exist: every request acts as '{who}' (loopback only)"
            )
        self._local_checked = time.monotonic()
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._buckets: dict[str, Bucket] = {}
        self.sockets: dict[str, int] = {}

    async def is_local(self) -> bool:
        """Open local mode: only while no active token exists, looked up again every few seconds (the first
        `progressd token create` closes it on a running server, as a revocation takes effect), and only on
        loopback (revoking every token on a public address leaves every request without a valid token)."""
        now = time.monotonic()
        if now - self._local_checked > CACHE_SECONDS:
            self._local_checked = now
            active = await asyncio.to_thread(self.tokens.any_active)
            local = not active and is_loopback(self.settings.host)
            if local != self.local:
                log.warning("local_mode" if local else "local_mode_ended", tokens=active)
            self.local = local
        return self.local

    @property
    def local_principal(self) -> Principal:
        return Principal(Role.ADMIN, self.settings.local_owner)

    async def resolve(self, token: str | None) -> Principal:
        """The principal for a presented token; 401 problem when it is missing or unknown."""
        if await self.is_local():
            return self.local_principal
        if not token:
            raise unauthorized("an API token is required: send `Authorization: Bearer <token>`")
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None or now - cached[0] > CACHE_SECONDS:
            principal = await asyncio.to_thread(self.tokens.resolve, token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            cached = self._cache[token] = (now, principal)
        if cached[1] is None:
            raise unauthorized("the API token is not valid (unknown or revoked)")
        return cached[1]

    async def request(self, conn: HTTPConnection) -> Principal:
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() != "bearer":
            raise unauthorized("use the Bearer scheme: `Authorization: Bearer <token>`")
        return await self.resolve(token.strip() or None)

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        """Browsers send Origin on WebSockets: accept our own host and the configured origins only."""
        origin = conn.headers.get("origin")
        if origin is None:
            return True  # not a browser: the token decides
        host = conn.headers.get("host", "")
        return origin.split("://", 1)[-1] == host or origin in self.settings.allowed_origins

    def limit(self, principal: Principal, client: str) -> None:
        """Per-token command rate limit (per client address in local mode); 429 when exceeded."""
        key = principal.token_id or f"ip:{client}"
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = self.settings.rate_limit
            bucket = self._buckets[key] = Bucket(rate, rate * 2, tokens=rate * 2)
        wait = bucket.take()
        if wait > 0:
            problem = Problem(429, "rate-limited", f"over {self.settings.rate_limit:g} commands per second")
            problem.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
            raise problem


def unauthorized(detail: str) -> Problem:
    problem = Problem(401, "unauthorized", detail)
    problem.headers["WWW-Authenticate"] = 'Bearer realm="progressd"'
    return problem


class AuthError(Exception):
    """The server cannot start with this auth configuration."""
