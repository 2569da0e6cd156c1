"""SQLiteStore: one row per (hub, certificate, seq), resends recognised, conflicting
content reported, exact decimals and addresses kept, quarantine kept apart, durable
across reopening, a store of the older schema migrated."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from e2e.pki import FleetPKI
from e2e.recs import reading, sign
from hubctl import home as homedir
from hubctl import records as R
from hubctl.fleet.ingest import Ingestor, InventoryRegistry, Message
from hubctl.fleet.store import (
    CONFLICT,
    DUPLICATE,
    NEW,
    UNKNOWN_LIFE,
    Quarantined,
    Reading,
    SQLiteStore,
    fields_json,
)


def r(hub, seq, payload=b"p", value=Decimal("72.35"), cert="c0ffee"):
    fields = {"v": 1, "hub": hub, "seq": seq, "kind": "observations", "hub_time": 100 + seq,
              "peripheral": {"addr": b"\x01\x02\x03\x04\x05\x06", "kind": "scale"},
              "observations": [{"mdc": 188736, "value": value, "unit": "kg"}]}
    return Reading(hub, cert, seq, "observations", 100 + seq, f"hemhub/{hub}/rec", b"rec" + payload, payload, fields,
                   1.0)


def test_idempotent_by_hub_and_seq(tmp_path):
    s = SQLiteStore(tmp_path / "fleet.db")
    assert s.add_batch([r("A", 1), r("A", 2), r("B", 1)], []) == [NEW, NEW, NEW]
    assert s.add_batch([r("A", 1), r("A", 2, payload=b"other"), r("A", 3)], []) == [DUPLICATE, CONFLICT, NEW]
    assert [(x.hub_id, x.seq, x.payload) for x in s.readings()] == [("A", 1, b"p"), ("A", 2, b"p"), ("A", 3, b"p"),
                                                                    ("B", 1, b"p")]
    assert s.count() == 4 and s.count("B") == 1
    s.close()


def test_values_round_trip_exactly_and_survive_reopening(tmp_path):
    s = SQLiteStore(tmp_path / "fleet.db")
    s.add_batch([r("A", 1, value=Decimal("36.60")), r("A", 2, value=None), r("A", 3, value=81)],
                [Quarantined("A", None, "hemhub/A/rec", "bad-signature", "no", b"\x00")])
    s.close()
    s = SQLiteStore(tmp_path / "fleet.db")
    vals = [x.fields["observations"][0]["value"] for x in s.readings("A")]
    assert vals == [Decimal("36.60"), None, 81] and str(vals[0]) == "36.60"
    assert s.readings("A")[0].fields["peripheral"]["addr"] == b"\x01\x02\x03\x04\x05\x06"
    q = s.quarantined()
    assert [(x.hub_id, x.reason, x.record) for x in q] == [("A", "bad-signature", b"\x00")]
    assert s.readings(kinds=("event",)) == []
    s.close()


def test_a_failed_batch_stores_nothing(tmp_path):
    s = SQLiteStore(tmp_path / "fleet.db")
    bad = r("A", 2)
    bad.fields = {"x": object()}  # cannot be stored
    try:
        s.add_batch([r("A", 1), bad], [])
    except TypeError:
        pass
    else:
        raise AssertionError("the batch should have failed")
    assert s.count() == 0
    s.close()


def test_each_certificate_is_a_life_of_its_own(tmp_path):
    """A reprovisioned hub (same id, new certificate) numbers its records from 1 again."""
    s = SQLiteStore(tmp_path / "fleet.db")
    old, new = r("A", 1, cert="ff01"), r("A", 1, payload=b"new life", cert="0a")
    old.received_at, new.received_at = 1.0, 2.0
    assert s.add_batch([old, new], []) == [NEW, NEW]
    again = r("A", 1, payload=b"new life", cert="0a")
    assert s.add_batch([again, r("A", 1, payload=b"other", cert="0a")], []) == [DUPLICATE, CONFLICT]
    # lives in the order they were first seen, not by serial (serials are random)
    assert [(x.cert_serial, x.seq, x.payload) for x in s.readings("A")] == [("ff01", 1, b"p"), ("0a", 1, b"new life")]
    s.close()


OLD_SCHEMA = """CREATE TABLE fleet_readings (hub_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    hub_time INTEGER NOT NULL, topic TEXT NOT NULL, record BLOB NOT NULL, payload BLOB NOT NULL,
    fields TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'verified', received_at REAL NOT NULL,
    PRIMARY KEY (hub_id, seq))"""


def test_a_store_keyed_by_hub_and_seq_alone_is_migrated(tmp_path):
    """Each record of an old store gets the certificate that verifies it. An old store can hold
    two lives of one hub: after a reprovisioning, the new life's seqs above the old life's
    highest were stored (the others were quarantined as replays)."""
    pki = FleetPKI(tmp_path / "home")
    db = homedir.db_path(pki.home)
    old = pki.device("A")
    recs = [sign(reading("A", s), old) for s in (1, 2)]
    new = pki.device("A")
    recs.append(sign(reading("A", 3), new))
    c = pki.device("C", register=False)  # its certificate is not in the inventory
    stranger = sign(reading("C", 1), c)
    con = sqlite3.connect(db)
    con.execute(OLD_SCHEMA)
    for hub, seq, data, cert in [("A", 1, recs[0], old.cert), ("A", 2, recs[1], old.cert),
                                 ("A", 3, recs[2], new.cert), ("C", 1, stranger, c.cert)]:
        v = R.verify_record(data, cert)
        con.execute("INSERT INTO fleet_readings VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (hub, seq, v.kind, v.fields["hub_time"], f"hemhub/{hub}/rec", data, v.payload,
                     fields_json(v.fields), "verified", float(seq)))
    con.commit()
    con.close()

    s = SQLiteStore(db)
    o, n = R.certificate_serial(old.cert), R.certificate_serial(new.cert)
    assert [(x.hub_id, x.cert_serial, x.seq, x.record) for x in s.readings()] == [
        ("A", o, 1, recs[0]), ("A", o, 2, recs[1]), ("A", n, 3, recs[2]), ("C", UNKNOWN_LIFE, 1, stranger)]
    ing = Ingestor(s, InventoryRegistry(db, ttl=0))
    # the new life's seq 1 was a "replay" before; now it is stored, and seq 3 is a resend
    out = ing.handle([Message("hemhub/A/rec", sign(reading("A", 1, kg=50), new)),
                      Message("hemhub/A/rec", recs[2])])
    assert (out.stored, out.duplicates, out.acks) == (1, 1, {"A": {1, 3}})
    s.close()
    s = SQLiteStore(db)  # opening a migrated store again changes nothing
    assert s.count() == 5
    s.close()

