"""Scripting a virtual hub's world from Python (tests, benches) or the CLI.

    with WorldClient.for_hub("hubs/h1") as w:
        w.pin(25, 1)          # the door opens (reed released: line goes high)
        w.power_cut()         # pull the plug and put it back
        w.state()["boot_count"]

Commands (one JSON object per line over DIR/world.sock; see docs/vhub.md):
  {"cmd": "pin", "gpio": N, "level": 0|1}       drive an input line
  {"cmd": "power", "state": "on"|"off"|"cut", "off_ms": N}
  {"cmd": "reset"}                               press the reset button
  {"cmd": "clock", "set": EPOCH_SECONDS}         set the hub's RTC (omit "set" to read)
  {"cmd": "state"}                               power, boots, pins, watchdog, console
  {"cmd": "stop"}                                stop the supervisor
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from ..errors import HubStateError
from .hubdir import HubDir


class WorldClient:
    def __init__(self, sock_path: Path, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(sock_path))
        except OSError as e:
            self.sock.close()
            raise HubStateError(f"The virtual hub is not running (no world at {sock_path}: {e.strerror}).",
                                hint="Start it with: hubctl vhub run DIR") from None
        self.sock.sendall(b'{"hello":"client"}\n')
        self._f = self.sock.makefile("rb")

    @classmethod
    def for_hub(cls, hub: HubDir | str | Path, timeout: float = 30.0) -> WorldClient:
        h = hub if isinstance(hub, HubDir) else HubDir.open(hub)
        return cls(h.world_socket, timeout)

    def __enter__(self) -> WorldClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def call(self, cmd: str, **args) -> dict:
        msg = {"cmd": cmd, **args}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        line = self._f.readline()
        if not line:
            raise HubStateError("The virtual hub's world closed the connection.")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise HubStateError(f"world command {cmd} failed: {reply.get('error')}")
        return reply

    # -- conveniences -----------------------------------------------------------------
    def pin(self, gpio: int, level: int) -> None:
        self.call("pin", gpio=gpio, level=level)

    def power_cut(self, off_ms: int | None = 200) -> None:
        self.call("power", state="cut", off_ms=off_ms)

    def power_off(self) -> None:
        self.call("power", state="off")

    def power_on(self) -> None:
        self.call("power", state="on")

    def reset(self) -> None:
        self.call("reset")

    def state(self) -> dict:
        return self.call("state")

    def stop(self) -> None:
        self.call("stop")

    # -- the radio (docs/vhub.md, "Radio") -------------------------------------------------
    def ble(self, op: str, **args) -> dict:
        return self.call("ble", op=op, **args)

    def ble_add(self, kind: str, addr: str | None = None, **opts) -> dict:
        return self.ble("add", kind=kind, addr=addr, **opts)["device"]

    def ble_measure(self, addr: str, **values) -> None:
        self.ble("measure", addr=addr, **values)

    def ble_door(self, addr: str, open: bool = True) -> None:
        self.ble("door", addr=addr, open=open)

    def ble_press(self, addr: str, event: str = "press") -> None:
        self.ble("press", addr=addr, event=event)

    # -- the network (docs/vhub.md, "Network") ------------------------------------------------
    def net(self, op: str = "state", **args) -> dict:
        return self.call("net", op=op, **args)

    def net_ap(self, ssid: str, **settings) -> dict:
        """Add or change an access point: psk, rssi, channel, up."""
        return self.net("ap", ssid=ssid, **settings)["ap"]

    def net_link(self, name: str, **settings) -> dict:
        """Cut, slow or make lossy one link's path: cut, latency_ms, loss."""
        return self.net("link", name=name, **settings)["link"]

    def net_modem(self, **settings) -> dict:
        """The modem: sim, pin, reg, csq, apn, fault, drop_carrier, pwrkey_ms, boot_ms, reg_ms."""
        return self.net("modem", **settings)["modem"]

    def net_host(self, name: str, ip: str = "127.0.0.1") -> dict:
        """A name the hub's getaddrinfo resolves."""
        return self.net("host", name=name, ip=ip)

    def wait_ready(self, timeout: float = 10.0) -> dict:
        """Wait until the interpreter is up, connected to the world, and its board
        start-up done (boot.py is next)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if st["ready"]:
                return st
            if time.monotonic() > deadline:
                raise HubStateError(f"The virtual hub did not come up within {timeout:.0f} s.")
            time.sleep(0.02)
