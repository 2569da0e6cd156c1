# Benchmark: serial bytes `hubctl flash` sends per byte of flash it writes, through
# esptool in ROM mode (--no-stub) to the mock ROM bootloader (tests/host/esp_rom_mock.py),
# and what that means in time on a real link at 115200 / 460800 / 921600 baud
# (10 bits per byte on the UART; ESP32 ROM erase and flash-write times not included).
#
#   .venv/bin/python tools/bench_flash.py [--app-bytes 1600000]
#
# The runtime stand-in is random bytes (incompressible: the worst case; a real
# MicroPython image deflates to roughly two thirds). Every other partition is
# written as erased blocks, which deflate to almost nothing.
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))

from esp_rom_mock import EspRomMock  # noqa: E402
from hubctl.flash import flash_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-bytes", type=int, default=1_600_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "runtime.bin"
        data = bytes([0xE9]) + os.urandom(a.app_bytes - 1)
        img.write_bytes(data)
        with EspRomMock() as m:
            t0 = time.monotonic()
            rep = flash_device(m.port, img, sha256=hashlib.sha256(data).hexdigest(), stub=False,
                               baud=115200, connect_attempts=2)
            wall = time.monotonic() - t0
            total_in = m.bytes_in
    print(f"runtime {rep.runtime_bytes} bytes (incompressible); flash covered {rep.bytes_written} bytes")
    for r in rep.regions:
        if r["wire_bytes"] > 8192 or r["what"] in ("ota_0", "factory", "partition table"):
            print(f"  {r['what']:<16} {r['bytes']:>9} flash bytes  {r['wire_bytes']:>9} serial bytes  "
                  f"{r['wire_bytes'] / r['bytes']:.4f} per flash byte")
    print(f"all regions: {rep.wire_bytes} serial bytes ({rep.wire_bytes / rep.bytes_written:.4f} per flash byte, "
          f"{rep.wire_bytes / rep.runtime_bytes:.3f} per runtime byte); with connecting: {total_in}")
    for baud in (115200, 460800, 921600):
        print(f"  at {baud:>6} baud: {total_in * 10 / baud:6.1f} s on the wire")
    print(f"through the mock on this machine: {wall:.1f} s")


if __name__ == "__main__":
    main()
