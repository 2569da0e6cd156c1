#!/usr/bin/env python3
"""Report: the firmware's heap on a virtual hub running the whole application.

    .venv/bin/python tools/heap_report.py [--seconds N] [--modules-only [--modules A,B] [--by-type] | --app-only]

Builds the firmware, creates a virtual hub (96 KiB for the firmware: the board
reserve is pinned, docs/decisions/0001-virtual-hub-heap.md), provisions its
identity with a throwaway CA (hubctl.ca, hubctl.provision), starts a real
Mosquitto (hubctl.broker) and a stand-in fleet that acks every record, and
configures WiFi + APN, three enrolled BLE peripherals and the broker. Then it
prints, without asserting anything:

1. import cost per module: in one fresh interpreter, each module of the
   application imported in the order the application imports it (bytes of heap
   and qstrs each adds; ``gc.collect`` before and after), and each on its own in
   a fresh interpreter (itself plus what it imports that was not loaded yet);
2. the running application: started from the raw REPL exactly as main.py
   starts it, with a sampler task that collects every 50 ms. Free heap after
   start-up (link up, TLS + MQTT session up, nothing else happening), the
   lowest free heap while a BLE link to the scale, door alarms, signing,
   publishing and acks happen, and at the end the largest free block and the
   qstr pool (micropython.mem_info / qstr_info).

With ``--modules-only --by-type`` it prints instead what each import leaves on
the heap by the GC's type letter (function, str, tuple, dict, untyped tables),
from the heap map before and after it (docs/decisions/0004, session-10 addendum).

Figures and the command: docs/decisions/0003-application-heap.md.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hubctl import broker as brk  # noqa: E402
from hubctl import ca  # noqa: E402
from hubctl import provision as pv  # noqa: E402
from hubctl.build import build  # noqa: E402
from hubctl.transport import HubConsole  # noqa: E402
from vhubtest import run_hub, write_config  # noqa: E402

SSID, PSK, APN = "home", "secret-psk", "iot.test"
SCALE, DOOR, PENDANT = "C0:FF:EE:00:00:01", "A4:C1:38:00:00:05", "A4:C1:38:00:00:06"
KEY = "231d39c1d7cc1ab1aee224cd096db932"
DOOR_GPIO = 25

# What the application imports, in the order it imports them (app.py, then what
# its tasks import once they run: the record path, the link manager, the uplink).
MODULES = (
    "asyncio", "hemhub.config", "hemhub.health", "hemhub.led", "hemhub.watchdog",
    "hemhub.sense", "hemhub.sense.gpio", "hemhub.sense.sink", "hemhub.journal",
    "hemhub.record", "hemhub.recorder", "hemhub.identity", "hemhub.sense.central",
    "hemhub.sense.keys", "hemhub.link.manager", "hemhub.uplink", "hemhub.uplink.forward",
    "hemhub.uplink.tls", "hemhub.app",
)

_INFO = ("import gc, micropython\n"
         "def _info():\n"
         " micropython.qstr_info()\n"
         " micropython.mem_info()\n")

# The application started as main.py starts it, plus a sampler task (its own
# cost, a few hundred bytes, is in the figures).
_PROBE = """
import asyncio, gc, micropython, time
_arena = [bytearray(20 * 1024)]  # as main.py keeps it
from hemhub import app, config
_low = [1 << 30, 0]
_marks = []
async def _sampler(seconds):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < seconds * 1000:
        gc.collect()
        f = gc.mem_free()
        if f < _low[0]:
            _low[0] = f
            _low[1] = time.ticks_diff(time.ticks_ms(), t0)
        await asyncio.sleep_ms(50)
async def _probe(seconds, settle):
    asyncio.create_task(app._main(config.load(), _arena))
    await asyncio.sleep(settle)
    gc.collect()
    _marks.append(gc.mem_free())
    print("HEAP started", gc.mem_free())
    await _sampler(seconds)
try:
    asyncio.run(_probe(%d, %d))
except MemoryError as e:
    print("HEAP memoryerror", e)
