"""Where the fleet service keeps what it received: verified records, quarantine, hub status.

`Store` is the interface; `SQLiteStore` (HOME/fleet.db, shared with the inventory,
its own tables prefixed fleet_) is the embedded default. A PostgreSQL backend
implements the same methods: the SQL is plain (INSERT ... ON CONFLICT DO NOTHING,
one transaction per batch) and records are kept as the exact bytes received, so a
record can be verified again years later.

Idempotence: a record is stored once per (hub id, seq). `add_batch` reports per
record whether it was new, already held with the same payload (a resend: ack it
again) or held with a *different* payload (a replay or reused sequence number:
the caller quarantines it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

NEW = "new"
DUPLICATE = "duplicate"
CONFLICT = "conflict"


@dataclass
class Reading:
    """One verified record as stored."""

    hub_id: str
    seq: int
    kind: str
    hub_time: int
    topic: str
    record: bytes
    payload: bytes
    fields: dict
    received_at: float
    status: str = "verified"


@dataclass
class Quarantined:
    hub_id: str | None
    seq: int | None
    topic: str
    reason: str
    detail: str
    record: bytes
    received_at: float = field(default_factory=time.time)
    id: int | None = None


class Store(ABC):
    """Storage of a fleet service; one writer (the ingest loop), any number of readers."""

    @abstractmethod
    def add_batch(self, readings: list[Reading], quarantine: list[Quarantined]) -> list[str]:
        """Store verified readings and quarantined records in one durable transaction.

        Returns, per reading, NEW, DUPLICATE (same hub, seq and payload already held)
        or CONFLICT (same hub and seq, other payload: not stored; the caller
        quarantines it in a later batch)."""

    @abstractmethod
    def readings(self, hub_id: str | None = None, *, kinds: tuple[str, ...] | None = None,
                 limit: int | None = None) -> list[Reading]:
        """Stored readings, by hub then seq."""

    @abstractmethod
    def quarantined(self, hub_id: str | None = None) -> list[Quarantined]: ...

    @abstractmethod
    def set_status(self, hub_id: str, status: dict, received_at: float) -> None: ...

    @abstractmethod
    def statuses(self) -> dict[str, dict]: ...

    @abstractmethod
    def count(self, hub_id: str | None = None) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional for backends
        pass


SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_readings (
    hub_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hub_time INTEGER NOT NULL,
    topic TEXT NOT NULL,
    record BLOB NOT NULL,
    payload BLOB NOT NULL,
    fields TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'verified',
    received_at REAL NOT NULL,
    PRIMARY KEY (hub_id, seq)
);
CREATE TABLE IF NOT EXISTS fleet_quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hub_id TEXT,
    seq INTEGER,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    record BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_quarantine_hub ON fleet_quarantine(hub_id);
CREATE TABLE IF NOT EXISTS fleet_hub_status (
    hub_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""


def fields_json(fields: dict) -> str:
    """The verified payload fields as JSON (decimals as strings, addresses as hex)."""
    from decimal import Decimal

    def conv(v):
        if isinstance(v, Decimal):
            return {"decimal": str(v)}
        if isinstance(v, bytes):
            return {"bytes": v.hex()}
        raise TypeError(f"cannot store {type(v).__name__} in JSON")

    return json.dumps(fields, default=conv, sort_keys=True, separators=(",", ":"))


def fields_from_json(text: str) -> dict:
    from decimal import Decimal

    def hook(d):
        if set(d) == {"decimal"}:
            return Decimal(d["decimal"])
        if set(d) == {"bytes"}:
            return bytes.fromhex(d["bytes"])
        return d

    return json.loads(text, object_hook=hook)


class SQLiteStore(Store):
    """SQLite in WAL mode; a batch is one transaction committed with synchronous=FULL,
    so an acknowledged record survives a power cut of the fleet host."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=30000")
        self._con.executescript(SCHEMA)

    def add_batch(self, readings, quarantine):
        out = []
        with self._lock:
            c = self._con
            c.execute("BEGIN IMMEDIATE")
            try:
                for r in readings:
                    cur = c.execute(
                        "INSERT INTO fleet_readings (hub_id, seq, kind, hub_time, topic, record, payload, fields,"
                        " status, received_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (hub_id, seq) DO NOTHING",
                        (r.hub_id, r.seq, r.kind, r.hub_time, r.topic, r.record, r.payload,
                         fields_json(r.fields), r.status, r.received_at))
                    if cur.rowcount == 1:
                        out.append(NEW)
                        continue
                    held = c.execute("SELECT payload FROM fleet_readings WHERE hub_id=? AND seq=?",
                                     (r.hub_id, r.seq)).fetchone()
                    out.append(DUPLICATE if bytes(held[0]) == r.payload else CONFLICT)
                c.executemany(
                    "INSERT INTO fleet_quarantine (hub_id, seq, topic, reason, detail, record, received_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    [(q.hub_id, q.seq, q.topic, q.reason, q.detail, q.record, q.received_at) for q in quarantine])
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return out

    def readings(self, hub_id=None, *, kinds=None, limit=None):
        q = "SELECT hub_id, seq, kind, hub_time, topic, record, payload, fields, received_at, status FROM fleet_readings"
        where, args = [], []
        if hub_id:
            where.append("hub_id=?")
            args.append(hub_id)
        if kinds:
            where.append(f"kind IN ({','.join('?' for _ in kinds)})")
            args.extend(kinds)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY hub_id, seq"
        if limit:
            q += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._con.execute(q, args).fetchall()
        return [Reading(h, s, k, t, tp, bytes(rec), bytes(p), fields_from_json(f), ra, st)
                for h, s, k, t, tp, rec, p, f, ra, st in rows]

    def quarantined(self, hub_id=None):
        q = "SELECT id, hub_id, seq, topic, reason, detail, record, received_at FROM fleet_quarantine"
        args = ()
        if hub_id:
            q += " WHERE hub_id=?"
            args = (hub_id,)
        with self._lock:
            rows = self._con.execute(q + " ORDER BY id", args).fetchall()
        return [Quarantined(h, s, t, r, d, bytes(rec), ra, i) for i, h, s, t, r, d, rec, ra in rows]

    def set_status(self, hub_id, status, received_at):
        with self._lock:
            self._con.execute("INSERT INTO fleet_hub_status (hub_id, status, received_at) VALUES (?,?,?) "
                              "ON CONFLICT (hub_id) DO UPDATE SET status=excluded.status, "
                              "received_at=excluded.received_at", (hub_id, json.dumps(status), received_at))

    def statuses(self):
        with self._lock:
            rows = self._con.execute("SELECT hub_id, status, received_at FROM fleet_hub_status").fetchall()
        return {h: {**json.loads(s), "received_at": ra} for h, s, ra in rows}

    def count(self, hub_id=None):
        with self._lock:
            if hub_id:
                return self._con.execute("SELECT COUNT(*) FROM fleet_readings WHERE hub_id=?", (hub_id,)).fetchone()[0]
            return self._con.execute("SELECT COUNT(*) FROM fleet_readings").fetchone()[0]

    def close(self):
        with self._lock:
            self._con.close()


def open_store(db_path: str | Path) -> Store:
    return SQLiteStore(db_path)
