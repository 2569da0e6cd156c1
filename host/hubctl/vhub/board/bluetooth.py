# bluetooth, as on the ESP32 port (NimBLE), central role only, for the virtual hub.
#
# Every radio operation is a world request ("ble_..."); what the radio answers
# arrives as world events {"ev": "ble", "e": IRQ, "d": [args]} that the reader
# thread hands to micropython.schedule, so the handler given to BLE.irq runs on
# the main thread between bytecodes, as the real driver's IRQ does.
# Byte arguments are memoryviews into one buffer that the next event reuses,
# as the driver's are: a handler that keeps one without copying it sees it
# change. _IRQ_GET_SECRET / _IRQ_SET_SECRET answer the world with the
# handler's return value.
import binascii

import _world
from micropython import const

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_buf = bytearray(600)  # reused by every event, like the driver's IRQ buffer


class UUID:
    def __init__(self, value):
        if isinstance(value, UUID):
            value = value._v
        if isinstance(value, str):
            value = value.lower()
        self._v = value

    def __eq__(self, other):
        return isinstance(other, UUID) and other._v == self._v

    def __hash__(self):
        return hash(self._v)

    def __int__(self):
        return self._v if isinstance(self._v, int) else -1

    def __repr__(self):
        if isinstance(self._v, int):
            return "UUID(0x%04x)" % self._v
        return "UUID('%s')" % self._v


def _uuid_out(u):
    if u is None:
        return None
    return u._v if isinstance(u, UUID) else u


class BLE:
    _handler = None
    _mac = None

    def __init__(self):
        _world.on("ble", _on_event)

    def active(self, on=None):
        if on is None:
            return _world.request({"req": "ble_active"})["active"]
        return _world.request({"req": "ble_active", "on": bool(on)})["active"]

    def config(self, *args, **kw):
        if args:
            r = _world.request({"req": "ble_config", "get": args[0]})
            v = r["value"]
            if args[0] == "mac":
                return (v[0], binascii.unhexlify(v[1]))
            return v
        _world.request({"req": "ble_config", "set": kw})

    def irq(self, handler):
        BLE._handler = handler

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        _world.request({"req": "ble_scan", "duration_ms": duration_ms, "active": bool(active)})

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000, *args):
        if addr_type is None:  # cancel a pending connection attempt
            _world.request({"req": "ble_connect", "cancel": 1})
            return
        _world.request({"req": "ble_connect", "addr_type": addr_type,
                        "addr": binascii.hexlify(bytes(addr)).decode(), "timeout_ms": scan_duration_ms})

    def gap_disconnect(self, conn_handle):
        return _world.request({"req": "ble_disconnect", "conn": conn_handle})["ok"]

    def gap_pair(self, conn_handle):
        _world.request({"req": "ble_pair", "conn": conn_handle})

    def gap_passkey(self, conn_handle, action, passkey):
        _world.request({"req": "ble_passkey", "conn": conn_handle, "action": action, "passkey": passkey})

    def gattc_discover_services(self, conn_handle, uuid=None):
        _world.request({"req": "ble_disc_svc", "conn": conn_handle, "uuid": _uuid_out(uuid)})

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        _world.request({"req": "ble_disc_chr", "conn": conn_handle, "start": start_handle,
                        "end": end_handle, "uuid": _uuid_out(uuid)})

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        _world.request({"req": "ble_disc_dsc", "conn": conn_handle, "start": start_handle, "end": end_handle})

    def gattc_read(self, conn_handle, value_handle):
        _world.request({"req": "ble_read", "conn": conn_handle, "handle": value_handle})

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        _world.request({"req": "ble_write", "conn": conn_handle, "handle": value_handle,
                        "data": binascii.hexlify(bytes(data)).decode(), "mode": mode})

    def gattc_exchange_mtu(self, conn_handle):
        _world.request({"req": "ble_mtu", "conn": conn_handle})


def _on_event(ev):
    # Runs on the main thread (scheduled). Rebuild the driver's argument tuple:
    # {"h": hex} -> memoryview into _buf, {"u": v} -> UUID.
    pos = 0
    args = []
    for a in ev["d"]:
        if isinstance(a, dict):
            if "h" in a:
                raw = binascii.unhexlify(a["h"])
                n = len(raw)
                if pos + n > len(_buf):
                    pos = 0
                _buf[pos:pos + n] = raw
                a = memoryview(_buf)[pos:pos + n]
                pos += n
            else:
                a = UUID(a["u"])
        args.append(a)
    h = BLE._handler
    e = ev["e"]
    r = h(e, tuple(args)) if h is not None else None
    if e == _IRQ_GET_SECRET or e == _IRQ_SET_SECRET:
        if e == _IRQ_GET_SECRET and r is not None:
            r = binascii.hexlify(bytes(r)).decode()
        _world.notify({"req": "ble_secret", "id": ev["id"], "r": r})
