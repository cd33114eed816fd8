"""Reading request bodies: size limit, strict decoding, and the command headers."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from gateway.problems import Problem
from infra import commands
from infra.service import Pin

MAX_BODY = 64 * 1024
S = TypeVar("S", bound=msgspec.Struct)


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past 64 KiB without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise Problem(413, "body-too-large", f"request body is over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Problem(413, "body-too-large", f"request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode(request: Request, decoder: msgspec.json.Decoder[S]) -> S:
    """Decode a JSON body strictly; an empty body counts as `{}` for commands without arguments."""
    raw = await read_body(request)
    if not raw.strip():
        raw = b"{}"
    try:
        decoded = decoder.decode(raw)
    except RecursionError:  # msgspec skips an ignored field's value recursively: ~1,000 levels of nesting
        raise Problem(
            422, "invalid-field", "request body is nested too deeply", errors=[{"path": "$"}]
        ) from None
    commands.refuse_repeated_keys(raw)
    return decoded


def idempotency_key(request: Request) -> str | None:
    return commands.idempotency_key(request.headers)


def if_match(request: Request) -> Pin | None:
    return commands.if_match(request.headers)
