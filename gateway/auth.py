"""Who is calling: bearer tokens (or the logged local mode), roles, and per-token rate limits."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import Scope

from gateway.problems import Problem
from infra.settings import Settings
from infra.tokens import Principal, Role, TokenStore, hash_token

log = structlog.get_logger(__name__)
CACHE_SECONDS = 5.0  # a revoked token stops working within this long
MAX_TOKEN_BYTES = 512  # ours are 46; anything longer is refused before it is hashed or looked up
CACHE_ENTRIES = 10_000
CACHE_BYTES = 4 * 1024 * 1024
ENTRY_OVERHEAD = 400  # bytes of a cache entry besides its strings: the key, tuple, Principal and dict slot


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_host(header: str) -> bool:
    """A Host header naming this machine: localhost, 127.0.0.0/8 or [::1], with or without a port."""
    try:
        name = urlsplit(f"//{header}").hostname
    except ValueError:
        return False
    if not name:  # is_loopback takes "" (the server's own bind address) as loopback; a Host must name one
        return False
    return is_loopback(name)


LOOPBACK_ONLY = "in local mode this server answers only to localhost, 127.0.0.1 or [::1]"
JSON_TYPES = ("application/json",)
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


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


class Buckets:
    """Rate-limit buckets by token id (or client address in local mode), at most `entries` of them: past that,
    the fullest quarter is dropped (a full bucket holds nothing a new one would not), so a flood of client
    addresses cannot grow the table, and a client that has spent its burst stays limited."""

    def __init__(self, rate: float, entries: int = CACHE_ENTRIES) -> None:
        self.rate = rate
        self.entries = entries
        self._buckets: dict[str, Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """0 if `key` may act now, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.entries:
                self._shed()
            bucket = self._buckets[key] = Bucket(self.rate, self.rate * 2, tokens=self.rate * 2)
        return bucket.take()

    def _shed(self) -> None:
        # Keep the three quarters nearest to empty: a fuller bucket loses least by starting afresh.
        now = time.monotonic()
        level = {k: b.tokens + (now - b.stamp) * b.rate for k, b in self._buckets.items()}
        keep = sorted(level, key=level.__getitem__)[: self.entries * 3 // 4]
        self._buckets = {k: self._buckets[k] for k in keep}


class TokenCache:
    """Principals of valid tokens by the token's SHA-256, for CACHE_SECONDS; bounded in entries and bytes.

    Only hits are kept: an unknown token leaves nothing behind, whatever its size or number.
    """

    def __init__(self, entries: int = CACHE_ENTRIES, budget: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.budget = budget
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, Principal, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float, max_age: float) -> Principal | None:
        item = self._items.get(key)
        if item is None or now - item[0] > max_age:
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, principal: Principal, now: float) -> None:
        self.drop(key)
        size = ENTRY_OVERHEAD + len(key) + len(principal.owner or "") + len(principal.token_id or "")
        while self._items and (len(self._items) >= self.entries or self.bytes + size > self.budget):
            self.bytes -= self._items.popitem(last=False)[1][2]  # least recently used first
        self._items[key] = (now, principal, size)
        self.bytes += size

    def drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[2]


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
        self._cache = TokenCache()
        self._buckets = Buckets(settings.rate_limit)
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
        """The principal for a presented token; 401 problem when it is missing, over-long or unknown."""
        if await self.is_local():
            return self.local_principal
        if not token:
            raise unauthorized("an API token is required: send `Authorization: Bearer <token>`")
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise unauthorized(f"the API token is not valid (over {MAX_TOKEN_BYTES} bytes)")
        return await self.principal_for(hash_token(token))

    async def principal_for(self, key: str, max_age: float | None = None) -> Principal:
        """The principal of a token by its hash: from the cache when checked within `max_age` seconds."""
        now = time.monotonic()
        principal = self._cache.get(key, now, CACHE_SECONDS if max_age is None else max_age)
        if principal is None:
            principal = await asyncio.to_thread(self.tokens.resolve_hash, key)
            if principal is None:
                self._cache.drop(key)
                raise unauthorized("the API token is not valid (unknown or revoked)")
            self._cache.put(key, principal, now)
        if principal.expired(datetime.now(UTC)):
            self._cache.drop(key)
            raise unauthorized("the API token has expired")
        return principal

    def bearer(self, conn: HTTPConnection) -> str | None:
        """The token of an `Authorization: Bearer` header, None without one; 401 for another scheme."""
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() != "bearer":
            raise unauthorized("use the Bearer scheme: `Authorization: Bearer <token>`")
        return token.strip() or None

    async def request(self, conn: HTTPConnection) -> Principal:
        return await self.resolve(self.bearer(conn))

    async def operator(self, conn: HTTPConnection) -> None:
        """/metrics, /readyz: open in local mode; with tokens, PROGRESSD_METRICS_TOKEN or an admin token."""
        if await self.is_local():
            return
        token = self.bearer(conn)
        wanted = self.settings.metrics_token
        if token and wanted and hmac.compare_digest(token.encode(), wanted.encode()):
            return
        if (await self.resolve(token)).role is not Role.ADMIN:
            raise Problem(403, "forbidden", "an admin token or PROGRESSD_METRICS_TOKEN is required here")

    def origin_allowed(self, headers: Headers, *, navigation: bool = False) -> bool:
        """Whether a browser sent this from our own origin or a configured one. Without `Origin` (curl, the
        SDK, scripts) it is not a browser's cross-site request, unless `Sec-Fetch-Site` says it is; following
        a link from another site (`navigation`) is fine."""
        origin = headers.get("origin")
        if origin is not None:
            host = headers.get("host", "")
            return (
                origin.split("://", 1)[-1].lower() == host.lower() or origin in self.settings.allowed_origins
            )
        return navigation or headers.get("sec-fetch-site") != "cross-site"

    async def host_allowed(self, headers: Headers) -> bool:
        """In local mode only loopback names are served: a foreign name is a DNS-rebinding page's request."""
        host = headers.get("host")
        return host is None or loopback_host(host) or not await self.is_local()

    async def edge(self, scope: Scope) -> Problem | None:
        """Why an HTTP request is refused before anything else: a foreign Host in local mode (421), a
        browser's cross-site request (403), or a browser's body that is not JSON (415)."""
        headers = Headers(scope=scope)
        if not await self.host_allowed(headers):
            return Problem(421, "misdirected-request", LOOPBACK_ONLY)
        method = scope.get("method", "GET")
        navigation = method in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
        if not self.origin_allowed(headers, navigation=navigation):
            return Problem(403, "cross-origin", "a cross-site request: see PROGRESSD_ALLOWED_ORIGINS")
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        from_browser = "origin" in headers  # a JSON body under another type only from curl, the SDK, scripts
        if (
            method in UNSAFE_METHODS
            and has_body
            and from_browser
            and not is_json(headers.get("content-type", ""))
        ):
            return Problem(415, "unsupported-media-type", "a browser must send its body as application/json")
        return None

    def limit(self, principal: Principal, client: str) -> None:
        """Per-token command rate limit (per client address in local mode); 429 when exceeded."""
        wait = self._buckets.take(principal.token_id or f"ip:{client}")
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
