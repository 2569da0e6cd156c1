#!/usr/bin/env python3
"""Benchmark: serial-link efficiency of `hubctl deploy` against `mpremote cp`.

    .venv/bin/python tools/bench_deploy.py

Deploys the whole application bundle into an empty slot of a virtual hub with
every file sent over the console (no on-hub copies), counting every byte
written to the console (receiver program, digest listings, frames, acks
excluded as they flow the other way). Then writes the same files with
mpremote's own `cp` path (Transport.fs_writefile, what `mpremote cp` runs),
counted the same way. Prints application bytes per console byte for both and
the time each would take at 115200 and 921600 baud (8N1: 10 bits per byte,
line rate only; a real link adds the hub's processing time).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hubctl.build import build  # noqa: E402
from hubctl.deploy import _Counting, deploy  # noqa: E402
from hubctl.transport import HubConsole  # noqa: E402
from vhubtest import run_hub  # noqa: E402


def line_time(nbytes: int, baud: int) -> float:
    return nbytes * 10 / baud


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hemhub-bench-") as tmp:
        base = Path(tmp)
        bundle = build(base / "build")
        files = [(f["path"], (bundle.app_dir / f["path"]).read_bytes()) for f in bundle.manifest["files"]]
        app = sum(len(d) for _, d in files)
        with run_hub(base / "hub", bundle) as rh:
            t = time.monotonic()
            r = deploy(rh.port, bundle.dir, local_copy=False, verify_boot=False)
            ours_s = time.monotonic() - t
            with HubConsole(rh.port) as con:
                c = _Counting(con.transport.serial)
                dirs = sorted({"/cp/" + "/".join(p.split("/")[:i])
                               for p, _ in files for i in range(1, p.count("/") + 1)})
                con.exec("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
                         % (["/cp"] + dirs))
                c.count = 0
                t = time.monotonic()
                for path, data in files:
                    con.transport.fs_writefile(f"/cp/{path}", data)
                cp_s = time.monotonic() - t
                cp_bytes = c.count
                c.close()
    ours = r.console_bytes
    print(f"application: {app} bytes in {len(files)} .mpy files (+ manifest.json, {r.app_bytes_sent} bytes sent)")
    print(f"hubctl deploy: {ours} console bytes -> {r.app_bytes_sent / ours:.3f} application bytes per console byte"
          f" ({ours_s:.1f} s on the virtual hub, slot fill + verify + switch)")
    print(f"mpremote cp:   {cp_bytes} console bytes -> {app / cp_bytes:.3f} application bytes per console byte"
          f" ({cp_s:.1f} s on the virtual hub)")
    for baud in (115200, 921600):
        print(f"  at {baud} baud (line rate): deploy {line_time(ours, baud):.1f} s, "
              f"mpremote cp {line_time(cp_bytes, baud):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
