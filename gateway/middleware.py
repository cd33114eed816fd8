"""ASGI middleware: checks of Host, Origin and content type, authentication of /api requests, and security
headers on every response."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Auth
from gateway.problems import EXPECTED_ERRORS, problem_response, to_problem

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class EdgeGuard:
    """Refuses, before routing, what a browser sends cross-site and, in local mode, foreign Host names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth: Auth = scope["app"].state.auth
            try:
                problem = await auth.edge(scope)
            except EXPECTED_ERRORS as exc:  # the token store down while local mode is looked up again
                problem = to_problem(exc)
            if problem is not None:
                await problem_response(problem, scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


OPERATOR_PATHS = ("/metrics", "/readyz")  # /healthz stays open: it says only that the process is up


class AuthMiddleware:
    """Resolves the caller of every /api request before its body is read, and lets only an operator read
    /metrics and /readyz once tokens exist; 401 (or 403) problem+json otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operator = scope["type"] == "http" and scope["path"] in OPERATOR_PATHS
        if scope["type"] == "http" and (operator or scope["path"].startswith("/api/")):
            request = Request(scope)
            auth: Auth = request.app.state.auth
            try:
                if operator:
                    await auth.operator(request)
                else:
                    scope.setdefault("state", {})["principal"] = await auth.request(request)
            except EXPECTED_ERRORS as exc:  # a Problem (401), or the token store down (503)
                # Answered here: an error left to the outermost handler is re-raised to the server, which
                # then drops the connection, body unread, and the client can see a reset, not the 503.
                await problem_response(to_problem(exc), scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers (and a CSP for the pages) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
