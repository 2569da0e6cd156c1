"""The virtual hub's network: WiFi access points, the cellular modem, and one
world-controlled TCP proxy path per link.

A world part (``sup.parts["net"]``). The board's ``network`` module asks here
for the station's state (``net_wlan``) and PPP's (``net_ppp``); its ``socket``
module resolves names with ``net_route``, which answers with a proxy listener
on 127.0.0.1 for that destination; ``machine.UART`` sends what the hub
transmits with ``net_uart_w`` and receives the modem's bytes as
``{"ev": "uart", "id": N, "h": hex}`` events.

Routing follows lwIP's default netif on the ESP32: the WiFi station while it
holds an IP address, else PPP while it is up, else nothing. A connection is
bound to the link that carried it when it was accepted; when that link goes
down or is cut, its connections are reset, as lwIP aborts the connections of a
netif that loses its address. Each link can be cut, slowed (``latency_ms``,
one way, per chunk) and made lossy (``loss``: the chance that a chunk is lost
once and retransmitted after a 200 ms RTO, which is what loss means to TCP).

Scripted through ``{"cmd": "net", "op": ...}`` (docs/vhub.md, section "Network").
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import deque

from .modem import ModemSim

# ESP32 port network.WLAN status codes (ESP-IDF wifi_err_reason_t for failures)
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_BEACON_TIMEOUT, STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD = 200, 201, 202
EAI_FAIL = -202  # what lwIP's getaddrinfo failure looks like from MicroPython on the ESP32
RTO_S = 0.2


class AccessPoint:
    def __init__(self, ssid: str, psk: str | None, rssi: int = -55, channel: int = 6, up: bool = True, n: int = 1):
        self.ssid, self.psk, self.rssi, self.channel, self.up = ssid, psk, rssi, channel, up
        self.bssid = bytes((0x02, 0x48, 0x48, 0x00, 0x00, n & 0xFF))
        self.subnet = 1 + (n % 250)

    def summary(self) -> dict:
        return {"ssid": self.ssid, "rssi": self.rssi, "channel": self.channel, "up": self.up,
                "secured": bool(self.psk), "bssid": self.bssid.hex(":")}


class Link:
    def __init__(self, name: str):
        self.name = name
        self.cut = False
        self.latency_ms = 0
        self.loss = 0.0
        self.conns: set[_Conn] = set()
        self.stats = {"connections": 0, "refused": 0, "reset": 0, "bytes_up": 0, "bytes_down": 0, "lost_chunks": 0}

    def summary(self) -> dict:
        return {"cut": self.cut, "latency_ms": self.latency_ms, "loss": self.loss, "open": len(self.conns),
                **self.stats}


def _rst(s: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): the peer sees a reset, not an orderly EOF."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class _Conn:
    """One proxied TCP connection: hub <-> proxy <-> destination, over one link."""

    def __init__(self, net: Net, link: Link, hub: socket.socket, far: socket.socket):
        self.net, self.link, self.hub, self.far = net, link, hub, far
        self.closed = False
        self.lock = threading.Lock()
        for src, dst, key in ((hub, far, "bytes_up"), (far, hub, "bytes_down")):
            q: deque = deque()
            cv = threading.Condition()
            threading.Thread(target=self._read, args=(src, q, cv, key), daemon=True).start()
            threading.Thread(target=self._write, args=(dst, q, cv), daemon=True).start()

    def _read(self, src, q, cv, key) -> None:
        while not self.closed:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            with cv:
                if data:
                    self.link.stats[key] += len(data)
                    delay = self.link.latency_ms / 1000
                    if self.link.loss and random.random() < self.link.loss:
                        self.link.stats["lost_chunks"] += 1
                        delay += RTO_S
                    # TCP delivers in order: a chunk never overtakes the one before it.
                    due = max(now + delay, q[-1][0] if q else 0.0)
                    q.append((due, data))
                else:
                    q.append((now + self.link.latency_ms / 1000, None))
                cv.notify()
            if not data:
                return

    def _write(self, dst, q, cv) -> None:
        while True:
            with cv:
                while not q and not self.closed:
                    cv.wait(0.5)
                if self.closed:
                    return
                due, data = q[0]
                wait = due - time.monotonic()
                if wait > 0:
                    cv.wait(wait)
                    continue
                q.popleft()
            if data is None:  # orderly close on one side: pass the FIN on
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                self.reset()
                return

    def reset(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _rst(self.hub)
        _rst(self.far)
        with self.net.lock:
            if self in self.link.conns:
                self.link.conns.discard(self)
                self.link.stats["reset"] += 1


class _Proxy:
    """A listener on 127.0.0.1 standing for one destination (ip, port)."""

    def __init__(self, net: Net, dest: tuple[str, int]):
        self.net, self.dest = net, dest
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(c,), daemon=True).start()

    def _open(self, c: socket.socket) -> None:
        net = self.net
        with net.lock:
            name = net.default_link()
            link = net.links.get(name) if name else None
            if link is None or link.cut:
                if link is not None:
                    link.stats["refused"] += 1
                _rst(c)
                return
        try:
            far = socket.create_connection(self.dest, timeout=5)
            far.settimeout(None)
        except OSError:
            link.stats["refused"] += 1
            _rst(c)
            return
        for s in (c, far):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with net.lock:
            if link.cut or net.default_link() != link.name:
                link.stats["refused"] += 1
                _rst(c)
                _rst(far)
                return
            conn = _Conn(net, link, c, far)
            link.conns.add(conn)
            link.stats["connections"] += 1

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Net:
    """The network around one virtual hub."""

    def __init__(self, sup):
        self.sup = sup
        self.lock = threading.RLock()
        self.aps: dict[str, AccessPoint] = {}
        self.hosts: dict[str, str] = {"localhost": "127.0.0.1"}
        self.links = {"wifi": Link("wifi"), "cellular": Link("cellular")}
        self.proxies: dict[tuple[str, int], _Proxy] = {}
        self.connect_ms = 200  # association + DHCP
        self.ppp_ms = 50  # LCP/IPCP negotiation
        self._reset_wlan()
        self.ppp_up_at: float | None = None  # PPP comes up at this time (None: down)
        self.ppp_active = False
        self.uart: dict | None = None  # the hub's UART wired to the modem: {"id", "baud"}
        pins = sup.hub.board.pins
        self.pwrkey_gpio = pins.get("modem_power", {}).get("gpio", 27)
        self.modem_pins = (pins.get("modem_tx", {}).get("gpio", 17), pins.get("modem_rx", {}).get("gpio", 16))
        self.modem = ModemSim(self._uart_send, self._carrier, self.lock)
        self.stats = {"routes": 0, "unresolved": 0, "uart_to_modem": 0, "uart_to_hub": 0}

    def _reset_wlan(self) -> None:
        self.wl_active = False
        self.wl_want: tuple[str, str] | None = None  # (ssid, key) asked by connect()
        self.wl_since = 0.0  # the current attempt started
        self.wl_ap: AccessPoint | None = None  # associated with
        self.wl_reason = STAT_IDLE
        self.wl_reconnects = -1  # ESP32 default: retry for ever
        self.wl_tries = 0

    # -- the station (ESP32 port network_wlan.c semantics) ----------------------------
    def _wlan_tick(self) -> None:
        now = time.monotonic()
        if self.wl_ap is not None:
            ap = self.aps.get(self.wl_ap.ssid)
            if ap is not self.wl_ap or not ap.up or (ap.psk or "") != (self.wl_want[1] if self.wl_want else ""):
                # The AP vanished: beacon timeout, then the driver retries on its own.
                self.wl_ap = None
                self.wl_reason = STAT_BEACON_TIMEOUT
                self.wl_since = now
                self._link_down("wifi")
            return
        if self.wl_want is None or not self.wl_active:
            return
        while now - self.wl_since >= self.connect_ms / 1000:
            ssid, key = self.wl_want
            ap = self.aps.get(ssid)
            if ap is not None and ap.up:
                if (ap.psk or "") == (key or ""):
                    self.wl_ap = ap
                    self.wl_reason = STAT_GOT_IP
                    self.wl_tries = 0
                    return
                self.wl_reason = STAT_WRONG_PASSWORD
                self.wl_want = None  # the port stops retrying on an authentication failure
                return
            self.wl_reason = STAT_NO_AP_FOUND
            self.wl_tries += 1
            if self.wl_reconnects >= 0 and self.wl_tries > self.wl_reconnects:
                self.wl_want = None
                return
            self.wl_since += self.connect_ms / 1000

    def wlan_status(self) -> int:
        self._wlan_tick()
        if not self.wl_active:
            return STAT_IDLE
        if self.wl_ap is not None:
            return STAT_GOT_IP
        if self.wl_want is not None:
            return STAT_CONNECTING
        return self.wl_reason

    def _wlan_request(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "active":
            if "on" in msg:
                on = bool(msg["on"])
                if not on:
                    self._reset_wlan()
                    self._link_down("wifi")
                self.wl_active = on
            return {"v": self.wl_active}
        if not self.wl_active and op in ("scan", "connect"):
            return {"err": "Wifi Not Started"}
        if op == "scan":
            if self.wl_want is not None and self.wl_ap is None:
                return {"err": "Wifi Internal State Error"}  # the port refuses to scan while connecting
            return {"v": [[ap.ssid, ap.bssid.hex(), ap.channel, ap.rssi, 3 if ap.psk else 0, False]
                          for ap in sorted(self.aps.values(), key=lambda a: -a.rssi) if ap.up]}
        if op == "connect":
            self._wlan_tick()
            if self.wl_ap is not None:
                self.wl_ap = None
                self._link_down("wifi")
            self.wl_want = (str(msg.get("ssid") or ""), str(msg.get("key") or ""))
            self.wl_since = time.monotonic()
            self.wl_tries = 0
            self.wl_reason = STAT_CONNECTING
            return {}
        if op == "disconnect":
            self.wl_want = None
            if self.wl_ap is not None:
                self.wl_ap = None
                self._link_down("wifi")
            self.wl_reason = STAT_IDLE
            return {}
        if op == "status":
            st = self.wlan_status()
            if msg.get("param") == "rssi":
                if self.wl_ap is None:
                    return {"err": "STA is not connected"}
                return {"v": self.wl_ap.rssi}
            return {"v": st}
        if op == "ifconfig":
            self._wlan_tick()
            ap = self.wl_ap
            if ap is None:
                return {"v": ["0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0"]}
            gw = f"192.168.{ap.subnet}.1"
            return {"v": [f"192.168.{ap.subnet}.50", "255.255.255.0", gw, gw]}
        if op == "config":
            if "reconnects" in msg:
                self.wl_reconnects = int(msg["reconnects"])
            ap = self.wl_ap
            return {"v": {"ssid": ap.ssid if ap else (self.wl_want[0] if self.wl_want else ""),
                          "reconnects": self.wl_reconnects, "channel": ap.channel if ap else 0}}
        raise ValueError(f"unknown wlan op {op!r}")

    # -- PPP ------------------------------------------------------------------------
    def ppp_up(self) -> bool:
        return (self.ppp_active and self.ppp_up_at is not None and time.monotonic() >= self.ppp_up_at
                and self.modem.online)

    def _ppp_request(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "active":
            if "on" in msg:
                on = bool(msg["on"])
                if not on and self.ppp_active:
                    self.ppp_up_at = None
                    self._link_down("cellular")
                    # LCP terminate: the modem ends the call and says so on the UART.
                    with self.modem.lock:
                        self.modem._drop_call(announce=True)
                self.ppp_active = on
            return {"v": self.ppp_active}
        if op == "connect":
            if not self.ppp_active:
                return {"err": "PPP not active"}
            # LCP needs the modem in data mode; otherwise negotiation never completes.
            if self.modem.online and self.modem.data_mode:
                self.ppp_up_at = time.monotonic() + self.ppp_ms / 1000
            return {}
        if op == "status":
            return {"v": self.ppp_up()}
        if op == "ifconfig":
            if not self.ppp_up():
                return {"v": ["0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0"]}
            return {"v": ["10.64.12.34", "255.255.255.255", "10.64.64.64", "10.64.64.64"]}
        raise ValueError(f"unknown ppp op {op!r}")

    def _carrier(self, up: bool) -> None:
        if not up:
            with self.lock:
                self.ppp_up_at = None
                self._link_down("cellular")

    # -- routing --------------------------------------------------------------------
    def default_link(self) -> str | None:
        if self.wlan_status() == STAT_GOT_IP:
            return "wifi"
        if self.ppp_up():
            return "cellular"
        return None

    def _link_down(self, name: str) -> None:
        for c in list(self.links[name].conns):
            threading.Thread(target=c.reset, daemon=True).start()

    def _route(self, msg: dict) -> dict:
        host = str(msg.get("host"))
        port = int(msg.get("port") or 0)
        ip = self.hosts.get(host.lower())
        if ip is None and _is_ipv4(host):
            ip = host
        if ip is None or self.default_link() is None:
            # No name server reachable without a link; unknown names fail like lwIP's.
            self.stats["unresolved"] += 1
            return {"err": EAI_FAIL}
        key = (ip, port)
        p = self.proxies.get(key)
        if p is None:
            p = self.proxies[key] = _Proxy(self, key)
        self.stats["routes"] += 1
        return {"port": p.port}

    # -- the modem's UART --------------------------------------------------------------
    def _uart_send(self, data: bytes) -> None:
        u = self.uart
        b = self.sup.board  # no supervisor lock here: it calls into us while holding it
        if u is None or b is None:
            return
        self.stats["uart_to_hub"] += len(data)
        self.sup.send_event(b, {"ev": "uart", "id": u["id"], "h": data.hex()})

    def pin_out(self, gpio: int, level: int) -> None:
        if gpio == self.pwrkey_gpio:
            self.modem.pwrkey(level)

    def board_reset(self, cause: int) -> None:
        """The ESP32 restarted: its WiFi and PPP are gone; on power-on the modem too."""
        with self.lock:
            self._reset_wlan()
            self.ppp_active = False
            self.ppp_up_at = None
            self.uart = None
            for name in self.links:
                self._link_down(name)
        if cause == 1:  # PWRON_RESET: the modem shares the hub's supply
            self.modem.power(False)
            self.modem.key_down = None

    def close(self) -> None:
        with self.lock:
            for p in self.proxies.values():
                p.close()
            self.proxies.clear()
            for name in self.links:
                self._link_down(name)

    # -- board requests -------------------------------------------------------------
    def board_request(self, b, msg: dict) -> dict:
        req = msg.get("req")
        if req == "net_uart_w":
            u = self.uart
            if u is not None and u["id"] == msg.get("id"):
                data = bytes.fromhex(msg["h"])
                self.stats["uart_to_modem"] += len(data)
                self.modem.rx(data, u["baud"])
            return {}
        with self.lock:
            if req == "net_wlan":
                return self._wlan_request(msg)
            if req == "net_ppp":
                return self._ppp_request(msg)
            if req == "net_route":
                return self._route(msg)
            if req == "net_uart":
                # Only UART pins wired to the modem reach it (hardware/*.json modem_tx/modem_rx).
                if (int(msg.get("tx", -1)), int(msg.get("rx", -1))) == self.modem_pins:
                    self.uart = {"id": msg.get("id"), "baud": int(msg.get("baud") or 115200)}
                elif self.uart is not None and self.uart["id"] == msg.get("id"):
                    self.uart = None
                return {}
        raise ValueError(f"unknown request {req!r}")

    # -- the world's commands ---------------------------------------------------------
    def command(self, msg: dict) -> dict:
        op = msg.get("op")
        args = {k: v for k, v in msg.items() if k not in ("cmd", "op")}
        with self.lock:
            if op in ("state", None):
                return {"ok": True, **self.summary()}
            if op == "ap":
                ssid = str(args.pop("ssid", "") or "")
                if not ssid:
                    raise ValueError("net ap needs ssid=NAME (and psk=..., rssi=-55, up=true, channel=6)")
                ap = self.aps.get(ssid)
                if ap is None:
                    ap = self.aps[ssid] = AccessPoint(ssid, args.get("psk"), n=len(self.aps) + 1)
                for k, v in args.items():
                    if k == "psk":
                        ap.psk = None if v in (None, "") else str(v)
                    elif k in ("rssi", "channel"):
                        setattr(ap, k, int(v))
                    elif k == "up":
                        ap.up = _bool(v)
                    else:
                        raise ValueError(f"unknown access point setting {k!r}: ssid, psk, rssi, channel, up")
                self._wlan_tick()
                return {"ok": True, "ap": ap.summary()}
            if op == "ap_remove":
                self.aps.pop(str(args.get("ssid")), None)
                self._wlan_tick()
                return {"ok": True}
            if op == "link":
                name = args.pop("name", None)
                if name not in self.links:
                    raise ValueError("net link needs name=wifi or name=cellular (and cut=, latency_ms=, loss=)")
                link = self.links[name]
                for k, v in args.items():
                    if k == "cut":
                        link.cut = _bool(v)
                        if link.cut:
                            self._link_down(name)
                    elif k == "latency_ms":
                        link.latency_ms = max(0, int(v))
                    elif k == "loss":
                        link.loss = min(1.0, max(0.0, float(v)))
                    else:
                        raise ValueError(f"unknown link setting {k!r}: cut, latency_ms, loss")
                return {"ok": True, "link": link.summary()}
            if op == "modem":
                drop = _bool(args.pop("drop_carrier", False))
                self.modem.configure(**args)
                if drop:
                    self.modem.drop_carrier()
                return {"ok": True, "modem": self.modem.summary()}
            if op == "host":
                name = str(args.get("name") or "").lower()
                ip = str(args.get("ip") or "127.0.0.1")
                if not name or not _is_ipv4(ip):
                    raise ValueError("net host needs name=NAME and ip=A.B.C.D")
                self.hosts[name] = ip
                return {"ok": True, "hosts": dict(self.hosts)}
            if op == "wifi":
                for k, v in args.items():
                    if k in ("connect_ms", "ppp_ms"):
                        setattr(self, k, int(v))
                    else:
                        raise ValueError(f"unknown wifi setting {k!r}: connect_ms, ppp_ms")
                return {"ok": True}
        raise ValueError(f"unknown net op {op!r}: state, ap, ap_remove, link, modem, host, wifi")

    def summary(self) -> dict:
        st = self.wlan_status()
        return {
            "route": self.default_link(),
            "wlan": {"active": self.wl_active, "status": st, "ssid": self.wl_ap.ssid if self.wl_ap else None,
                     "wanted": self.wl_want[0] if self.wl_want else None},
            "ppp": {"active": self.ppp_active, "up": self.ppp_up()},
            "aps": [ap.summary() for ap in self.aps.values()],
            "links": {n: lk.summary() for n, lk in self.links.items()},
            "modem": self.modem.summary(),
            "uart": self.uart,
            "hosts": dict(self.hosts),
            "stats": dict(self.stats),
        }


def _bool(v) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def _is_ipv4(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
