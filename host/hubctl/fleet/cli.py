"""`hubctl fleet serve | readings | quarantine | status | export --fhir`."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .. import home as homedir
from ..errors import HubNotFoundError, UsageError


def _store(args):
    from .store import SQLiteStore

    h = homedir.home(args.home)
    db = homedir.db_path(h)
    if not db.exists() and args.fcmd != "serve":
        raise HubNotFoundError(f"No fleet database at {db}.",
                               hint="Start the service first: hubctl fleet serve --home DIR --broker HOST:PORT.")
    return SQLiteStore(db)


def cmd_serve(args) -> int:
    from ..broker import service_client_cert
    from ..ca import read_passphrase
    from .ingest import InventoryRegistry
    from .mqtt import parse_broker
    from .service import FleetService

    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s fleet %(levelname)s %(message)s")
    host, port = parse_broker(args.broker)
    h = homedir.home(args.home)
    if args.cert or args.key or args.ca:
        if not (args.cert and args.key and args.ca):
            raise UsageError("--cert, --key and --ca go together.")
        cert, key, ca = Path(args.cert), Path(args.key), Path(args.ca)
    else:
        cert, key, ca = service_client_cert(h, read_passphrase(args.passphrase_file))
    store = _store(args)
    workers = (os.cpu_count() or 1) if args.verify_workers is None else args.verify_workers
    svc = FleetService(store, InventoryRegistry(homedir.db_path(h)), host, port, certfile=cert, keyfile=key,
                       cafile=ca, verify_workers=workers)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    svc.start()
    print(f"fleet service: broker {host}:{port}, store {store.path}, "
          f"{f'{workers} verification processes' if workers else 'verifying in-process'}; Ctrl-C stops it",
          flush=True)
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        s = svc.stats
        print(f"fleet service stopped: {s.received} messages, {s.stored} stored, {s.duplicates} resends, "
              f"{s.quarantined} quarantined, {s.acks_sent} acks", flush=True)
        store.close()
    return 0


def _obs_text(fields: dict) -> str:
    if "observations" in fields:
        parts = []
        for o in fields["observations"]:
            v = o["value"] if o["value"] is not None else f"({o.get('reason')})"
            parts.append(f"{o['mdc']}={v} {o['unit']}")
        return ", ".join(parts)
    for k in ("event", "health", "gap"):
        if k in fields:
            return f"{k} " + json.dumps(fields[k], default=str, sort_keys=True)
    return ""


def cmd_readings(args) -> int:
    from .store import fields_json

    store = _store(args)
    rows = store.readings(args.hub)
    if args.json:
        print(json.dumps([{"hub": r.hub_id, "cert_serial": r.cert_serial, "seq": r.seq, "kind": r.kind,
                           "hub_time": r.hub_time,
                           "status": r.status, "topic": r.topic, "received_at": r.received_at,
                           "fields": json.loads(fields_json(r.fields)), "cose": r.record.hex()}
                          for r in rows], indent=1))
        return 0
    if not rows:
        print("no readings stored" + (f" for {args.hub}" if args.hub else ""))
    life = None
    for r in rows:
        if (r.hub_id, r.cert_serial) != life:  # a hub's lives apart: seqs restart at reprovisioning
            life = (r.hub_id, r.cert_serial)
            print(f"{r.hub_id}, certificate {r.cert_serial}:")
        print(f"  {r.seq:>7} {r.kind:<12} {r.status:<9} {_obs_text(r.fields)}")
    q = len(store.quarantined(args.hub))
    if q:
        print(f"({q} quarantined record(s): hubctl fleet quarantine)")
    return 0


def cmd_quarantine(args) -> int:
    rows = _store(args).quarantined(args.hub)
    if args.json:
        print(json.dumps([{"id": q.id, "hub": q.hub_id, "seq": q.seq, "topic": q.topic, "reason": q.reason,
                           "detail": q.detail, "received_at": q.received_at, "data": q.record.hex()}
                          for q in rows], indent=1))
        return 0
    if not rows:
        print("nothing quarantined")
    for q in rows:
        print(f"#{q.id} {q.topic} {q.reason}: {q.detail}")
    return 0


def cmd_status(args) -> int:
    st = _store(args).statuses()
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
        return 0
    if not st:
        print("no hub has reported its status")
    for hub, s in sorted(st.items()):
        print(f"{hub:<18} online={s.get('online')} link={s.get('link')} quality={s.get('quality')} "
              f"pending={s.get('pending')} fw={s.get('fw')}")
    return 0


def cmd_export(args) -> int:
    from .fhir import bundle, to_json

    if not args.fhir:
        raise UsageError("Say which format: --fhir (the only one so far).")
    b = bundle(_store(args).readings(args.hub, kinds=("observations",)))
    text = to_json(b)
    if args.out:
        Path(args.out).write_text(text + "\n")
        n = sum(1 for e in b["entry"] if e["resource"]["resourceType"] == "Observation")
        print(f"wrote {n} Observations to {args.out}")
    else:
        print(text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("fleet", help="the fleet service: run it, list readings, export FHIR")
    fs = p.add_subparsers(dest="fcmd", metavar="VERB", required=True)

    def common(x, hub=True, as_json=True):
        x.add_argument("--home", help="hubctl home (default $HEMHUB_HOME or ~/.local/share/hemhub)")
        if hub:
            x.add_argument("--hub", help="only this hub id")
        if as_json:
            x.add_argument("--json", action="store_true", help="machine-readable output")

    x = fs.add_parser("serve", help="run the fleet service: verify, store and acknowledge records")
    common(x, hub=False, as_json=False)
    x.add_argument("--broker", required=True, help="HOST:PORT of the broker's service listener")
    x.add_argument("--cert", help="client certificate (default: the service certificate from the CA)")
    x.add_argument("--key", help="its key")
    x.add_argument("--ca", help="root CA to check the broker against")
    x.add_argument("--passphrase-file", help="CA passphrase (to issue the service certificate the first time)")
    x.add_argument("--verify-workers", type=int, metavar="N",
                   help="verify records in N worker processes (default: one per core; 0: in the service's "
                        "own process)")
    x.add_argument("--quiet", action="store_true", help="log warnings only")
    x.set_defaults(func=cmd_serve)
    x = fs.add_parser("readings", help="stored readings with their verification status")
    common(x)
    x.set_defaults(func=cmd_readings)
    x = fs.add_parser("quarantine", help="records refused: forgeries, replays, unknown or revoked hubs")
    common(x)
    x.set_defaults(func=cmd_quarantine)
    x = fs.add_parser("status", help="last status each hub reported (link, quality, journal backlog)")
    common(x, hub=False)
    x.set_defaults(func=cmd_status)
    x = fs.add_parser("export", help="export stored observations (FHIR R4 Bundle)")
    common(x, as_json=False)
    x.add_argument("--fhir", action="store_true", help="FHIR R4 Bundle of Observations (PHD IG style)")
    x.add_argument("--out", help="write to FILE instead of standard output")
    x.set_defaults(func=cmd_export)
