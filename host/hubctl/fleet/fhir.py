"""FHIR R4 export of stored readings, in the style of the HL7 FHIR Personal Health
Device (PHD) Implementation Guide: each observation coded with its IEEE 11073-10101
(MDC) code *and* LOINC, values as UCUM quantities, the peripheral as a Device, the
hub as the gateway Device (extension observation-gatewayDevice), blood pressure as
one compound Observation with components, and an IEEE 11073 special value as
dataAbsentReason, never a number (SYSTEM.md section 7).

Alarm events (door, fall, SOS, button) are not Observations and are not exported
here; nor are health and gap records. `hubctl fleet readings --json` lists them.

The export is deterministic: resource ids derive from (hub id, certificate
serial, seq), a record's identity in the store, so exporting the same store twice
gives the same Bundle. The certificate serial tells the lives of a hub apart: a
hub reprovisioned under the same id numbers its records from 1 again.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from decimal import Decimal

from .store import Reading

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
GATEWAY_EXT = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
BT_MAC_SYSTEM = "http://hl7.org/fhir/sid/eui-48/bluetooth"
HUB_SYSTEM = "urn:hemhub:hub-id"
RECORD_SYSTEM = "urn:hemhub:record"
_NS = uuid.UUID("5a3c1e0e-8f43-4c39-9d0e-0c5d3f6a2b11")  # hemhub export namespace (fixed)

# MDC code -> (MDC reference id, [(LOINC, display), ...]); LOINC codes as the PHD IG and
# the FHIR vital-signs profiles use them (docs/fleet.md lists the sources).
CODES = {
    188736: ("MDC_MASS_BODY_ACTUAL", [("29463-7", "Body weight")]),
    188740: ("MDC_LEN_BODY_ACTUAL", [("8302-2", "Body height")]),
    188752: ("MDC_RATIO_MASS_BODY_LEN_SQ", [("39156-5", "Body mass index (BMI) [Ratio]")]),
    150456: ("MDC_PULS_OXIM_SAT_O2", [("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
                                      ("2708-6", "Oxygen saturation in Arterial blood")]),
    149530: ("MDC_PULS_OXIM_PULS_RATE", [("8867-4", "Heart rate")]),
    149546: ("MDC_PULS_RATE_NON_INV", [("8867-4", "Heart rate")]),
    150364: ("MDC_TEMP_BODY", [("8310-5", "Body temperature")]),
    150020: ("MDC_PRESS_BLD_NONINV", [("85354-9", "Blood pressure panel with all children optional")]),
    150021: ("MDC_PRESS_BLD_NONINV_SYS", [("8480-6", "Systolic blood pressure")]),
    150022: ("MDC_PRESS_BLD_NONINV_DIA", [("8462-4", "Diastolic blood pressure")]),
    150023: ("MDC_PRESS_BLD_NONINV_MEAN", [("8478-0", "Mean blood pressure")]),
}
BP_PANEL = 150020
BP_PARTS = (150021, 150022, 150023)

# record.md section 3 reason -> data-absent-reason code
ABSENT_REASONS = {"nan": "not-a-number", "+inf": "positive-infinity", "-inf": "negative-infinity",
                  "nres": "error", "unsuccessful": "error", "reserved": "unknown"}


def code_of(mdc: int) -> dict:
    ref, loincs = CODES.get(mdc, (None, []))
    coding = [{"system": MDC_SYSTEM, "code": str(mdc), **({"display": ref} if ref else {})}]
    coding += [{"system": LOINC, "code": c, "display": d} for c, d in loincs]
    return {"coding": coding, **({"text": loincs[0][1]} if loincs else {})}


def _value(obs: dict) -> dict:
    v = obs["value"]
    if v is None:
        reason = obs.get("reason", "unknown")
        return {"dataAbsentReason": {"coding": [{"system": ABSENT, "code": ABSENT_REASONS.get(reason, "unknown")}],
                                     "text": reason}}
    return {"valueQuantity": {"value": Decimal(v), "unit": obs["unit"], "system": UCUM, "code": obs["unit"]}}


def _uuid(*parts) -> str:
    return "urn:uuid:" + str(uuid.uuid5(_NS, "/".join(str(p) for p in parts)))


def _iso(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _mac(addr) -> str:
    return "-".join(f"{b:02X}" for b in addr) if isinstance(addr, bytes) else str(addr)


def _peripheral_device(p: dict) -> tuple[str, dict]:
    info = p.get("info") or {}
    ident = ({"system": BT_MAC_SYSTEM, "value": _mac(p["addr"])} if isinstance(p["addr"], bytes)
             else {"system": "urn:hemhub:wired-input", "value": p["addr"]})
    dev = {"resourceType": "Device", "identifier": [ident], "type": {"text": p["kind"]}}
    for key, fhir_key in (("manufacturer", "manufacturer"), ("serial", "serialNumber"), ("model", "modelNumber")):
        if info.get(key):
            dev[fhir_key] = info[key]
    versions = [{"type": {"text": k}, "value": info[k]} for k in ("firmware", "hardware", "software") if info.get(k)]
    if versions:
        dev["version"] = versions
    return _uuid("device", ident["system"], ident["value"]), dev


def _gateway_device(hub_id: str) -> tuple[str, dict]:
    return _uuid("gateway", hub_id), {
        "resourceType": "Device", "identifier": [{"system": HUB_SYSTEM, "value": hub_id}],
        "type": {"coding": [{"system": MDC_SYSTEM, "code": "531981", "display": "MDC_MOC_VMS_MDS_AHD"}],
                 "text": "hemhub home-care hub (gateway)"}}


def record_id(r: Reading) -> str:
    """The value of the urn:hemhub:record identifier: HID/CERTSERIAL/seq (docs/fleet.md)."""
    return f"{r.hub_id}/{r.cert_serial}/{r.seq}"


def observations_of(r: Reading, device_url: str, gateway_url: str) -> list[tuple[str, dict]]:
    """The Observations of one stored record: one per measurement, BP parts as one compound."""
    f = r.fields
    base = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}],
        "identifier": [{"system": RECORD_SYSTEM, "value": record_id(r)}],
        "device": {"reference": device_url},
        "extension": [{"url": GATEWAY_EXT, "valueReference": {"reference": gateway_url}}],
    }
    if not f.get("unsynced"):
        base["effectiveDateTime"] = _iso(f["hub_time"])  # the hub's clock at receipt, UTC
    else:
        base["note"] = [{"text": "hub clock not yet set when received; place by sequence number"}]
    obs = f["observations"]
    out = []
    bp = [o for o in obs if o["mdc"] in BP_PARTS]
    for i, o in enumerate(obs):
        if o["mdc"] in BP_PARTS:
            continue
        out.append((_uuid("obs", record_id(r), i), {**base, "code": code_of(o["mdc"]), **_value(o)}))
    if bp:
        comps = [{"code": code_of(o["mdc"]), **_value(o)} for o in bp]
        out.append((_uuid("obs", record_id(r), "bp"), {**base, "code": code_of(BP_PANEL), "component": comps}))
    return out


def bundle(readings: list[Reading], *, now: datetime.datetime | None = None) -> dict:
    """A FHIR R4 Bundle (type collection) of the observations in the readings, with their Devices."""
    entries: dict[str, dict] = {}
    observations = []
    for r in readings:
        if r.kind != "observations":
            continue
        gw_url, gw = _gateway_device(r.hub_id)
        dev_url, dev = _peripheral_device(r.fields["peripheral"])
        entries.setdefault(gw_url, gw)
        entries.setdefault(dev_url, dev)
        observations.extend(observations_of(r, dev_url, gw_url))
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    return {
        "resourceType": "Bundle", "type": "collection",
        "timestamp": stamp.isoformat().replace("+00:00", "Z"),
        "entry": [{"fullUrl": url, "resource": res} for url, res in (*entries.items(), *observations)],
    }


_DEC = re.compile(r'"__decimal__:([-0-9.E+]+)"')


def to_json(obj: dict) -> str:
    """JSON with exact decimals: 36.60 stays 36.60 (FHIR keeps a decimal's precision)."""
    def conv(v):
        if isinstance(v, Decimal):
            return f"__decimal__:{v}"
        raise TypeError(f"{type(v).__name__} is not JSON")

    return _DEC.sub(r"\1", json.dumps(obj, default=conv, indent=1))
