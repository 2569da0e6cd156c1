"""Where the fleet service keeps what it received: verified records, quarantine, hub status.

`Store` is the interface; `SQLiteStore` (HOME/fleet.db, shared with the inventory,
its own tables prefixed fleet_) is the embedded default. A PostgreSQL backend
implements the same methods: the SQL is plain (INSERT ... ON CONFLICT DO NOTHING,
one transaction per batch) and records are kept as the exact bytes received, so a
record can be verified again years later.

Idempotence: a record is stored once per (hub id, certificate serial, seq). The
certificate is part of the identity because a hub that is wiped and provisioned
again (a new key and certificate under the same factory serial) starts its
journal at seq 1 again: each certificate is one *life* of the hub with its own
sequence numbers. `add_batch` reports per record whether it was new, already
held with the same payload (a resend: ack it again) or held with a *different*
payload (a replay or reused sequence number: the caller quarantines it).

Databases written before the certificate was part of the key (fleet_readings
without cert_serial) are migrated when opened: each stored record is matched to
the certificate of the inventory (same file) that verifies it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("hubctl.fleet")

NEW = "new"
DUPLICATE = "duplicate"
CONFLICT = "conflict"


@dataclass
class Reading:
    """One verified record as stored; cert_serial (lower-case hex, as the inventory
    writes it) is the certificate it was verified with: the hub's life."""

    hub_id: str
    cert_serial: str
    seq: int
    kind: str
    hub_time: int
    topic: str
    record: bytes
    payload: bytes
    fields: dict
    received_at: float
    status: str = "verified"
    fields_text: str | None = field(default=None, repr=False, compare=False)  # fields_json(fields), if made


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

        Returns, per reading, NEW, DUPLICATE (same hub, certificate, seq and
        payload already held) or CONFLICT (same hub, certificate and seq, other
        payload: not stored; the caller quarantines it in a later batch)."""

    @abstractmethod
    def readings(self, hub_id: str | None = None, *, kinds: tuple[str, ...] | None = None,
                 limit: int | None = None) -> list[Reading]:
        """Stored readings, by hub, then life (the certificate first seen first), then seq."""

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


READINGS_TABLE = """
CREATE TABLE IF NOT EXISTS fleet_readings (
    hub_id TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hub_time INTEGER NOT NULL,
    topic TEXT NOT NULL,
    record BLOB NOT NULL,
    payload BLOB NOT NULL,
    fields TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'verified',
    received_at REAL NOT NULL,
    PRIMARY KEY (hub_id, cert_serial, seq)
)"""
SCHEMA = READINGS_TABLE + """;
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


UNKNOWN_LIFE = "unknown"  # not hex: never a certificate serial


def _old_schema(con: sqlite3.Connection) -> bool:
    """fleet_readings exists without cert_serial (keyed by hub and seq alone)."""
    cols = [row[1] for row in con.execute("PRAGMA table_info(fleet_readings)")]
    return bool(cols) and "cert_serial" not in cols


def _life_of(record: bytes, certs: list) -> str:
    """Serial of the first certificate that verifies the record, else UNKNOWN_LIFE."""
    from .. import records as R

    found = R.first_verifying(record, certs)
    return UNKNOWN_LIFE if found is None else R.certificate_serial(found[0])


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
        if _old_schema(self._con):
            self._migrate_to_lives()
        self._con.executescript(SCHEMA)

    def _migrate_to_lives(self) -> None:
        """fleet_readings keyed by (hub_id, seq) becomes keyed by (hub_id, cert_serial, seq).

        Each stored record gets the serial of the hub's certificate (from the
        inventory in the same file) that verifies it, not simply the hub's current
        one: a store of the old schema can hold two lives of one hub (after a
        reprovisioning, the new life's seqs above the old life's highest were
        stored, the others quarantined as replays). A record no certificate of the
        inventory verifies gets UNKNOWN_LIFE; it can never conflict with a record
        of a current certificate."""
        from .. import records as R
        from ..inventory import Inventory

        c = self._con
        hubs = [h for (h,) in c.execute("SELECT DISTINCT hub_id FROM fleet_readings")]
        inv = Inventory(self.path)  # before our write transaction: it takes its own
        certs = {h: [R.load_certificate(x["der"]) for x in reversed(inv.certificates_of(h))] for h in hubs}
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                if not _old_schema(c):
                    c.execute("COMMIT")  # another process migrated it meanwhile
                    return
                rows = c.execute("SELECT rowid, hub_id, record FROM fleet_readings").fetchall()
                lives = [(rowid, _life_of(bytes(rec), certs.get(hub, []))) for rowid, hub, rec in rows]
                c.execute("ALTER TABLE fleet_readings RENAME TO fleet_readings_v1")
                c.execute(READINGS_TABLE)
                c.execute("CREATE TEMP TABLE fleet_lives (rid INTEGER PRIMARY KEY, cert_serial TEXT NOT NULL)")
                c.executemany("INSERT INTO temp.fleet_lives VALUES (?, ?)", lives)
                c.execute("INSERT INTO fleet_readings (hub_id, cert_serial, seq, kind, hub_time, topic, record,"
                          " payload, fields, status, received_at) SELECT r.hub_id, l.cert_serial, r.seq, r.kind,"
                          " r.hub_time, r.topic, r.record, r.payload, r.fields, r.status, r.received_at"
                          " FROM fleet_readings_v1 r JOIN temp.fleet_lives l ON l.rid = r.rowid")
                c.execute("DROP TABLE fleet_readings_v1")
                c.execute("DROP TABLE temp.fleet_lives")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        unknown = sum(1 for _, life in lives if life == UNKNOWN_LIFE)
        log.warning("migrated %s: %d stored readings now keyed by (hub, certificate, seq)%s", self.path,
                    len(lives), f"; {unknown} verify with no certificate of the inventory (life "
                                f"{UNKNOWN_LIFE!r})" if unknown else "")

    def add_batch(self, readings, quarantine):
        out = []
        with self._lock:
            c = self._con
            c.execute("BEGIN IMMEDIATE")
            try:
                for r in readings:
                    cur = c.execute(
                        "INSERT INTO fleet_readings (hub_id, cert_serial, seq, kind, hub_time, topic, record,"
                        " payload, fields, status, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                        " ON CONFLICT (hub_id, cert_serial, seq) DO NOTHING",
                        (r.hub_id, r.cert_serial, r.seq, r.kind, r.hub_time, r.topic, r.record, r.payload,
                         r.fields_text or fields_json(r.fields), r.status, r.received_at))
                    if cur.rowcount == 1:
                        out.append(NEW)
                        continue
                    held = c.execute("SELECT payload FROM fleet_readings WHERE hub_id=? AND cert_serial=? AND seq=?",
                                     (r.hub_id, r.cert_serial, r.seq)).fetchone()
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
        # A life's first reception orders the lives: serials are random.
        q = ("SELECT hub_id, cert_serial, seq, kind, hub_time, topic, record, payload, fields, received_at,"
             " status, MIN(received_at) OVER (PARTITION BY hub_id, cert_serial) AS life_start FROM fleet_readings")
        where, args = [], []
        if hub_id:
            where.append("hub_id=?")
            args.append(hub_id)
        if kinds:
            where.append(f"kind IN ({','.join('?' for _ in kinds)})")
            args.extend(kinds)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY hub_id, life_start, cert_serial, seq"
        if limit:
            q += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._con.execute(q, args).fetchall()
        return [Reading(h, c, s, k, t, tp, bytes(rec), bytes(p), fields_from_json(f), ra, st)
                for h, c, s, k, t, tp, rec, p, f, ra, st, _ in rows]

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
