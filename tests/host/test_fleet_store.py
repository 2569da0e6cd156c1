"""SQLiteStore: one row per (hub, seq), resends recognised, conflicting content reported,
exact decimals and addresses kept, quarantine kept apart, durable across reopening."""

from __future__ import annotations

from decimal import Decimal

from hubctl.fleet.store import CONFLICT, DUPLICATE, NEW, Quarantined, Reading, SQLiteStore


def r(hub, seq, payload=b"p", value=Decimal("72.35")):
    fields = {"v": 1, "hub": hub, "seq": seq, "kind": "observations", "hub_time": 100 + seq,
              "peripheral": {"addr": b"\x01\x02\x03\x04\x05\x06", "kind": "scale"},
              "observations": [{"mdc": 188736, "value": value, "unit": "kg"}]}
    return Reading(hub, seq, "observations", 100 + seq, f"hemhub/{hub}/rec", b"rec" + payload, payload, fields, 1.0)


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
