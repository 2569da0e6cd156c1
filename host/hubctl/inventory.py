"""The hub inventory: SQLite in HOME/fleet.db, shared with the fleet service.

Tables (created on first use; other components add their own tables to the
same file):

    hubs            one row per hub: serial, hardware revision, board, MAC,
                    firmware, site, broker, technician, status
                    (pending | provisioned | failed | revoked), the current
                    certificate's serial and SHA-256, times, and the result of
                    each provisioning step (JSON)
    certificates    every certificate ever issued to a hub (DER, serial, SHA-256),
                    status pending (issued, provisioning not finished) | active |
                    superseded | revoked
    provision_runs  one row per provisioning attempt: who, where, each step's result
    audit           the append-only audit log (hubctl.audit)

No secret is ever stored here: no keys, no WiFi PSK.

For the fleet service::

    inv = Inventory(db_path)
    inv.certificate(hub_id) -> bytes | None    DER of the hub's certificate, only once
                                                provisioning completed and not revoked
    inv.certificates_of(hub_id) -> [dict]      every certificate issued to it (old
                                                readings verify with superseded ones)
    inv.is_revoked(hub_id) -> bool
    inv.hubs() -> [dict]
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import sqlite3
import time
from pathlib import Path

from .errors import HubNotFoundError

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubs (
    hub_id TEXT PRIMARY KEY,
    serial TEXT, hw_rev TEXT, board TEXT, mac TEXT, firmware TEXT,
    site TEXT, broker TEXT, technician TEXT,
    status TEXT NOT NULL,
    cert_serial TEXT, cert_sha256 TEXT,
    provisioned_at TEXT, updated_at TEXT NOT NULL,
    steps TEXT,
    revoked_at TEXT, revoked_reason TEXT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    hub_id TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    der BLOB NOT NULL,
    issued_at TEXT NOT NULL,
    status TEXT NOT NULL,
    revoked_at TEXT, reason TEXT
);
CREATE INDEX IF NOT EXISTS certificates_hub ON certificates(hub_id);
CREATE TABLE IF NOT EXISTS provision_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hub_id TEXT, port TEXT, technician TEXT, site TEXT, firmware TEXT,
    started_at TEXT NOT NULL, finished_at TEXT,
    result TEXT, failed_step TEXT, steps TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
    unit TEXT, result TEXT NOT NULL, detail TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


_SETUP_S = 30.0


def _open(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place.

    Turning a new database to WAL, or creating its schema, while other
    connections open it too (a batch provisioning its first units in a fresh
    home) can fail at once with "database is locked": SQLite does not wait on
    its busy handler for every lock those steps take. That is retried here for
    up to _SETUP_S; any other error, or a lock that outlasts it, is raised."""
    deadline = time.monotonic() + _SETUP_S
    delay = 0.01
    while True:
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=30000")
            con.executescript(SCHEMA)
            return con
        except sqlite3.OperationalError as e:
            con.close()
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def connect(db_path: str | Path):
    """A connection with the schema in place; commits on success. One per
    operation, so threads (batch provisioning) never share one."""
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _row(r: sqlite3.Row | None) -> dict | None:
    if r is None:
        return None
    d = dict(r)
    if d.get("steps"):
        d["steps"] = json.loads(d["steps"])
    d.pop("der", None)
    return d


def _end_live_certificates(c, hub_id: str, status: str, reason: str, t: str) -> list[str]:
    """Mark the hub's active and pending certificates `status` (superseded or
    revoked: both go on the CRL); returns their serials."""
    serials = [r[0] for r in c.execute(
        "SELECT serial FROM certificates WHERE hub_id=? AND status IN ('active', 'pending')", (hub_id,))]
    c.execute("UPDATE certificates SET status=?, revoked_at=?, reason=? "
              "WHERE hub_id=? AND status IN ('active', 'pending')", (status, t, reason, hub_id))
    return serials


