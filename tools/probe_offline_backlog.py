#!/usr/bin/env python3
"""Probe: can a hub build a backlog while it is offline? One virtual hub with
every device kind enrolled goes online, then loses WiFi and 4G; its oximeter
holds N stored records (RACP). Prints how many the hub took (journaled) within
the time given, and the hub's console lines about links and heap.

    HEMHUB_QSTR_POOLS=chip [HEMHUB_FIRMWARE_HEAP_KIB=N] .venv/bin/python tools/probe_offline_backlog.py [--records 40] [--seconds 90]

Nothing is asserted. HEMHUB_FIRMWARE_HEAP_KIB runs the firmware with another
heap than the project's 144 KiB, to measure the gap (the line printed first
says which); figures: docs/decisions/0004-heap-on-a-64-bit-interpreter.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hubctl.build import build
from hubctl.demo import VirtualFleet
from hubctl.vhub import interp

KINDS = ("oximeter", "scale", "pendant", "door")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=90)
    args = ap.parse_args()
    print(interp.heap_mode())
    with tempfile.TemporaryDirectory(prefix="hemhub-probe-") as tmp:
        bundle = build(Path(tmp) / "build")
        with VirtualFleet(Path(tmp) / "home") as vf:
            (h,) = vf.add_hubs(1, bundle)
            vf.provision([h])
            vf.enrol(h, kinds=KINDS)
            vf.configure(h)
            vf.wait_online(h, 60, memory_errors=3)
            mark = len(h.console_log())
            t0 = time.monotonic()
            left = vf.offline_backlog(h, args.records, args.seconds)
            print(f"offline {time.monotonic() - t0:.0f} s: the hub took {args.records - left} of "
                  f"{args.records} stored records")
            for line in h.console_log()[mark:].decode(errors="replace").splitlines():
                if line.startswith(("hemhub", "uplink", "MemoryError")):
                    print("  hub:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
