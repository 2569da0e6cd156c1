#!/usr/bin/env python3
"""Benchmark: how fast a wired door event reaches the hub's sensing layer.

    .venv/bin/python tools/bench_gpio.py [--edges N]

Two measurements on a virtual hub (Unix port, 96 KiB heap):

1. In the running application: the world toggles GPIO 25 (door) N times,
   100 ms apart; each event in service.events_json carries latency_ms, the
   hub's own ticks from the IRQ handler noting the edge to the event being
   recorded by the application (debounce included). Hub clock only.

2. Host round trip: on the hub (raw REPL, application stopped) a script runs
   hemhub.sense.gpio with an emit callback that prints the event at once;
   the host times from its world `pin` request to reading that line on the
   console. This adds the world socket, the interpreter's IRQ thread and
   micropython.schedule in front, and the console pty behind: an upper bound
   on the in-hub path. Run with the default 30 ms debounce and with 0 ms to
   show the path's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hubctl.build import build
from hubctl.transport import HubConsole
from hubctl.vhub.hubdir import HubDir
from hubctl.vhub.world import WorldClient

HUBCTL = str(Path(sys.executable).parent / "hubctl")
DOOR = 25

_HUB_SCRIPT = """
import asyncio, time
from hemhub.sense import gpio
def emit(ev, t, src):
    print('EV', ev, time.ticks_diff(time.ticks_ms(), t))
async def main():
    gpio.start(emit, %d, 10000)
    print('READY')
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return (f"median {statistics.median(xs):.1f} ms, p95 {p95:.1f} ms, "
            f"min {xs[0]:.1f} ms, max {xs[-1]:.1f} ms (n={len(xs)})")


def _wait_app(hub: HubDir) -> None:
    with WorldClient.for_hub(hub) as w:
        w.wait_ready(15)
        deadline = time.monotonic() + 15
        while w.state()["pins"].get("2") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(0.5)


def in_app(hub: HubDir, port: str, edges: int) -> list[float]:
    _wait_app(hub)
    with WorldClient.for_hub(hub) as w:
        level = w.state()["pins"].get(str(DOOR), 0)
        for _ in range(edges):
            level ^= 1
            w.pin(DOOR, level)
            time.sleep(0.1)
        w.pin(DOOR, 0)  # leave the door closed (one more event, not counted)
        time.sleep(0.1)
    with HubConsole(port, soft_reset=False) as con:
        snap = con.call("service", "events_json")
    return [float(e["latency_ms"]) for e in snap["events"][:edges]]


def round_trip(hub: HubDir, port: str, edges: int, debounce_ms: int) -> tuple[list[float], list[float]]:
    host, hub_side = [], []
    with HubConsole(port) as con, WorldClient.for_hub(hub) as w:
        t = con.transport
        t.exec_raw_no_follow(_HUB_SCRIPT % debounce_ms)
        t.read_until(1, b"READY\r\n", timeout=10)
        level = 0
        w.pin(DOOR, level)
        time.sleep(0.1)
        for _ in range(edges):
            level ^= 1
            t0 = time.perf_counter()
            w.pin(DOOR, level)
            line = t.serial.readline()
            dt = (time.perf_counter() - t0) * 1000
            if not line.startswith(b"EV "):
                raise SystemExit(f"unexpected console output: {line!r}")
            host.append(dt)
            hub_side.append(float(line.split()[2]))
            time.sleep(0.05)
        t.serial.write(b"\x03")  # stop the script; back at the raw REPL
        t.read_until(1, b">", timeout=5)
    return host, hub_side


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=int, default=16, help="door edges per measurement (default 16)")
    args = ap.parse_args()
    edges = min(args.edges, 16)  # the application's ring keeps 16
    with tempfile.TemporaryDirectory(prefix="hemhub-bench-") as tmp:
        bundle = build(Path(tmp) / "build")
        hub = HubDir.create(Path(tmp) / "hub", bundle)
        subprocess.run([HUBCTL, "vhub", "run", str(hub.path), "--detach"], check=True, capture_output=True)
        try:
            port = hub.console_file.read_text().strip()
            app = in_app(hub, port, edges)
            rt30 = round_trip(hub, port, args.edges, 30)
            rt0 = round_trip(hub, port, args.edges, 0)
        finally:
            subprocess.run([HUBCTL, "vhub", "stop", str(hub.path)], check=True, capture_output=True)
    print("wired door contact, virtual hub (Unix port, -X heapsize=96K)")
    print(f"  in the application, edge IRQ -> event recorded (30 ms debounce): {_fmt(app)}")
    print("  host round trip, world pin request -> event line on the console:")
    print(f"    debounce 30 ms: {_fmt(rt30[0])}")
    print(f"      of which in the hub (edge IRQ -> emit): {_fmt(rt30[1])}")
    print(f"    debounce  0 ms: {_fmt(rt0[0])}")
    print(f"      of which in the hub (edge IRQ -> emit): {_fmt(rt0[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
