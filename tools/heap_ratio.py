#!/usr/bin/env python3
"""Measure: what the application's heap costs on a 32-bit MicroPython, against
the 64-bit interpreter the virtual hub runs.

    .venv/bin/python tools/heap_ratio.py [--json]

The virtual hub's interpreter (hubctl.vhub.runtime) is a 64-bit
build; the ESP32 is 32-bit. MicroPython's WebAssembly port is a 32-bit build
(4-byte words, 16-byte GC blocks, as on the chip) of nearly the same version, published
on the npm registry as ``@micropython/micropython-webassembly-pyscript``; this
script installs it under var/heap32 (Node.js and npm needed) and runs the same
workload in both:

1. the size of common objects (a bytearray(1), a 2-tuple, a 5-entry dict);
2. the application's modules imported in place from its ROMFS image, in the
   order the application imports them, as on the hub (bytecode stays in the
   image; function objects, dicts, qstrs are made on the heap). The hub's C
   modules (machine, network, tls, ...) are stubs of a few names, imported
   before the count starts.

It prints bytes per module on each and the ratio, and the qstr pools. Nothing is
asserted. Figures: docs/decisions/0004-heap-on-a-64-bit-interpreter.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import heap_report  # tools/, beside this script
from hubctl.build import build
from hubctl.vhub.interp import micropython_command

ROOT = Path(__file__).resolve().parents[1]
WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript@1.26.0"  # the release nearest the runtime (1.26.1)
WASM_DIR = ROOT / "var" / ("heap32-" + WASM_PACKAGE.rsplit("@", 1)[1])

# What the application imports, in its order (heap_report's list: asyncio is
# the port's own, not the application's), plus the modem driver a failover loads.
MODULES = tuple(m for m in heap_report.MODULES if m != "asyncio") + ("hemhub.link.modem",)

# The names the firmware takes from the ESP32's C modules at import time.
STUBS = {
    "machine.py": "PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5\n"
                  "class Pin:\n    IN = OUT = IRQ_RISING = IRQ_FALLING = PULL_UP = 0\n"
                  "class WDT: pass\nclass Timer: pass\nclass UART: pass\nclass RTC: pass\n"
                  "def reset_cause(): return 1\n",
    "network.py": "STA_IF = 0\nSTAT_IDLE, STAT_CONNECTING, STAT_WRONG_PASSWORD = 1000, 1001, 202\n"
                  "STAT_NO_AP_FOUND, STAT_GOT_IP = 201, 1010\nclass WLAN: pass\nclass PPP: pass\n",
    "tls.py": "PROTOCOL_TLS_CLIENT = 0\nCERT_REQUIRED = 2\nclass SSLContext: pass\n",
    "esp32.py": "class Partition: pass\n",
    "bluetooth.py": "class BLE: pass\nclass UUID: pass\n",
    "socket.py": "class socket: pass\ndef getaddrinfo(*a): pass\n",
    "cryptolib.py": "class aes: pass\n",
}

WORKLOAD = """
import gc, sys, vfs, micropython
IMG, STUBS = sys.argv[-2], sys.argv[-1]
def cost(make):
    gc.collect(); a = gc.mem_alloc(); x = [make(i) for i in range(100)]; gc.collect()
    return (gc.mem_alloc() - a) // 100
print("OBJ bytearray1", cost(lambda i: bytearray(1)))
print("OBJ tuple2", cost(lambda i: (i, i)))
print("OBJ dict5", cost(lambda i: {1: i, 2: i, 3: i, 4: i, 5: i}))
with open(IMG, "rb") as f:
    img = f.read()
vfs.mount(vfs.VfsRom(img), "/rom")
sys.path[:] = ["/rom", ".frozen", STUBS]  # ROMFS ahead of the runtime's frozen copy
import asyncio, json, binascii, hashlib, struct, time, os, random, array
import machine, tls, esp32, network, bluetooth, socket, cryptolib
gc.collect()
base = gc.mem_alloc()
for m in %r:
    __import__(m)
    gc.collect()
    a = gc.mem_alloc()
    print("MOD", m, a - base)
    base = a
