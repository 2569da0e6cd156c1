"""FHIR export: PHD-IG-style Observations with MDC + LOINC codes, UCUM quantities,
exact decimals, blood pressure as a compound, special values as dataAbsentReason,
peripheral and gateway Devices; alarm events left out."""

from __future__ import annotations

import json

from e2e.pki import FleetPKI
from e2e.recs import door, reading, sign
from hubctl import home as homedir
from hubctl.cli import main
from hubctl.fleet.fhir import ABSENT, LOINC, MDC_SYSTEM, UCUM, bundle
from hubctl.fleet.ingest import Ingestor, InventoryRegistry, Message
from hubctl.fleet.store import SQLiteStore

A = "HH1-2026-0000A1"


def bp(hub, seq):
    f = reading(hub, seq)
    f["peripheral"] = {"addr": b"\x00\x09\x1f\x00\x00\x02", "kind": "bp_cuff"}
    f["observations"] = [{"mdc": 150021, "value": 128, "unit": "mm[Hg]"},
                         {"mdc": 150022, "value": 84, "unit": "mm[Hg]"},
                         {"mdc": 150023, "value": None, "unit": "mm[Hg]", "reason": "nres"},
                         {"mdc": 149546, "value": 71, "unit": "/min"}]
    return f


def oxi(hub, seq):
    f = reading(hub, seq)
    f["peripheral"] = {"addr": b"\x00\x09\x1f\x00\x00\x03", "kind": "oximeter"}
    f["observations"] = [{"mdc": 150456, "value": None, "unit": "%", "reason": "nan"},
                         {"mdc": 149530, "value": 64, "unit": "/min"}]
    return f


def filled(tmp_path):
    pki = FleetPKI(tmp_path / "home")
    a = pki.device(A)
    store = SQLiteStore(homedir.db_path(pki.home))
    temp = reading(A, 4)
    temp["observations"] = [{"mdc": 150364, "value": (3660, -2), "unit": "Cel"}]
    Ingestor(store, InventoryRegistry(homedir.db_path(pki.home))).handle(
        [Message(f"hemhub/{A}/rec", sign(f, a)) for f in (reading(A, 1), bp(A, 2), oxi(A, 3), temp)]
        + [Message(f"hemhub/{A}/alarm", sign(door(A, 5), a))])
    return pki, store


def codes(concept):
    return {(c["system"], c["code"]) for c in concept["coding"]}


def test_bundle(tmp_path):
    pki, store = filled(tmp_path)
    b = bundle(store.readings())
    assert b["resourceType"] == "Bundle" and b["type"] == "collection"
    res = {e["fullUrl"]: e["resource"] for e in b["entry"]}
    obs = [r for r in res.values() if r["resourceType"] == "Observation"]
    devices = [r for r in res.values() if r["resourceType"] == "Device"]
    # weight, BP compound + pulse, SpO2 + pulse, temperature; the door alarm is not an Observation
    assert len(obs) == 6
    assert len(devices) == 4  # scale, cuff, oximeter + the hub as gateway
    by_code = {next(c["code"] for c in o["code"]["coding"] if c["system"] == MDC_SYSTEM): o for o in obs}
    w = by_code["188736"]
    assert (LOINC, "29463-7") in codes(w["code"])
    assert w["valueQuantity"] == {"value": w["valueQuantity"]["value"], "unit": "kg", "system": UCUM, "code": "kg"}
    assert str(w["valueQuantity"]["value"]) == "72.35"
    assert w["effectiveDateTime"] == "2026-11-23T00:00:01Z"
    dev = res[w["device"]["reference"]]
    assert dev["identifier"][0]["value"] == "A4-C1-38-00-00-01" and dev["manufacturer"] == "A&D"
    gw = res[w["extension"][0]["valueReference"]["reference"]]
    assert gw["identifier"][0]["value"] == A
    panel = by_code["150020"]
    assert (LOINC, "85354-9") in codes(panel["code"]) and "valueQuantity" not in panel
    comps = {next(c["code"] for c in x["code"]["coding"] if c["system"] == LOINC): x for x in panel["component"]}
    assert comps["8480-6"]["valueQuantity"]["value"] == 128 and comps["8462-4"]["valueQuantity"]["code"] == "mm[Hg]"
    assert comps["8478-0"]["dataAbsentReason"]["coding"][0] == {"system": ABSENT, "code": "error"}
    spo2 = by_code["150456"]
    assert {(LOINC, "59408-5"), (LOINC, "2708-6")} <= codes(spo2["code"])
    assert spo2["dataAbsentReason"]["coding"][0]["code"] == "not-a-number" and "valueQuantity" not in spo2
    assert (LOINC, "8867-4") in codes(by_code["149530"]["code"]) and (LOINC, "8867-4") in codes(by_code["149546"]["code"])
    assert (LOINC, "8310-5") in codes(by_code["150364"]["code"])
    store.close()


def test_cli_export_keeps_decimals_and_is_deterministic(tmp_path, capsys):
    pki, store = filled(tmp_path)
    store.close()
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["fleet", "export", "--fhir", "--home", str(pki.home), "--out", str(out1)]) == 0
    assert main(["fleet", "export", "--fhir", "--home", str(pki.home), "--hub", A, "--out", str(out2)]) == 0
    t1, t2 = out1.read_text(), out2.read_text()
    strip = lambda t: {k: v for k, v in json.loads(t).items() if k != "timestamp"}  # noqa: E731
    assert strip(t1) == strip(t2)
    assert '"value": 36.60' in t1  # exact decimal, trailing zero kept
    assert "wrote 6 Observations" in capsys.readouterr().out
    assert main(["fleet", "readings", "--home", str(pki.home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(x["seq"], x["kind"], x["status"]) for x in rows] == [
        (1, "observations", "verified"), (2, "observations", "verified"), (3, "observations", "verified"),
        (4, "observations", "verified"), (5, "event", "verified")]
    assert main(["fleet", "readings", "--home", str(tmp_path / "nowhere")]) == 3


def test_a_reprovisioned_hubs_lives_have_distinct_identifiers(tmp_path, capsys):
    """Seq 1 of the hub's first certificate and seq 1 of its second are two Observations."""
    pki, store = filled(tmp_path)
    old = store.readings()[0].cert_serial
    new = pki.device(A)
    Ingestor(store, InventoryRegistry(homedir.db_path(pki.home), ttl=0)).handle(
        [Message(f"hemhub/{A}/rec", sign(reading(A, 1, kg=64.5), new))])
    b = bundle(store.readings())
    ids = [o["identifier"][0]["value"] for o in (e["resource"] for e in b["entry"])
           if o["resourceType"] == "Observation"]
    serial = format(new.cert.serial_number, "x")
    # one identifier per record (a BP record's compound and pulse share theirs)
    assert sorted(set(ids)) == sorted([f"{A}/{old}/{s}" for s in (1, 2, 3, 4)] + [f"{A}/{serial}/1"])
    urls = [e["fullUrl"] for e in b["entry"]]
    assert len(urls) == len(set(urls))
    store.close()
    assert main(["fleet", "readings", "--home", str(pki.home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(x["cert_serial"], x["seq"]) for x in rows] == [(old, s) for s in (1, 2, 3, 4, 5)] + [(serial, 1)]
    assert main(["fleet", "readings", "--home", str(pki.home)]) == 0
    text = capsys.readouterr().out
    assert text.index(f"{A}, certificate {old}:") < text.index(f"{A}, certificate {serial}:")
