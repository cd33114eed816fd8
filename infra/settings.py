"""Settings read once from PROGRESSD_* environment variables into a frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from infra import pgurl


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; build it with `Settings.from_env()`."""

    data_dir: Path = Path("data")
    database_url: str | None = None
    nats_url: str | None = None
    nats_prefix: str = "progress"  # every NATS subject's first tokens; the JetStream stream is named after it
    host: str = "127.0.0.1"
    port: int = 8000
    local_owner: str = "local"
    pool_size: int = 5
    read_timeout: float = 2.0
    demo_step_seconds: float = 6.0
    ws_ping_interval: float = 20.0
    ws_idle_timeout: float = 60.0
    rate_limit: float = 200.0
    ws_per_token: int = 100
    allowed_origins: tuple[str, ...] = ()
    metrics_token: str | None = None  # a bearer token for /metrics and /readyz only (a Prometheus scraper)
    log_level: str = "info"
    log_format: str = "auto"
    snapshots: bool = True
    tail_bytes: int = 64 * 1024 * 1024  # memory the shared log tail may hold (its entries and frames)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read PROGRESSD_* variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"PROGRESSD_{name}")
            return value if value else None

        def number(name: str, default: Any, kind: Callable[[str], Any]) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"PROGRESSD_{name} must be {what}, not {raw!r}") from None

        defaults = cls()
        try:
            return cls(
                data_dir=Path(get("DATA_DIR") or defaults.data_dir),
                database_url=get("DATABASE_URL"),
                nats_url=get("NATS_URL"),
                nats_prefix=_subject_prefix(get("NATS_PREFIX") or defaults.nats_prefix),
                host=get("HOST") or defaults.host,
                port=number("PORT", defaults.port, int),
                local_owner=get("LOCAL_OWNER") or defaults.local_owner,
                pool_size=number("POOL_SIZE", defaults.pool_size, int),
                read_timeout=number("READ_TIMEOUT", defaults.read_timeout, float),
                demo_step_seconds=number("DEMO_STEP_SECONDS", defaults.demo_step_seconds, float),
                ws_ping_interval=number("WS_PING_INTERVAL", defaults.ws_ping_interval, float),
                ws_idle_timeout=number("WS_IDLE_TIMEOUT", defaults.ws_idle_timeout, float),
                rate_limit=number("RATE_LIMIT", defaults.rate_limit, float),
                ws_per_token=number("WS_PER_TOKEN", defaults.ws_per_token, int),
                allowed_origins=tuple(
                    o.strip() for o in (get("ALLOWED_ORIGINS") or "").split(",") if o.strip()
                ),
                metrics_token=_metrics_token(get("METRICS_TOKEN")),
                log_level=_choice("LOG_LEVEL", get("LOG_LEVEL") or defaults.log_level, LOG_LEVELS),
                log_format=_choice("LOG_FORMAT", get("LOG_FORMAT") or defaults.log_format, LOG_FORMATS),
                snapshots=_flag("SNAPSHOTS", get("SNAPSHOTS"), defaults.snapshots),
                tail_bytes=_positive("TAIL_BYTES", number("TAIL_BYTES", defaults.tail_bytes, int)),
            )
        except ValueError as exc:
            raise SettingsError(f"invalid PROGRESSD_* setting: {exc}") from None

    def with_overrides(self, *, host: str | None = None, port: int | None = None) -> Settings:
        """A copy with the command line's host and port, where given."""
        return replace(self, host=host or self.host, port=self.port if port is None else port)

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "progressd.sqlite3"

    def store_env(self) -> dict[str, str]:
        """The eventsourcing environment for the event store and the read models."""
        snapshots = {"IS_SNAPSHOTTING_ENABLED": "y" if self.snapshots else "n"}
        if self.database_url is None:
            return {
                **snapshots,
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
                # One event is one INSERT, without the library's BEGIN and COMMIT around it.
                "APPLICATION_RECORDER_TOPIC": "infra.sqliterecorder:OneStatementRecorder",
            }
        return {
            **snapshots,
            "PERSISTENCE_MODULE": "infra.pgrecorder:Factory",  # eventsourcing's, with fewer tries per call
            "POSTGRES_POOL_SIZE": str(self.pool_size),
            # Not the library's insert function: in eventsourcing 9.5.6 it skips the table lock, so writers in
            # several processes could commit notification ids out of order and a follower could skip one. Ours
            # takes the lock and inserts in one statement (one round trip instead of four).
            "APPLICATION_RECORDER_TOPIC": "infra.pgrecorder:LockedInsertRecorder",
            "POSTGRES_CONNECT_TIMEOUT": "1",
            **postgres_env(self.database_url),
        }


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.lower()
    if value not in choices:
        raise ValueError(f"PROGRESSD_{name} must be one of {', '.join(choices)}, not {raw!r}")
    return value


def _flag(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("1", "y", "yes", "on", "true"):
        return True
    if raw.lower() in ("0", "n", "no", "off", "false"):
        return False
    raise ValueError(f"PROGRESSD_{name} must be on or off, not {raw!r}")


def _metrics_token(raw: str | None) -> str | None:
    if raw is not None and not 16 <= len(raw.encode()) <= 512:
        raise ValueError("PROGRESSD_METRICS_TOKEN must be 16 to 512 bytes long (`openssl rand -hex 32`)")
    return raw


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"PROGRESSD_{name} must be a positive integer, not {value}")
    return value


def _subject_prefix(raw: str) -> str:
    """NATS subject tokens separated by dots (letters, digits, - and _): no wildcards, no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", raw):
        raise ValueError(f"PROGRESSD_NATS_PREFIX must be dot-separated letters, digits, - or _, not {raw!r}")
    return raw


def postgres_env(url: str) -> dict[str, str]:
    """Split a postgresql:// URL (TCP or Unix socket) into eventsourcing's POSTGRES_* keys."""
    try:
        return pgurl.postgres_env(url)
    except ValueError as exc:
        raise SettingsError(f"PROGRESSD_DATABASE_URL: {exc}") from None


class SettingsError(Exception):
    """A PROGRESSD_* variable holds a value that cannot be used."""
