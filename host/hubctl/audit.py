"""The audit log: every technician action (flash, deploy, provision, revoke,
wipe) appended to the `audit` table of HOME/fleet.db: who, what, which unit,
when, with what result. Append-only: SQLite triggers refuse UPDATE and DELETE
(hubctl.inventory.SCHEMA). `hubctl audit [--json]` reads it.

No secret goes into a detail: callers pass facts (firmware version, step that
failed, certificate fingerprint), never keys or PSKs.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

from .inventory import connect, now_iso


def technician(explicit: str | None = None) -> str:
    """Who is acting: --technician, else $USER, else the login name."""
    if explicit:
        return explicit
    return os.environ.get("USER") or getpass.getuser()


def record(db_path: str | Path, action: str, unit: str | None, result: str, *,
           who: str | None = None, detail: dict | None = None) -> int:
    """Append one entry; returns its id."""
    with connect(db_path) as c:
        cur = c.execute("INSERT INTO audit (at, who, action, unit, result, detail) VALUES (?, ?, ?, ?, ?, ?)",
                        (now_iso(), technician(who), action, unit, result,
                         json.dumps(detail, sort_keys=True) if detail else None))
        return int(cur.lastrowid)


def entries(db_path: str | Path, *, unit: str | None = None, action: str | None = None,
            limit: int | None = None) -> list[dict]:
    q, a = "SELECT * FROM audit", []
    cond = []
    if unit:
        cond.append("unit=?")
        a.append(unit)
    if action:
        cond.append("action=?")
        a.append(action)
    if cond:
        q += " WHERE " + " AND ".join(cond)
    q += " ORDER BY id"
    with connect(db_path) as c:
        rows = [dict(r) for r in c.execute(q, a)]
    for r in rows:
        r["detail"] = json.loads(r["detail"]) if r["detail"] else None
    return rows[-limit:] if limit else rows


def _cmd_audit(args) -> int:
    from . import home

    rows = entries(home.db_path(home.home(args.home)), unit=args.unit, action=args.action,
                   limit=args.last)
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return 0
    if not rows:
        print("the audit log is empty")
    for r in rows:
        d = r["detail"] or {}
        extra = " ".join(f"{k}={v}" for k, v in sorted(d.items()))
        print(f"{r['at']}  {r['who']:<12} {r['action']:<10} {(r['unit'] or '-'):<20} {r['result']:<8} {extra}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="the audit log: who did what to which hub, when, with what result")
    p.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    p.add_argument("--unit", help="only this hub (id, serial or port)")
    p.add_argument("--action", help="only this action (flash, deploy, provision, revoke, wipe)")
    p.add_argument("--last", type=int, help="only the last N entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_audit)
