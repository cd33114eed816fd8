"""A real server with the progress pages for end-to-end tests: `python -m tests.e2e.page_server --port N`.

Until gateway/app.py registers PAGE_ROUTES itself, this adds them; once it does, it adds nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import httpx
import uvicorn

from gateway.app import create_app
from gateway.pages import PAGE_ROUTES
from infra.notifyconfig import NotifySettings
from infra.settings import Settings
from tests.e2e.conftest import ServerProcess


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env().with_overrides(port=args.port)
    app = create_app(settings, demo=args.demo, notify=NotifySettings.from_env(settings=settings))
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.router.routes.extend(PAGE_ROUTES)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on")


class PageServer(ServerProcess):
    """ServerProcess running this launcher: the API, the streams and the pages, killable and restartable."""

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "tests.e2e.page_server", "--port", str(self.port), *self.extra_args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                headers = {"Authorization": f"Bearer {self.metrics_token}"}  # needed once tokens exist
                if httpx.get(f"{self.url}/readyz", headers=headers, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-2000:]}")


if __name__ == "__main__":
    main()
