"""Signed records for fleet tests, made by the hub's own signing code (hemhub.record)
running under CPython, with the hub's key."""

from __future__ import annotations

from hemhub import record

T0 = 1795392000  # 2026-11-23


def reading(hub_id: str, seq: int, kg=72.35, **extra) -> dict:
    return {"hub": hub_id, "seq": seq, "kind": "observations", "hub_time": T0 + seq, "device_time": T0 + seq - 5,
            "peripheral": {"addr": b"\xa4\xc1\x38\x00\x00\x01", "addr_type": 0, "kind": "scale",
                           "info": {"manufacturer": "A&D", "model": "UC-352BLE", "serial": "5A0001"}},
            "observations": [{"mdc": 188736, "value": kg, "unit": "kg"}], **extra}


def door(hub_id: str, seq: int) -> dict:
    return {"hub": hub_id, "seq": seq, "kind": "event", "hub_time": T0 + seq,
            "peripheral": {"addr": b"\x3c\x2e\xf5\x00\x00\x10", "addr_type": 1, "kind": "door"},
            "event": {"type": "door_open", "source": "door", "value": True}}


def sign(fields: dict, client) -> bytes:
    return record.sign_record(fields, client.signer)