gc.collect()
print("HEAP low", _low[0], _low[1])
print("HEAP end", gc.mem_free())
micropython.qstr_info()
micropython.mem_info()
"""


class Fleet:
    """The fleet's side on the service listener: counts records and acks each."""

    def __init__(self, home: Path, port: int):
        import cbor2
        import paho.mqtt.client as mqtt

        cert, key, root = brk.service_client_cert(home)
        self.status: list[dict] = []
        self.records = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="heap-report", clean_session=True)
        ctx = ssl.create_default_context(cafile=str(root))
        ctx.load_cert_chain(str(cert), str(key))
        c.tls_set_context(ctx)

        def on_message(cl, ud, msg):
            _, hub, kind = msg.topic.split("/", 2)
            if kind == "status":
                self.status.append(json.loads(msg.payload))
                return
            seq = cbor2.loads(cbor2.loads(msg.payload).value[2])[2]
            self.records += 1
            cl.publish(f"hemhub/{hub}/ack", cbor2.dumps({"acks": [[seq, seq]], "time": int(time.time())},
                                                        canonical=True), qos=1)

        c.on_message = on_message
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(
            [("hemhub/+/rec", 1), ("hemhub/+/alarm", 1), ("hemhub/+/status", 1)])
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.c = c

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _parse_info(out: str) -> dict:
    """Figures from micropython.qstr_info() and mem_info() output."""
    fig = {}
    m = re.search(r"n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", out)
    if m:
        fig["n_qstr"], fig["qstr_data"], fig["qstr_total"] = map(int, m.groups())
    m = re.search(r"max free sz: (\d+)", out)
    if m:
        fig["max_free_block"] = int(m.group(1)) * 16  # in 16-byte blocks (64-bit Unix port)
    return fig


def module_costs(rh, modules) -> list[tuple[str, int, int, int]]:
    """[(module, heap bytes added in order, qstrs added in order, heap on its own)]."""
    step = ("gc.collect()\n_a = gc.mem_free()\n"
            "import {m}\ngc.collect()\nprint('COST', _a - gc.mem_free())\n_info()\n")
    rows = []
    with HubConsole(rh.port) as con:
        out = con.exec(_INFO + "gc.collect()\nprint('FREE', gc.mem_free())\n_info()\n")
        start_free = int(re.search(r"FREE (\d+)", out).group(1))
        start = _parse_info(out)
        last_q = start["n_qstr"]
        for m in modules:
            try:
                out = con.exec(step.format(m=m))
            except Exception as e:  # noqa: BLE001 - a MemoryError is a figure too
                rows.append([m, None, None, str(e).strip().splitlines()[-1]])
                break
            q = _parse_info(out)["n_qstr"]
            rows.append([m, int(re.search(r"COST (-?\d+)", out).group(1)), q - last_q, None])
            last_q = q
        out = con.exec("gc.collect()\nprint('FREE', gc.mem_free())\n_info()\n")
        end = _parse_info(out)
        end["free"] = int(re.search(r"FREE (\d+)", out).group(1))
    for row in rows:
        with HubConsole(rh.port) as con:
            try:
                out = con.exec("import gc\ngc.collect()\n_a = gc.mem_free()\n"
                               f"import {row[0]}\ngc.collect()\nprint('COST', _a - gc.mem_free())\n")
                row[3] = int(re.search(r"COST (-?\d+)", out).group(1))
            except Exception as e:  # noqa: BLE001
                row[3] = str(e).strip().splitlines()[-1]
    start["free"] = start_free
    return rows, start, end


