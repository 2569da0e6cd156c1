"""HIL: the hub's BLE central against the simulated radio (virtual hub only).

Each test enrols simulated devices in /data/config.json, drives them through
the world ({"cmd": "ble", ...}) and reads what the running application
recorded (hemhub.service.readings_json) by interrupting it into the raw REPL
*without* a soft reset, so the in-RAM window is still there.
"""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
from mpremote.transport_serial import SerialTransport
from vhubtest import write_config

# Known blocker (docs/sensing.md, "Heap"): with the GATT and BTHome codecs loaded as
# .mpy into RAM, the central does not fit the 96 KiB heap beside the board
# emulation (MemoryError at start-up); these tests run once that is solved.
pytestmark = pytest.mark.skip(reason="the BLE central has not yet run end to end on the virtual hub (docs/sensing.md)")

SCALE, OXI, BP, THERMO = "C0:FF:EE:00:00:01", "C0:FF:EE:00:00:02", "C0:FF:EE:00:00:03", "C0:FF:EE:00:00:04"
DOOR, PENDANT = "A4:C1:38:00:00:05", "A4:C1:38:00:00:06"
KEY = "231d39c1d7cc1ab1aee224cd096db932"


def hub_readings(port: str) -> dict:
    """Stop the application (Ctrl-C), call the service in the raw REPL, resume it."""
    with contextlib.redirect_stdout(io.StringIO()):
        t = SerialTransport(port, baudrate=115200, timeout=1)
    try:
        t.enter_raw_repl(soft_reset=False)
        out, err = t.exec_raw("import hemhub.service as s\ns.readings_json()\n", timeout=10)
        assert not err, err
        t.exit_raw_repl()
        t.serial.write(b"\x04")  # soft reset: the application starts again
    finally:
        t.close()
    return json.loads(out.decode().strip().splitlines()[-1])


def enrol(vhub, devices: list[dict]) -> None:
    with vhub.world() as w:
        w.call("clock", set=int(time.time()))
        for d in devices:
            w.call("ble", op="add", **{k: v for k, v in d.items() if k not in ("serves",)})
    write_config(vhub, {"peripherals": [
        {"addr": d["addr"], "kind": d["kind"], "key": d.get("key"), "serves": "patient"} for d in devices]})
    time.sleep(1.0)  # the application boots and starts scanning


def wait_until(pred, timeout=8.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def obs(reading: dict) -> dict:
    return {o["mdc"]: o["value"] for o in reading["observations"]}


def test_scale_door_and_pendant(vhub, sim_only):
    enrol(vhub, [{"addr": SCALE, "kind": "scale"}, {"addr": DOOR, "kind": "door"},
                 {"addr": PENDANT, "kind": "pendant", "key": KEY},
                 ])
    with vhub.world() as w:
        w.call("ble", op="add", kind="scale", addr="11:22:33:44:55:66")  # not enrolled
        w.call("ble", op="measure", addr="11:22:33:44:55:66", kg=50)
        w.call("ble", op="measure", addr=SCALE, kg=72.35)
        w.call("ble", op="door", addr=DOOR, open=True)
        w.call("ble", op="press", addr=PENDANT)
        radio = vhub.sup.parts["ble"]
        assert wait_until(lambda: radio.devices[SCALE].sent >= 1)
        time.sleep(0.5)
        r = hub_readings(vhub.port)
    weights = [x for x in r["readings"] if x["uuid"] == 0x2A9D]
    assert len(weights) == 1, r
    wt = weights[0]
    assert obs(wt) == {188736: 72.35} and wt["addr"] == SCALE and wt["kind"] == "scale"
    assert wt["device"]["manufacturer"] == "hemhub-sim" and wt["device"]["battery"] == 90
    assert wt["device"].get("clock_set") is True
    assert wt["device_time"] is not None and abs(wt["hub_time"] - time.time()) < 60
    events = [(e["event"], e["addr"], e["value"]) for e in r["events"]]
    assert ("door", DOOR, True) in events
    assert ("sos", PENDANT, "press") in events
    assert events.count(("sos", PENDANT, "press")) == 1  # re-broadcasts count once
    c = r["counters"]
    assert c["unknown_adverts"] >= 1 and c["rejected"] == 0


def test_replayed_encrypted_advert_is_rejected(vhub, sim_only):
    enrol(vhub, [{"addr": PENDANT, "kind": "pendant", "key": KEY}])
    with vhub.world() as w:
        w.call("ble", op="press", addr=PENDANT, repeat=1)
        time.sleep(0.1)
        w.call("ble", op="press", addr=PENDANT, event="long_press", repeat=1)
        time.sleep(0.1)
        w.call("ble", op="replay", addr=PENDANT, back=2)  # the first press, captured and sent again
        time.sleep(0.3)
        r = hub_readings(vhub.port)
    sos = [e for e in r["events"] if e["event"] == "sos"]
    assert [e["value"] for e in sos] == ["press", "long_press"], r["events"]
    assert r["counters"]["rejected"] == 1
    assert any(e["event"] == "bthome_rejected" and "below the last accepted" in e["value"] for e in r["events"])


def test_oximeter_records_survive_disconnects(vhub, sim_only):
    enrol(vhub, [{"addr": OXI, "kind": "oximeter"}])
    radio = vhub.sup.parts["ble"]
    with vhub.world() as w:
        # 1st link drops in the middle of the transfer; 2nd after the records were
        # handed on but before the delete; 3rd completes. 5 records, each once.
        w.call("ble", op="misbehave", addr=OXI, what="disconnect_after", n=3)
        w.call("ble", op="store", addr=OXI, n=5)
        assert wait_until(lambda: radio.stats["connections"] >= 1 and not radio.conns, 10)
        w.call("ble", op="misbehave", addr=OXI, what="disconnect_after", n=7)
        assert wait_until(lambda: radio.devices[OXI].deleted == 5, 15)
        r = hub_readings(vhub.port)
    recs = [x for x in r["readings"] if x["uuid"] == 0x2A5E]
    assert len(recs) == 5, recs
    assert len({x["device_time"] for x in recs}) == 5
    assert all(x["from_storage"] for x in recs)
    assert r["counters"]["duplicates"] == 5
    assert radio.stats["connections"] >= 3


@pytest.mark.parametrize("kind,addr,measure,expect", [
    ("bp", BP, {"sys": 128, "dia": 84, "pulse": 66}, {150021: 128, 150022: 84, 150023: None, 149546: 66}),
    ("thermometer", THERMO, {"celsius": 37.2}, {150364: 37.2}),
])
def test_bp_and_thermometer(vhub, sim_only, kind, addr, measure, expect):
    enrol(vhub, [{"addr": addr, "kind": kind}])
    radio = vhub.sup.parts["ble"]
    with vhub.world() as w:
        w.call("ble", op="measure", addr=addr, **measure)
        assert wait_until(lambda: radio.devices[addr].sent >= 1)
        time.sleep(0.3)
        r = hub_readings(vhub.port)
    got = [x for x in r["readings"] if x["kind"] == kind]
    assert len(got) == 1 and obs(got[0]) == expect, r
    if kind == "bp":
        assert radio.devices[addr].bonded if hasattr(radio.devices[addr], "bonded") else radio.devices[addr].ltk