micropython.qstr_info()
"""

NODE_RUNNER = """
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
const [script, img, stubs] = process.argv.slice(2);
const mp = await loadMicroPython({ heapsize: 4 * 1024 * 1024, stdout: (l) => console.log(l),
                                   stderr: (l) => console.error(l) });
mp.FS.mkdir("/w"); mp.FS.mkdir("/w/stubs");
mp.FS.writeFile("/w/app.romfs", fs.readFileSync(img));
for (const f of fs.readdirSync(stubs)) mp.FS.writeFile("/w/stubs/" + f, fs.readFileSync(path.join(stubs, f)));
mp.runPython("import sys\\nsys.argv[:] = ['work', '/w/app.romfs', '/w/stubs']\\n" + fs.readFileSync(script, "utf8"));
"""


def ensure_wasm() -> Path:
    """The 32-bit interpreter's package under var/heap32 (installed once, pinned)."""
    pkg = WASM_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    if (pkg / "micropython.mjs").is_file():
        return WASM_DIR
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"heap_ratio: {tool} is not installed; the 32-bit MicroPython here is its "
                          "WebAssembly port. Install Node.js (Debian: apt-get install nodejs npm).")
    WASM_DIR.mkdir(parents=True, exist_ok=True)
    (WASM_DIR / "package.json").write_text('{"private": true, "type": "module"}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--save-exact", WASM_PACKAGE],
                   cwd=WASM_DIR, check=True, stdout=subprocess.DEVNULL)
    return WASM_DIR


def parse(out: str) -> dict:
    objs = {m[1]: int(m[2]) for m in re.finditer(r"^OBJ (\S+) (-?\d+)$", out, re.M)}
    mods = {m[1]: int(m[2]) for m in re.finditer(r"^MOD (\S+) (-?\d+)$", out, re.M)}
    pool = re.search(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", out)
    if len(mods) != len(MODULES) or pool is None:
        raise SystemExit("heap_ratio: a run did not finish; its output was:\n" + out)
    return {"objects": objs, "modules": mods,
            "qstr": dict(zip(("pools", "qstrs", "string_bytes", "total_bytes"), map(int, pool.groups()), strict=True))}


def measure() -> dict:
    wasm = ensure_wasm()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = build(work / "build")
        stubs = work / "stubs"
        stubs.mkdir()
        for name, text in STUBS.items():
            (stubs / name).write_text(text)
        script = work / "workload.py"
        script.write_text(WORKLOAD % (MODULES,))
        runner = wasm / "run.mjs"
        runner.write_text(NODE_RUNNER)
        args = [str(script), str(bundle.romfs_image), str(stubs)]
        run64 = subprocess.run(micropython_command(heapsize="4M") + args, capture_output=True, text=True)
        run32 = subprocess.run(["node", str(runner)] + args, capture_output=True, text=True, cwd=wasm)
        return {"64-bit": parse(run64.stdout + run64.stderr), "32-bit": parse(run32.stdout + run32.stderr),
                "romfs_bytes": bundle.romfs_image.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    r = measure()
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    a, b = r["64-bit"], r["32-bit"]
    print(f"{'':28}{'64-bit':>9}{'32-bit':>9}{'ratio':>7}")
    for name in a["objects"]:
        x, y = a["objects"][name], b["objects"][name]
        print(f"object {name:21}{x:9d}{y:9d}{x / y:7.2f}")
    for m in MODULES:
        x, y = a["modules"][m], b["modules"][m]
        print(f"{m:28}{x:9d}{y:9d}{(x / y if y else 0):7.2f}")
    x, y = sum(a["modules"].values()), sum(b["modules"].values())
    print(f"{'all modules':28}{x:9d}{y:9d}{x / y:7.2f}")
    x, y = a["qstr"]["total_bytes"], b["qstr"]["total_bytes"]
    print(f"{'qstr pools (whole heap)':28}{x:9d}{y:9d}{x / y:7.2f}   "
          f"({a['qstr']['qstrs']} and {b['qstr']['qstrs']} qstrs)")
    print(f"ROMFS image: {r['romfs_bytes']} bytes; per-module figures jump where a qstr pool fills "
          "and the next one (twice the size) is made: read the total.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