def run_app(rh, fleet: Fleet, seconds: int, settle: int) -> dict:
    """The application under the probe while the world makes it work."""
    result: dict = {}

    def probe():
        with HubConsole(rh.port) as con:
            try:
                result["out"] = con.exec(_PROBE % (seconds, settle), timeout=seconds + settle + 60)
            except Exception as e:  # noqa: BLE001
                result["out"] = getattr(e, "args", [""])[0] if e.args else ""
                result["err"] = str(e)

    t = threading.Thread(target=probe)
    t.start()
    deadline = time.monotonic() + settle + 20
    while not any(s.get("online") for s in fleet.status) and time.monotonic() < deadline:
        time.sleep(0.1)
    online = any(s.get("online") for s in fleet.status)
    time.sleep(max(0.0, settle - 1))
    with rh.world() as w:
        w.ble_measure(SCALE, kg=72.4)  # a BLE link: connect, GATT, indication, sign
        for _ in range(3):
            w.pin(DOOR_GPIO, 1)
            time.sleep(0.15)
            w.pin(DOOR_GPIO, 0)
            time.sleep(0.15)
        w.ble_press(PENDANT)
    t.join()
    out = result.get("out", "")
    fig = _parse_info(out)
    for key in ("started", "end"):
        m = re.search(rf"HEAP {key} (\d+)", out)
        fig[key] = int(m.group(1)) if m else None
    m = re.search(r"HEAP low (\d+) (\d+)", out)
    fig["low"], fig["low_at_ms"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    fig["online"] = online
    fig["records_acked"] = fleet.records
    fig["status_heap_free"] = [s.get("heap_free") for s in fleet.status if "heap_free" in s]
    fig["memoryerror"] = "MemoryError" in out or "memoryerror" in out
    fig["tail"] = out[-1500:] if fig["memoryerror"] or fig["started"] is None else ""
    fig["events"] = [ln for ln in out.splitlines() if ln.startswith(("uplink:", "hemhub link:"))]
    if "err" in result:
        fig["tail"] = result["err"][-1500:]
    return fig


def configure(rh, home: Path, broker_port: int, peripherals: bool = True) -> None:
    with rh.world() as w:
        w.call("clock", set=int(time.time()))
        w.net_ap(SSID, psk=PSK, rssi=-55)
        w.net_modem(boot_ms=100, pwrkey_ms=100, reg_ms=100)
        w.ble_add("scale", addr=SCALE)
        w.ble_add("door", addr=DOOR)
        w.ble_add("pendant", addr=PENDANT, key=KEY)
    r = pv.provision(rh.port, pv.Settings(site="heap report", broker=f"127.0.0.1:{broker_port}",
                                          wifi_ssid=SSID, wifi_psk=PSK, apn=APN), home=home)
    if not r.ok:
        raise SystemExit(f"provisioning failed: {r.error}")
    with HubConsole(rh.port) as con:
        cfg = json.loads(con.exec("print(open('/data/config.json').read())"))
    cfg["peripherals"] = [] if not peripherals else [{"addr": SCALE, "kind": "scale", "key": None, "serves": "patient"},
                          {"addr": DOOR, "kind": "door", "key": None, "serves": "patient"},
                          {"addr": PENDANT, "kind": "pendant", "key": KEY, "serves": "patient"}]
    write_config(rh, cfg)


# micropython.mem_info(1) draws the heap one character per GC block: the head of
# an allocation is a letter (its type, as the GC knows it: B function, S str,
# T tuple, D dict, M module, A bytearray, L list, h anything else: dict and
# constant tables, qstr tables, raw code), "=" its continuation, "." free.
GC_TYPES = "hBSTDMALF"
_MAP_LINE = re.compile(r"^([0-9a-f]{8}): (\S*)", re.M)


def gc_heads(mem_info_1: str) -> tuple[int, dict[int, tuple[str, int]]]:
    """(bytes per block, {block: (type letter, blocks)} of every allocation) of a
    mem_info(1) map."""
    lines = [(int(a, 16), row) for a, row in _MAP_LINE.findall(mem_info_1)]
    if len(lines) < 2:
        raise ValueError("no heap map in the hub's mem_info(1) output")
    block = (lines[1][0] - lines[0][0]) // len(lines[0][1])  # bytes per block, from the labels
    cells = {}
    for addr, row in lines:
        for i, c in enumerate(row):
            cells[addr // block + i] = c
    heads = {}
    for k in sorted(cells):
        if cells[k] not in ".=":
            n = 1
            while cells.get(k + n) == "=":
                n += 1
            heads[k] = (cells[k], n)
    return block, heads


def module_types(rh, modules) -> tuple[list, int]:
    """([(module, {type letter: bytes}, freed bytes)], bytes per block): the
    allocations each import leaves on the heap (after gc.collect), by GC type,
    in the given order, and what it freed (tables that grew were moved)."""
    rows = []
    with HubConsole(rh.port) as con:
        dump = "gc.collect()\nmicropython.mem_info(1)\n"
        block, before = gc_heads(con.exec("import gc, micropython\n" + dump))
        for m in modules:
            _, after = gc_heads(con.exec(f"import {m}\n" + dump))
            by = dict.fromkeys(GC_TYPES, 0)
            for k, (c, n) in after.items():
                if before.get(k) != (c, n):
                    by[c] = by.get(c, 0) + n * block
            freed = sum(n * block for k, (c, n) in before.items() if after.get(k) != (c, n))
            rows.append((m, by, freed))
            before = after
    return rows, block


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15, help="how long the probe samples (default 15)")
    ap.add_argument("--settle", type=int, default=8, help="seconds from start to the start-up figure")
    ap.add_argument("--modules-only", action="store_true")
    ap.add_argument("--app-only", action="store_true")
    ap.add_argument("--by-type", action="store_true",
                    help="with --modules-only: what each import leaves on the heap, by the GC's type letter")
    ap.add_argument("--modules", metavar="A,B,...", type=lambda s: s.split(","), default=MODULES,
                    help="import these modules, in this order, instead of the application's list")
    ap.add_argument("--no-peripherals", action="store_true",
                    help="enrol no BLE peripheral (the wired door contact still makes alarms)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hemhub-heap-") as tmp:
        base = Path(tmp)
        bundle = build(base / "build")
        home = base / "home"
        ca.init_ca(home)
        b = brk.Broker(home, port=brk.free_port())
        b.start()
        try:
            with run_hub(base / "hub", bundle) as rh:
                configure(rh, home, b.port, peripherals=not args.no_peripherals)
                if args.by_type:
                    rows, block = module_types(rh, args.modules)
                    print(f"allocations each import leaves, by GC type (bytes; {block}-byte blocks; "
                          "h = dict, constant and qstr tables, raw code; the console's own\n"
                          "exec leaves ~64 B of A per row; freed: blocks the import let go, e.g. a table that grew):")
                    print(f"  {'module':28} {'new':>6} " + " ".join(f"{c:>6}" for c in GC_TYPES) + f" {'freed':>6}")
                    for m, by, freed in rows:
                        print(f"  {m:28} {sum(by.values()):6} " + " ".join(f"{by[c]:6}" for c in GC_TYPES)
                              + f" {freed:6}")
                    tot = {c: sum(by[c] for _, by, _f in rows) for c in GC_TYPES}
                    print(f"  {'total':28} {sum(tot.values()):6} " + " ".join(f"{tot[c]:6}" for c in GC_TYPES)
                          + f" {sum(f for _, _b, f in rows):6}")
                    return 0
                if not args.app_only:
                    rows, start, end = module_costs(rh, args.modules)
                    print("import cost, in the application's order, one interpreter "
                          f"(free at start {start['free']} B, qstrs {start['n_qstr']}, "
                          f"qstr pool {start['qstr_total']} B):")
                    print(f"  {'module':28} {'heap B':>7} {'qstrs':>6} {'alone B':>8}")
                    for m, cost, q, alone in rows:
                        print(f"  {m:28} {cost if cost is not None else '-':>7} "
                              f"{q if q is not None else '-':>6} {alone:>8}")
                    print(f"  free after all: {end['free']} B; qstrs {end['n_qstr']}, "
                          f"qstr pool {end['qstr_total']} B (string data {end['qstr_data']} B); "
                          f"largest free block {end['max_free_block']} B")
                if not args.modules_only:
                    fleet = Fleet(home, b.service_port)
                    try:
                        fig = run_app(rh, fleet, args.seconds, args.settle)
                    finally:
                        fleet.close()
                    print("the running application (provisioned, WiFi + APN, broker, "
                          f"{'no' if args.no_peripherals else '3'} BLE peripherals):")
                    print(f"  uplink online: {fig['online']}; records acked by the fleet: "
                          f"{fig['records_acked']}; MemoryError: {fig['memoryerror']}")
                    print(f"  free after start-up + gc: {fig['started']} B")
                    print(f"  lowest free (gc every 50 ms, BLE link + alarms + signing + TLS): "
                          f"{fig['low']} B at {fig['low_at_ms']} ms")
                    print(f"  free at the end: {fig['end']} B; largest free block "
                          f"{fig.get('max_free_block')} B; qstrs {fig.get('n_qstr')}, "
                          f"qstr pool {fig.get('qstr_total')} B")
                    print(f"  heap_free in the hub's status messages: {fig['status_heap_free']}")
                    for ln in fig["events"][:12]:
                        print("  hub: " + ln)
                    if fig["tail"]:
                        print("  console tail:\n" + fig["tail"])
        finally:
            b.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