class Inventory:
    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)

    # -- reading (fleet service, CLI) -----------------------------------------------
    def hubs(self) -> list[dict]:
        with connect(self.path) as c:
            return [_row(r) for r in c.execute("SELECT * FROM hubs ORDER BY hub_id")]

    def hub(self, hub_id: str) -> dict | None:
        with connect(self.path) as c:
            return _row(c.execute("SELECT * FROM hubs WHERE hub_id=?", (hub_id,)).fetchone())

    def certificate(self, hub_id: str) -> bytes | None:
        """DER of the hub's certificate if its provisioning completed and it is
        not revoked; else None (a half-provisioned hub is not admitted)."""
        with connect(self.path) as c:
            r = c.execute("SELECT c.der FROM hubs h JOIN certificates c ON c.serial = h.cert_serial "
                          "WHERE h.hub_id=? AND h.status='provisioned' AND c.status='active'",
                          (hub_id,)).fetchone()
        return bytes(r[0]) if r else None

    def certificates_of(self, hub_id: str) -> list[dict]:
        """Every certificate issued to the hub, oldest first, with its DER."""
        with connect(self.path) as c:
            rows = c.execute("SELECT * FROM certificates WHERE hub_id=? ORDER BY issued_at, rowid",
                             (hub_id,)).fetchall()
        return [dict(r, der=bytes(r["der"])) for r in rows]

    def certificate_by_sha256(self, sha256: str) -> dict | None:
        with connect(self.path) as c:
            r = c.execute("SELECT * FROM certificates WHERE sha256=?", (sha256,)).fetchone()
        return dict(r, der=bytes(r["der"])) if r else None

    def is_revoked(self, hub_id: str) -> bool:
        with connect(self.path) as c:
            r = c.execute("SELECT status FROM hubs WHERE hub_id=?", (hub_id,)).fetchone()
        return bool(r) and r[0] == "revoked"

    def revoked_serials(self) -> list[tuple[str, datetime.datetime]]:
        """(serial hex, revocation time) of every revoked or superseded certificate (the CRL)."""
        with connect(self.path) as c:
            rows = c.execute("SELECT serial, revoked_at FROM certificates "
                             "WHERE status IN ('revoked', 'superseded') ORDER BY serial").fetchall()
        return [(s, datetime.datetime.fromisoformat(t)) for s, t in rows]

    def runs(self, hub_id: str | None = None) -> list[dict]:
        with connect(self.path) as c:
            q = "SELECT * FROM provision_runs" + (" WHERE hub_id=?" if hub_id else "") + " ORDER BY id"
            return [_row(r) for r in c.execute(q, (hub_id,) if hub_id else ())]

    # -- writing (provisioning) -------------------------------------------------------
    def record_issued(self, hub_id: str, facts: dict, cert_serial: int, cert_sha256: str,
                      der: bytes) -> list[str]:
        """Record a certificate just issued, before it goes to the hub (status
        pending). Any other pending certificate of the hub is superseded (its key
        is gone from the hub). Returns the serials superseded."""
        t = now_iso()
        serial = format(cert_serial, "x")
        with connect(self.path) as c:
            old = [r[0] for r in c.execute(
                "SELECT serial FROM certificates WHERE hub_id=? AND status='pending'", (hub_id,))]
            c.execute("UPDATE certificates SET status='superseded', revoked_at=?, "
                      "reason='superseded: provisioning restarted with a new key' "
                      "WHERE hub_id=? AND status='pending'", (t, hub_id))
            c.execute("INSERT INTO certificates (serial, hub_id, sha256, der, issued_at, status) "
                      "VALUES (?, ?, ?, ?, ?, 'pending')", (serial, hub_id, cert_sha256, der, t))
            self._upsert_hub(c, hub_id, facts, status=None, t=t)
        return old

    def supersede_active(self, hub_id: str, reason: str) -> list[str]:
        """Reprovisioning: the hub's active certificate is replaced (goes to the CRL)."""
        t = now_iso()
        with connect(self.path) as c:
            old = _end_live_certificates(c, hub_id, "superseded", reason, t)
            c.execute("UPDATE hubs SET status='pending', updated_at=? WHERE hub_id=? "
                      "AND status != 'revoked'", (t, hub_id))
        return old

    def complete(self, hub_id: str, facts: dict, cert_sha256: str, steps: list[dict]) -> None:
        """Provisioning finished: the pending certificate becomes the hub's active one."""
        t = now_iso()
        with connect(self.path) as c:
            r = c.execute("SELECT serial, status FROM certificates WHERE hub_id=? AND sha256=?",
                          (hub_id, cert_sha256)).fetchone()
            if r is None or r["status"] not in ("pending", "active"):
                raise HubNotFoundError(f"Certificate {cert_sha256[:16]} of {hub_id} is not pending "
                                       f"in the inventory ({r['status'] if r else 'unknown'}).")
            c.execute("UPDATE certificates SET status='superseded', revoked_at=?, "
                      "reason='superseded by reprovisioning' WHERE hub_id=? AND status='active' "
                      "AND sha256 != ?", (t, hub_id, cert_sha256))
            c.execute("UPDATE certificates SET status='active' WHERE serial=?", (r["serial"],))
            self._upsert_hub(c, hub_id, facts, status="provisioned", t=t)
            c.execute("UPDATE hubs SET cert_serial=?, cert_sha256=?, provisioned_at=?, steps=?, "
                      "revoked_at=NULL, revoked_reason=NULL WHERE hub_id=?",
                      (r["serial"], cert_sha256, t, json.dumps(steps), hub_id))

    def record_failure(self, hub_id: str, facts: dict, steps: list[dict]) -> None:
        t = now_iso()
        with connect(self.path) as c:
            row = c.execute("SELECT status FROM hubs WHERE hub_id=?", (hub_id,)).fetchone()
            # A provisioned hub whose reprovisioning failed early keeps its status.
            status = None if row and row[0] in ("provisioned", "revoked") else "failed"
            self._upsert_hub(c, hub_id, facts, status=status, t=t)
            c.execute("UPDATE hubs SET steps=? WHERE hub_id=?", (json.dumps(steps), hub_id))

    def revoke_hub(self, hub_id: str, *, reason: str, technician: str | None) -> list[str]:
        t = now_iso()
        with connect(self.path) as c:
            serials = _end_live_certificates(c, hub_id, "revoked", reason, t)
            c.execute("UPDATE hubs SET status='revoked', revoked_at=?, revoked_reason=?, updated_at=? "
                      "WHERE hub_id=?", (t, f"{reason} (by {technician})" if technician else reason,
                                         t, hub_id))
        return serials

    def start_run(self, port: str, technician: str, site: str) -> int:
        with connect(self.path) as c:
            cur = c.execute("INSERT INTO provision_runs (port, technician, site, started_at) "
                            "VALUES (?, ?, ?, ?)", (port, technician, site, now_iso()))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, hub_id: str | None, firmware: str | None, result: str,
                   failed_step: str | None, steps: list[dict]) -> None:
        with connect(self.path) as c:
            c.execute("UPDATE provision_runs SET hub_id=?, firmware=?, finished_at=?, result=?, "
                      "failed_step=?, steps=? WHERE id=?",
                      (hub_id, firmware, now_iso(), result, failed_step, json.dumps(steps), run_id))

    @staticmethod
    def _upsert_hub(c, hub_id: str, facts: dict, *, status: str | None, t: str) -> None:
        cols = ("serial", "hw_rev", "board", "mac", "firmware", "site", "broker", "technician")
        vals = {k: facts.get(k) for k in cols}
        if c.execute("SELECT 1 FROM hubs WHERE hub_id=?", (hub_id,)).fetchone() is None:
            c.execute(f"INSERT INTO hubs (hub_id, {', '.join(cols)}, status, updated_at) "
                      f"VALUES (?, {', '.join('?' for _ in cols)}, ?, ?)",
                      (hub_id, *vals.values(), status or "pending", t))
        else:
            sets = ", ".join(f"{k}=COALESCE(?, {k})" for k in cols)
            c.execute(f"UPDATE hubs SET {sets}, updated_at=?" + (", status=?" if status else "")
                      + " WHERE hub_id=?",
                      (*vals.values(), t, *((status,) if status else ()), hub_id))


