#!/usr/bin/env python3
"""Benchmark: virtual hub boot time, heap after boot, application size.

    .venv/bin/python tools/bench_boot.py [--runs N]

Prints:
  * time from `hubctl vhub run DIR --detach` to the first status reply over the
    console (what a technician waits for), over N cold starts;
  * heap used by the running application (from its own health snapshot), and
    how much of the 96 KiB heap the board emulation holds (C code on an ESP32);
  * size of the application bundle and of the installed app partition.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hubctl.build import build
from hubctl.transport import HubConsole
from hubctl.vhub.hubdir import HubDir
from hubctl.vhub.interp import BOARD_HEAP_RESERVE, ROMFS_WINDOW
from hubctl.vhub.world import WorldClient

HUBCTL = str(Path(sys.executable).parent / "hubctl")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hemhub-bench-") as tmp:
        bundle = build(Path(tmp) / "build")
        romfs_bytes = bundle.romfs_image.stat().st_size
        hub = HubDir.create(Path(tmp) / "hub", bundle)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([HUBCTL, "vhub", "run", str(hub.path), "--detach"], check=True,
                           capture_output=True)
            port = hub.console_file.read_text().strip()
            with HubConsole(port) as con:
                con.call("service", "status_json")
            times.append(time.perf_counter() - t0)
            subprocess.run([HUBCTL, "vhub", "stop", str(hub.path)], check=True, capture_output=True)

        subprocess.run([HUBCTL, "vhub", "run", str(hub.path), "--detach"], check=True,
                       capture_output=True)
        port = hub.console_file.read_text().strip()
        with HubConsole(port) as con:
            con.exec("import json\nwith open('/data/config.json','w') as f:\n json.dump({'health_persist_s': 1}, f)\n")
            raw = con.call("service", "status_json")
        time.sleep(3.5)  # the application runs and persists a health snapshot
        with HubConsole(port) as con:
            snap = json.loads(con.exec("print(open('/data/health.json').read())"))
        with WorldClient.for_hub(hub) as w:
            emu = w.state()["emulation_heap"]
        subprocess.run([HUBCTL, "vhub", "stop", str(hub.path)], check=True, capture_output=True)

    kib = 1024
    print("virtual hub boot (hubctl vhub run --detach -> first status reply)")
    print(f"  runs {len(times)}: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s")
    print("heap (the firmware's 96 KiB; docs/decisions/0001-virtual-hub-heap.md)")
    print(f"  running application: {snap['heap_free'] / kib:.1f} KiB of the firmware's 96 KiB free")
    print(f"  of which board emulation:        {emu / kib:.1f} KiB, in its pinned "
          f"{BOARD_HEAP_RESERVE / kib:.0f} KiB reserve (C modules on an ESP32)")
    board = BOARD_HEAP_RESERVE + ROMFS_WINDOW
    print(f"  firmware's own share:            {(snap['heap_used'] - board) / kib:.1f} KiB of 96 KiB")
    print(f"  console session after soft reset: {(raw['heap_total'] - raw['heap_free'] - board) / kib:.1f} KiB firmware")
    print("application size")
    print(f"  bundle: {bundle.app_bytes} bytes in {len(bundle.manifest['files'])} .mpy files, "
          f"ROMFS image {romfs_bytes} bytes")
    print(f"  app partition used: {raw['flash']['app']['used'] // kib} KiB of "
          f"{raw['flash']['app']['total'] // kib} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
