"""Heap cost of the link layer on a virtual hub, and failover time.

    .venv/bin/python benchmarks/bench_link.py

Prints, measured inside the hub's 96 KiB heap (gc.mem_alloc after gc.collect):
what the board's emulation modules (network + socket, machine.UART: C in flash
on the chip) cost the firmware (0 since they are imported into the board's
reserve at start-up, decision 0005), and the
firmware's link layer (hemhub.link.manager + modem + codec.at, imported from
ROMFS, with a LinkManager and Modem built). Then the time from the access
point going away to the hub's route being cellular, with the short test timings.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hubctl.build import build  # noqa: E402
from hubctl.transport import HubConsole  # noqa: E402
from vhubtest import run_hub, write_config  # noqa: E402

CODE = """
import gc, asyncio  # asyncio: the application has it loaded already
gc.collect(); a0 = gc.mem_alloc()
import network, socket
gc.collect(); a1 = gc.mem_alloc()
from machine import UART
gc.collect(); a2 = gc.mem_alloc()
from hemhub.link import manager, modem
from hemhub.codec import at
gc.collect(); a3 = gc.mem_alloc()
m = manager.LinkManager({"wifi": {"ssid": "home", "psk": "x"}, "apn": "iot"}, network.WLAN(network.STA_IF),
                        modem.Modem(UART(2, 115200, rxbuf=512)), network.PPP(None))
gc.collect(); a4 = gc.mem_alloc()
print(a1 - a0, a2 - a1, a3 - a2, a4 - a3)
"""

LINK = {"check_ms": 100, "wifi_connect_ms": 1500, "backoff_ms": 200, "backoff_max_ms": 800,
        "modem_cmd_ms": 300, "modem_boot_ms": 800, "modem_reg_ms": 1000, "modem_pwrkey_ms": 120,
        "modem_guard_ms": 300, "ppp_ms": 1000}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build(Path(tmp) / "b")
        with run_hub(Path(tmp) / "hub", bundle) as rh:
            with HubConsole(rh.port) as con:
                net, uart, fw, objs = map(int, con.exec(CODE).split())
            print(f"board network+socket, charged to the firmware: {net} B; machine.UART: {uart} B")
            print(f"firmware link layer modules: {fw} B; LinkManager+Modem objects: {objs} B")
            with rh.world() as w:
                w.net_ap("home", psk="secret", rssi=-50)
                w.net_modem(boot_ms=100, pwrkey_ms=100, reg_ms=100)
            write_config(rh, {"wifi": {"ssid": "home", "psk": "secret"}, "apn": "iot", "link": LINK})
            times = []
            with rh.world() as w:
                for _ in range(5):
                    while w.net()["route"] != "wifi" or w.net()["modem"]["online"]:
                        time.sleep(0.02)
                    time.sleep(0.3)
                    t0 = time.monotonic()
                    w.net_ap("home", up=False)
                    while w.net()["route"] != "cellular":
                        time.sleep(0.01)
                    times.append(time.monotonic() - t0)
                    w.net_ap("home", up=True)
            times.sort()
            print(f"failover AP down -> route cellular, 5 runs: median {times[2] * 1000:.0f} ms, "
                  f"max {times[-1] * 1000:.0f} ms (modem off at first, test timings)")


if __name__ == "__main__":
    main()