# -- CLI -----------------------------------------------------------------------------
def _inv(args) -> Inventory:
    from . import home

    return Inventory(home.db_path(home.home(args.home)))


def _cmd_list(args) -> int:
    rows = _inv(args).hubs()
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return 0
    if not rows:
        print("no hubs in the inventory")
        return 0
    print(f"{'hub id':<20} {'status':<12} {'site':<16} {'firmware':<9} {'cert sha256':<17} "
          f"{'technician':<12} provisioned")
    for r in rows:
        print(f"{r['hub_id']:<20} {r['status']:<12} {(r['site'] or '-'):<16} {(r['firmware'] or '-'):<9} "
              f"{(r['cert_sha256'] or '-')[:16]:<17} {(r['technician'] or '-'):<12} "
              f"{r['provisioned_at'] or '-'}")
    return 0


def _cmd_show(args) -> int:
    inv = _inv(args)
    h = inv.hub(args.hub_id)
    if h is None:
        raise HubNotFoundError(f"Hub {args.hub_id} is not in the inventory {inv.path}.",
                               hint="hubctl inventory list shows the hubs it knows.")
    certs = [{k: v for k, v in c.items() if k != "der"} for c in inv.certificates_of(args.hub_id)]
    runs = inv.runs(args.hub_id)
    if args.json:
        print(json.dumps({"hub": h, "certificates": certs, "runs": runs}, indent=1, sort_keys=True))
        return 0
    for k in ("hub_id", "status", "serial", "hw_rev", "board", "mac", "firmware", "site", "broker",
              "technician", "provisioned_at", "cert_serial", "cert_sha256", "revoked_at",
              "revoked_reason"):
        if h.get(k) is not None:
            print(f"{k:>15}: {h[k]}")
    for s in h.get("steps") or []:
        print(f"{'step':>15}: {s['n']} {s['name']}: {s['result']}"
              + (f" ({s['detail']})" if s.get("detail") else ""))
    for c in certs:
        print(f"{'certificate':>15}: {c['serial']} {c['status']} issued {c['issued_at']} "
              f"sha256 {c['sha256'][:16]}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("inventory", help="the hub inventory: list hubs, show one")
    vs = p.add_subparsers(dest="icmd", metavar="VERB", required=True)
    x = vs.add_parser("list", help="every hub: status, site, firmware, certificate")
    x.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_list)
    x = vs.add_parser("show", help="one hub: facts, step results, certificates")
    x.add_argument("hub_id")
    x.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_show)
