"""The progress pages: the task list at `/`, one task's progress box at `/tasks/{id}`, and their static files.

The pages are plain HTML that load one ES module; everything they show comes from the JSON API and the
WebSocket streams, so there is no server-side templating and no server text ever reaches `innerHTML`.
"""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

# No inline script or style anywhere in the pages, so the policy can be this strict.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Always revalidate (by ETag): a page must never run yesterday's script against today's API.
    "Cache-Control": "no-cache",
}


class RevalidatedFiles(StaticFiles):
    """Static files that browsers revalidate on every load, with the pages' security headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


def _page(name: str) -> Response:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def task_list(request: Request) -> Response:
    return _page("index.html")


async def task_page(request: Request) -> Response:
    try:
        UUID(request.path_params["task_id"])
    except ValueError:
        raise HTTPException(404, "no such task") from None
    # Whether the task exists (and is the caller's) is the stream's answer: the page shows "not found".
    return _page("task.html")


async def service_worker(request: Request) -> Response:
    # Served from the root so that its scope is every page; revalidated like the pages' scripts.
    return FileResponse(STATIC / "sw.js", media_type="text/javascript; charset=utf-8", headers=PAGE_HEADERS)


PAGE_ROUTES: list[BaseRoute] = [
    Route("/", task_list, methods=["GET", "HEAD"]),
    Route("/sw.js", service_worker, methods=["GET", "HEAD"]),
    Route("/tasks/{task_id}", task_page, methods=["GET", "HEAD"]),
    Mount("/static", app=RevalidatedFiles(directory=STATIC), name="static"),
]
