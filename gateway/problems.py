"""problem+json HTTP responses; the error → status mapping itself lives in infra.problems."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from infra.problems import EXPECTED_ERRORS, Problem, to_problem

__all__ = ["EXPECTED_ERRORS", "Problem", "handle_exception", "problem_response", "to_problem"]

_encode = msgspec.json.Encoder().encode


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        _encode(problem.body(instance)),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=problem.headers,
    )


async def handle_exception(request: Request, exc: Exception) -> Response:
    problem = to_problem(exc)
    if problem.status == 500:
        # Starlette re-raises an unexpected error after this answer and uvicorn then closes the connection:
        # say so, or a keep-alive client finds it dropped under its next request.
        problem.headers["Connection"] = "close"
    return problem_response(problem, request.url.path)
