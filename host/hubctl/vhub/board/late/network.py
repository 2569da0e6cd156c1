# network, as on the ESP32 port, for the virtual hub: the WiFi station
# (WLAN(STA_IF)) and PPP over the modem's UART. Every call asks the world
# (host/hubctl/vhub/net.py), which plays the access points, the modem and the
# route; nothing is cached here, so the module stays small.
# Imported at the end of the board's start-up (board/late/, see _board.py).
import _world
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
# ESP32 port status codes: its own three, then ESP-IDF disconnect reasons.
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)


def _req(kind, op, **kw):
    kw["req"] = kind
    kw["op"] = op
    r = _world.request(kw)
    if "err" in r:
        raise OSError(r["err"])
    return r.get("v")


class _If:
    _k = ""

    def active(self, on=None):
        if on is None:
            return _req(self._k, "active")
        return _req(self._k, "active", on=bool(on))

    def ifconfig(self, cfg=None):
        return tuple(_req(self._k, "ifconfig"))

    def ipconfig(self, key):
        v = _req(self._k, "ifconfig")
        if key == "addr4":
            return (v[0], v[1])
        if key == "gw4":
            return v[2]
        raise ValueError("unknown ipconfig key")


class WLAN(_If):
    _k = "net_wlan"

    def __init__(self, interface_id=STA_IF):
        if interface_id != STA_IF:
            raise ValueError("only STA_IF is emulated")

    def scan(self):
        return [(s.encode(), bytes.fromhex(b), ch, rssi, sec, hid) for s, b, ch, rssi, sec, hid in _req(self._k, "scan")]

    def connect(self, ssid=None, key=None, *, bssid=None):
        _req(self._k, "connect", ssid=ssid, key=key)

    def disconnect(self):
        _req(self._k, "disconnect")

    def isconnected(self):
        return _req(self._k, "status") == STAT_GOT_IP

    def status(self, param=None):
        if param is None:
            return _req(self._k, "status")
        return _req(self._k, "status", param=param)

    def config(self, *args, **kw):
        v = _req(self._k, "config", **kw)
        if args:
            return v[args[0]]


class PPP(_If):
    _k = "net_ppp"

    def __init__(self, stream):
        self._stream = stream

    def connect(self, authmode=0, username="", password=""):
        _req(self._k, "connect")

    def isconnected(self):
        return _req(self._k, "status")

    def status(self):
        return _req(self._k, "status")
