"""Notification storage: deliveries (the outbox's state), preferences, push subscriptions and the VAPID key.

Delivery state lives here and not in the `notification_outbox` read model, so that rebuilding or verifying the
read model never forgets (or re-sends) what was delivered. A delivery row is self-contained: the worker sends
from it alone. Rows move `pending → sending → sent`, back to `pending` with a later `next_at` after a failure,
and to `dead` when retries run out or the failure is permanent; `skipped` and `expired` record why a row was
never sent. `sending` carries a lease: a row whose worker died is taken again once the lease has run out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from py_vapid import Vapid  # type: ignore[import-untyped]

from domain.progress import iso
from infra.notifyconfig import NotifySettings, Preferences, decide
from infra.settings import Settings
from infra.views import ddl, open_datastore, transaction
from projections.model import Row
from projections.notifications import NOTIFICATION_OUTBOX, Stall, stall_rows
from projections.wording import parse_iso

BATCH = 500
MAX_SUBSCRIPTIONS = 20  # per owner: each one is a request per notification
_PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


def _schema(dialect: str) -> list[str]:
    pg = dialect == "postgres"
    ident = "id BIGSERIAL PRIMARY KEY" if pg else "id INTEGER PRIMARY KEY AUTOINCREMENT"
    big = "BIGINT" if pg else "INTEGER"
    real = "DOUBLE PRECISION" if pg else "REAL"
    return [
        *ddl(NOTIFICATION_OUTBOX, dialect),
        f"""CREATE TABLE IF NOT EXISTS notification_deliveries (
            {ident}, dedupe_key TEXT NOT NULL UNIQUE, position {big} NOT NULL, owner TEXT NOT NULL,
            task_id TEXT NOT NULL, seq {big} NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL,
            title TEXT NOT NULL, text TEXT NOT NULL, detail TEXT NOT NULL, step {big}, at TEXT NOT NULL,
            state TEXT NOT NULL, attempts {big} NOT NULL, next_at {real} NOT NULL, lease_until {real},
            claim TEXT, last_error TEXT, done_targets TEXT NOT NULL, created_at TEXT NOT NULL,
            sent_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS notification_deliveries_due_idx "
        "ON notification_deliveries (state, next_at)",
        "CREATE INDEX IF NOT EXISTS notification_deliveries_feed_idx "
        "ON notification_deliveries (owner, channel, id)",
        "CREATE INDEX IF NOT EXISTS notification_deliveries_task_idx "
        "ON notification_deliveries (task_id, id)",
        f"CREATE TABLE IF NOT EXISTS notification_cursor (name TEXT PRIMARY KEY, position {big} NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS notification_stalls (task_id TEXT NOT NULL, step {big} NOT NULL,
            attempt {big} NOT NULL, at TEXT NOT NULL, PRIMARY KEY (task_id, step, attempt))""",
        """CREATE TABLE IF NOT EXISTS notification_prefs (owner TEXT PRIMARY KEY, prefs TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS push_subscriptions (id TEXT PRIMARY KEY, owner TEXT NOT NULL,
            endpoint TEXT NOT NULL, p256dh TEXT NOT NULL, auth TEXT NOT NULL, created_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS push_subscriptions_owner_idx ON push_subscriptions (owner)",
        """CREATE TABLE IF NOT EXISTS vapid_keys (id TEXT PRIMARY KEY, private_pem TEXT NOT NULL,
            public_key TEXT NOT NULL, created_at TEXT NOT NULL)""",
    ]


class Tx:
    """One transaction: statements with :named parameters on either backend."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._c = cursor
        self._dialect = dialect

    def _sql(self, sql: str) -> Any:
        return SQL(_PARAM.sub(r"%(\1)s", sql)) if self._dialect == "postgres" else sql

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        self._c.execute(self._sql(sql), dict(params or {}))
        raw: Any = getattr(self._c, "sqlite_cursor", self._c)
        return int(raw.rowcount)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        self._c.execute(self._sql(sql), dict(params or {}))
        return [dict(r) for r in self._c.fetchall()]


class Db:
    """A small connection pool on the configured backend, for tables that are not read models."""

    def __init__(self, settings: Settings, name: str, pool_size: int = 4) -> None:
        self.datastore = open_datastore(settings, name, pool_size=pool_size)
        self.dialect = "postgres" if isinstance(self.datastore, PostgresDatastore) else "sqlite"

    @contextmanager
    def tx(self, *, commit: bool = True) -> Iterator[Tx]:
        with transaction(self.datastore, commit=commit) as c:
            yield Tx(c, self.dialect)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        with self.tx() as t:
            return t.execute(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        with self.tx(commit=False) as t:
            return t.query(sql, params)

    def close(self) -> None:
        self.datastore.close()


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:16]


def _now_iso(now: float) -> str:
    return iso(datetime.fromtimestamp(now, UTC)) or ""


_DELIVERY_COLUMNS = (
    "dedupe_key, position, owner, task_id, seq, kind, channel, title, text, detail, step, at, state, "
    "attempts, next_at, lease_until, claim, last_error, done_targets, created_at, sent_at"
)
_INSERT_DELIVERY = (
    f"INSERT INTO notification_deliveries ({_DELIVERY_COLUMNS}) VALUES (:dedupe_key, :position, :owner, "
    ":task_id, :seq, :kind, :channel, :title, :text, :detail, :step, :at, :state, 0, :next_at, NULL, NULL, "
    ":last_error, '[]', :created_at, :sent_at) ON CONFLICT (dedupe_key) DO NOTHING"
)
_DUE = "(state = 'pending' AND next_at <= :now) OR (state = 'sending' AND lease_until <= :now)"


class NotifyStore:
    """The notification tables, in the same database as the event log. Blocking: call it from a thread."""

    def __init__(self, settings: Settings, config: NotifySettings) -> None:
        self.config = config
        self.db = Db(settings, "notify")
        for statement in _schema(self.db.dialect):
            self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    # ---- preferences ------------------------------------------------------------------------------------

    def preferences(self, owner: str) -> Preferences:
        with self.db.tx(commit=False) as t:
            return self._preferences(t, owner)

    def _preferences(self, t: Tx, owner: str) -> Preferences:
        rows = t.query("SELECT prefs FROM notification_prefs WHERE owner = :owner", {"owner": owner})
        data = json.loads(rows[0]["prefs"]) if rows else {}
        return Preferences.from_json(data, self.config.email_min_minutes)

    def save_preferences(self, owner: str, prefs: Preferences, now: float) -> None:
        self.db.execute(
            "INSERT INTO notification_prefs (owner, prefs, updated_at) VALUES (:owner, :prefs, :at) "
            "ON CONFLICT (owner) DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at",
            {"owner": owner, "prefs": json.dumps(prefs.to_json()), "at": _now_iso(now)},
        )

    # ---- push subscriptions and the VAPID key -----------------------------------------------------------

    def add_subscription(self, owner: str, endpoint: str, p256dh: str, auth: str, now: float) -> Row:
        """Store a browser's PushSubscription (the same endpoint again replaces it, for whoever sends it)."""
        sub_id = subscription_id(endpoint)
        with self.db.tx() as t:
            count = t.query(
                "SELECT COUNT(*) AS n FROM push_subscriptions WHERE owner = :owner AND id <> :id",
                {"owner": owner, "id": sub_id},
            )[0]["n"]
            if int(count) >= MAX_SUBSCRIPTIONS:
                raise TooManySubscriptions(f"an owner may keep {MAX_SUBSCRIPTIONS} push subscriptions")
            t.execute(
                "INSERT INTO push_subscriptions (id, owner, endpoint, p256dh, auth, created_at) "
                "VALUES (:id, :owner, :endpoint, :p256dh, :auth, :at) ON CONFLICT (id) DO UPDATE SET "
                "owner = excluded.owner, p256dh = excluded.p256dh, auth = excluded.auth",
                {
                    "id": sub_id,
                    "owner": owner,
                    "endpoint": endpoint,
                    "p256dh": p256dh,
                    "auth": auth,
                    "at": _now_iso(now),
                },
            )
        return {"id": sub_id, "endpoint": endpoint, "created_at": _now_iso(now)}

    def subscriptions(self, owner: str) -> list[Row]:
        return self.db.query(
            "SELECT id, endpoint, p256dh, auth, created_at FROM push_subscriptions WHERE owner = :owner "
            "ORDER BY created_at, id",
            {"owner": owner},
        )

    def delete_subscription(self, owner: str | None, sub_id: str) -> bool:
        if owner is None:
            return self.db.execute("DELETE FROM push_subscriptions WHERE id = :id", {"id": sub_id}) > 0
        return (
            self.db.execute(
                "DELETE FROM push_subscriptions WHERE id = :id AND owner = :owner",
                {"id": sub_id, "owner": owner},
            )
            > 0
        )

    def _push_targets(self, t: Tx, owner: str, prefs: Preferences) -> int:
        subs = t.query("SELECT COUNT(*) AS n FROM push_subscriptions WHERE owner = :o", {"o": owner})
        ntfy = 1 if prefs.ntfy_topic and self.config.ntfy_url else 0
        return int(subs[0]["n"]) + ntfy

    def vapid(self, now: float) -> tuple[str, str]:
        """(private key PEM, public key as base64url): generated and stored on first use, then shared."""
        rows = self.db.query("SELECT private_pem, public_key FROM vapid_keys WHERE id = 'default'")
        if not rows:
            key = Vapid()
            key.generate_keys()
            raw = key.public_key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            self.db.execute(
                "INSERT INTO vapid_keys (id, private_pem, public_key, created_at) VALUES "
                "('default', :pem, :pub, :at) ON CONFLICT (id) DO NOTHING",
                {
                    "pem": key.private_pem().decode(),
                    "pub": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
                    "at": _now_iso(now),
                },
            )
            rows = self.db.query("SELECT private_pem, public_key FROM vapid_keys WHERE id = 'default'")
        return str(rows[0]["private_pem"]), str(rows[0]["public_key"])

    # ---- from the outbox to deliveries ------------------------------------------------------------------

    def materialise(self, now: float, limit: int = BATCH) -> int:
        """Turn new outbox rows into deliveries, deciding each by the owner's preferences; returns how many.

        The cursor and the new rows commit together, and inserts ignore keys already there, so a crash or a
        second worker neither loses a row nor makes one twice.
        """
        with self.db.tx() as t:
            found = t.query("SELECT position FROM notification_cursor WHERE name = 'outbox'")
            cursor = int(found[0]["position"]) if found else 0
            rows = t.query(
                "SELECT * FROM notification_outbox WHERE position > :cursor ORDER BY position, dedupe_key "
                "LIMIT :limit",
                {"cursor": cursor, "limit": limit},
            )
            if not rows:
                return 0
            if len(rows) == limit and rows[0]["position"] != rows[-1]["position"]:
                # Never split one event's rows across batches: the cursor moves by whole positions.
                last = rows[-1]["position"]
                rows = [r for r in rows if r["position"] != last]
            self._insert(t, rows, now)
            high = max(int(r["position"]) for r in rows)
            t.execute(
                "INSERT INTO notification_cursor (name, position) VALUES ('outbox', :p) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position "
                "WHERE notification_cursor.position < excluded.position",
                {"p": high},
            )
            return len(rows)

    def _insert(self, t: Tx, rows: Sequence[Row], now: float) -> None:
        prefs: dict[str, Preferences] = {}
        targets: dict[str, int] = {}
        for row in rows:
            owner = str(row["owner"])
            if owner not in prefs:
                prefs[owner] = self._preferences(t, owner)
                targets[owner] = self._push_targets(t, owner, prefs[owner])
            at = parse_iso(str(row["at"]))
            age = now - at.timestamp() if at else 0.0
            decision = decide(row, prefs[owner], self.config, push_targets=targets[owner], age_seconds=age)
            t.execute(
                _INSERT_DELIVERY,
                {
                    **{k: row[k] for k in ("dedupe_key", "position", "owner", "task_id", "seq", "kind")},
                    **{k: row[k] for k in ("channel", "title", "text", "detail", "step", "at")},
                    "state": decision.state,
                    "next_at": now,
                    "last_error": decision.reason,
                    "created_at": _now_iso(now),
                    "sent_at": _now_iso(now) if decision.state == "sent" else None,
                },
            )

    def add_stall(self, view: Mapping[str, Any], stall: Stall, now: float) -> bool:
        """Record a stall once per step attempt, with its deliveries; False if it was already reported."""
        with self.db.tx() as t:
            marked = t.execute(
                "INSERT INTO notification_stalls (task_id, step, attempt, at) VALUES (:t, :s, :a, :at) "
                "ON CONFLICT (task_id, step, attempt) DO NOTHING",
                {"t": str(view["task_id"]), "s": stall.step, "a": stall.attempt, "at": _now_iso(now)},
            )
            if marked != 1:
                return False
            self._insert(t, stall_rows(view, stall, int(view.get("position") or 0), _now_iso(now)), now)
            return True

    def running_views(self, limit: int = 2_000) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT view FROM task_view WHERE status = 'running' ORDER BY updated_at DESC LIMIT :n",
            {"n": limit},
        )
        return [json.loads(r["view"]) for r in rows]

    def step_stats(self) -> list[Row]:
        return self.db.query("SELECT step_key, complexity, count, p90_ms FROM step_stats")

    # ---- the delivery worker's side ---------------------------------------------------------------------

    def due(self, now: float, limit: int = 100) -> list[Row]:
        return self.db.query(
            f"SELECT * FROM notification_deliveries WHERE {_DUE} ORDER BY id LIMIT :limit",
            {"now": now, "limit": limit},
        )

    def depth(self) -> int:
        """Notifications waiting to be sent (pending or being sent): the outbox depth operators watch."""
        rows = self.db.query(
            "SELECT COUNT(*) AS n FROM notification_deliveries WHERE state IN ('pending', 'sending')"
        )
        return int(rows[0]["n"]) if rows else 0

    def next_due(self) -> float | None:
        """When the earliest pending row falls due (or a lease runs out), for the worker's sleep."""
        rows = self.db.query(
            "SELECT MIN(CASE WHEN state = 'pending' THEN next_at ELSE lease_until END) AS t "
            "FROM notification_deliveries WHERE state IN ('pending', 'sending')"
        )
        value = rows[0]["t"] if rows else None
        return float(value) if value is not None else None

    def claim(self, key: str, now: float, token: str) -> bool:
        """Take a due row for sending, with a lease; False if another worker has it or it is done."""
        changed = self.db.execute(
            "UPDATE notification_deliveries SET state = 'sending', attempts = attempts + 1, "
            f"lease_until = :lease, claim = :token WHERE dedupe_key = :key AND ({_DUE})",
            {"key": key, "now": now, "lease": now + self.config.lease, "token": token},
        )
        return changed == 1

    def mark_sent(self, key: str, token: str, done: Sequence[str], now: float) -> bool:
        return (
            self.db.execute(
                "UPDATE notification_deliveries SET state = 'sent', sent_at = :at, lease_until = NULL, "
                "last_error = NULL, done_targets = :done WHERE dedupe_key = :key AND claim = :token",
                {"key": key, "token": token, "at": _now_iso(now), "done": json.dumps(sorted(done))},
            )
            == 1
        )

    def mark_failed(
        self, key: str, token: str, error: str, done: Sequence[str], *, retry_at: float | None, state: str
    ) -> bool:
        """Back to pending for a retry at `retry_at`, or to `dead` / `skipped` for good."""
        return (
            self.db.execute(
                "UPDATE notification_deliveries SET state = :state, next_at = COALESCE(:retry, next_at), "
                "lease_until = NULL, last_error = :error, done_targets = :done "
                "WHERE dedupe_key = :key AND claim = :token",
                {
                    "key": key,
                    "token": token,
                    "state": state,
                    "retry": retry_at,
                    "error": error[:2000],
                    "done": json.dumps(sorted(done)),
                },
            )
            == 1
        )

    # ---- queries for the API ----------------------------------------------------------------------------

    def feed(self, owner: str | None, after: int, limit: int) -> list[Row]:
        """The browser channel: notifications delivered to the page's feed, oldest first after a cursor."""
        where = "channel = 'browser' AND state = 'sent' AND id > :after"
        params: dict[str, Any] = {"after": after, "limit": limit}
        if owner is not None:
            where += " AND owner = :owner"
            params["owner"] = owner
        return self.db.query(
            "SELECT id, dedupe_key, position, owner, task_id, seq, kind, title, text, detail, step, at "
            f"FROM notification_deliveries WHERE {where} ORDER BY id LIMIT :limit",
            params,
        )

    def for_task(self, task_id: str) -> list[Row]:
        """A task's deliveries on every channel, times in ISO 8601 (`next_at`: when it is tried next)."""
        rows = self.db.query(
            "SELECT id, dedupe_key, kind, channel, text, detail, step, at, state, attempts, last_error, "
            "sent_at, next_at FROM notification_deliveries WHERE task_id = :t ORDER BY id",
            {"t": task_id},
        )
        return [{**row, "next_at": _now_iso(float(row["next_at"]))} for row in rows]

    def deliveries(self) -> list[Row]:
        """Every delivery row, for tests and the operator."""
        return self.db.query("SELECT * FROM notification_deliveries ORDER BY id")


class TooManySubscriptions(Exception):
    """An owner already keeps the most push subscriptions allowed."""
