"""Debian packages the end-to-end tests drive (Chromium, tmux), installed with apt-get when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless: nothing phones home, nothing updates itself, no GPU or sandbox in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_package(binary: Path, package: str) -> Path:
    """The binary, after `apt-get install -y <package>` if it is missing; RuntimeError if that fails."""
    if binary.exists():
        return binary
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{binary} is missing and there is no apt-get to install {package} with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"`{' '.join(command)}` did not run: {exc}") from None
        if done.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed ({done.returncode}) while installing {package} for {binary}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
    if not binary.exists():
        raise RuntimeError(f"installed {package} but {binary} is still missing")
    return binary
