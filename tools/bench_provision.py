#!/usr/bin/env python3
"""Benchmark: wall time of `hubctl provision` on virtual hubs.

    .venv/bin/python tools/bench_provision.py [--runs N]

Prints the wall time to provision one virtual hub (all seven steps, the
console sessions included; N fresh hubs, one after another) and to provision a
batch of 4 in parallel with `--ports` (one process, one thread per hub), on
this machine. Step 5 (broker self-test) is skipped: no broker or network link
in this bench. Hubs boot before the clock starts (a technician plugs them in
first). Targets (issue 6): under 30 s per hub, under 60 s for a batch of 4.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hubctl import ca  # noqa: E402
from hubctl import provision as pv  # noqa: E402
from hubctl.build import build  # noqa: E402
from vhubtest import run_hub  # noqa: E402

SETTINGS = pv.Settings(site="bench", broker="127.0.0.1:8883")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hemhub-bench-") as tmp:
        base = Path(tmp)
        bundle = build(base / "build")
        ca.init_ca(base / "home")
        single = []
        for i in range(args.runs):
            with run_hub(base / f"one{i}", bundle) as rh:
                t = time.monotonic()
                r = pv.provision(rh.port, SETTINGS, home=base / "home", selftest=False)
                single.append(time.monotonic() - t)
                if not r.ok:
                    print(f"provisioning failed: {r.error}")
                    return 1
        steps = {s["name"]: s["result"] for s in r.steps}
        with contextlib.ExitStack() as stack:
            hubs = [stack.enter_context(run_hub(base / f"batch{i}", bundle)) for i in range(4)]
            t = time.monotonic()
            results = pv.provision_many([h.port for h in hubs], SETTINGS, home=base / "home",
                                        selftest=False)
            batch = time.monotonic() - t
        ok = sum(r.ok for r in results)
    print(f"provision one virtual hub (runs {args.runs}): median {statistics.median(single):.2f} s, "
          f"min {min(single):.2f} s, max {max(single):.2f} s")
    print(f"  broker self-test: {steps['broker self-test']}")
    print(f"provision a batch of 4 in parallel: {batch:.2f} s wall ({ok} of 4 provisioned), "
          f"{batch / 4:.2f} s per hub")
    return 0 if ok == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
