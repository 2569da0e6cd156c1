"""The virtual hub's radio: simulated BLE peripherals around the hub.

A world part (``sup.parts["ble"]``): board requests ``ble_*`` come from the
emulated ``bluetooth`` module (board/bluetooth.py) and are answered here; what
the air carries back (scan results, GATT results, indications, pairing
secrets) goes to the board as ``{"ev": "ble", "e": IRQ, "d": [args]}`` events,
``{"h": hex}`` for bytes and ``{"u": uuid}`` for UUIDs, in the argument order
of MicroPython's ``BLE.irq`` documentation.

Peripherals serve the GATT services of the Bluetooth SIG specifications (WSS,
PLXS, BLS, HTS, DIS, BAS, CTS) with values built by the firmware's own codecs
(``hemhub.codec``: SFLOAT/FLOAT, Date Time, BTHome) and struct packing per the
GATT Specification Supplement where the firmware has no encoder. Scripted
through ``{"cmd": "ble", "op": ...}`` (docs/vhub.md, section "Radio").
"""

from __future__ import annotations

import heapq
import itertools
import os
import struct
import threading
import time

from hemhub.codec import bthome_encode, gatt
from hemhub.codec.ieee11073_encode import encode_float, encode_sfloat

# MicroPython BLE.irq event codes
SCAN_RESULT, SCAN_DONE, CONNECT, DISCONNECT = 5, 6, 7, 8
SVC_RESULT, SVC_DONE, CHR_RESULT, CHR_DONE, DSC_RESULT, DSC_DONE = 9, 10, 11, 12, 13, 14
READ_RESULT, READ_DONE, WRITE_DONE, NOTIFY, INDICATE = 15, 16, 17, 18, 19
MTU_EXCHANGED, ENCRYPTION_UPDATE, GET_SECRET, SET_SECRET = 21, 28, 29, 30

# characteristic properties (Core Spec Vol 3 Part G 3.3.1.1)
P_READ, P_WRITE_NR, P_WRITE, P_NOTIFY, P_INDICATE = 0x02, 0x04, 0x08, 0x10, 0x20
ATT_INVALID_HANDLE, ATT_WRITE_NOT_PERMITTED, ATT_INSUFFICIENT_AUTH = 0x01, 0x03, 0x05
ATT_CCCD_IMPROPER = 0xFD  # CSS Part B 1.2: Client Characteristic Configuration Descriptor Improperly Configured
NO_CONN = 0xFFFF

ADV_IND = 0  # connectable undirected advertising
ADV_NONCONN_IND = 3

_DEFAULT_ADDR = {"scale": "C0:FF:EE:00:00:01", "oximeter": "C0:FF:EE:00:00:02", "bp": "C0:FF:EE:00:00:03",
                 "thermometer": "C0:FF:EE:00:00:04", "door": "A4:C1:38:00:00:05",
                 "pendant": "A4:C1:38:00:00:06", "fall": "A4:C1:38:00:00:07"}


def _h(b: bytes) -> dict:
    return {"h": bytes(b).hex()}


def _addr_bytes(addr: str) -> bytes:
    return bytes.fromhex(addr.replace(":", ""))


def _ad(ad_type: int, data: bytes) -> bytes:
    return bytes((len(data) + 1, ad_type)) + data


def _adv_gatt(name: str, uuid16: int) -> bytes:
    # Flags (LE General Discoverable, BR/EDR not supported) | 16-bit service UUID | name
    return _ad(0x01, b"\x06") + _ad(0x03, struct.pack("<H", uuid16)) + _ad(0x09, name.encode()[:16])


class Char:
    def __init__(self, uuid: int, props: int, value: bytes = b"", *, secure: bool = False):
        self.uuid, self.props, self.value, self.secure = uuid, props, value, secure
        self.handle = self.cccd = self.end = 0


class Peripheral:
    kind = ""
    service = 0
    connectable = True
    bond = False

    def __init__(self, addr: str, name: str | None = None, **opts):
        self.addr = addr.upper()
        self.name = name or f"{self.kind}-{self.addr[-5:].replace(':', '')}"
        self.misbehave: dict[str, object] = {}
        self.ltk: bytes | None = None  # the bond this device keeps with the hub
        self.clock_offset: int | None = opts.get("clock_offset")  # device clock - host clock, None = not set
        self.services: list[tuple[int, list[Char]]] = []
        self.pending: list[bytes] = []  # measurements waiting for a connection (indications)
        self.sent = 0
        self.build()
        h = 1
        for i, (_uuid, chars) in enumerate(self.services):
            start = h
            h += 1
            for c in chars:
                c.handle = h + 1  # declaration, then value
                h += 2
                if c.props & (P_NOTIFY | P_INDICATE):
                    c.cccd = h
                    h += 1
                c.end = h - 1
            self.services[i] = (_uuid, chars, start, h - 1)

    def build(self) -> None:
        self.services.append((0x180A, [Char(0x2A29, P_READ, b"hemhub-sim"), Char(0x2A24, P_READ, self.kind.encode()),
                                       Char(0x2A25, P_READ, self.addr.replace(":", "").encode()),
                                       Char(0x2A26, P_READ, b"1.0")]))
        self.services.append((0x180F, [Char(0x2A19, P_READ | P_NOTIFY, b"\x5a")]))

    def chars(self):
        for svc in self.services:
            yield from svc[1]

    def char(self, uuid: int) -> Char | None:
        return next((c for c in self.chars() if c.uuid == uuid), None)

    def device_time(self) -> tuple:
        if self.clock_offset is None:
            return (0, 0, 0, 0, 0, 0)  # Date Time: year/month/day 0 = not known
        t = time.gmtime(time.time() + self.clock_offset)
        return t[:6]

    def wants_connection(self) -> bool:
        return bool(self.pending)

    def advert(self) -> tuple[int, bytes]:
        return ADV_IND, _adv_gatt(self.name, self.service)

    def value_written(self, radio, conn, c: Char, data: bytes) -> int:
        if c.uuid == 0x2A2B:
            try:
                t = gatt.decode(0x2A2B, data)["time"]
            except ValueError:
                return 0x80  # CTS 3.1: Data field ignored (application error)
            self.clock_offset = int(time.mktime(tuple(t) + (0, 0, 0)) - time.mktime(time.gmtime()[:6] + (0, 0, 0)))
            return 0
        return ATT_WRITE_NOT_PERMITTED

    def subscribed(self, radio, conn, c: Char) -> None:
        if c.props & P_INDICATE and c.uuid == self.measurement_uuid:
            while self.pending:
                radio.push(conn, c, self.pending.pop(0), indicate=True)

    measurement_uuid = 0

    def summary(self) -> dict:
        return {"addr": self.addr, "kind": self.kind, "name": self.name, "pending": len(self.pending),
                "clock_set": self.clock_offset is not None, "bonded": self.ltk is not None,
                "misbehave": self.misbehave}


class Scale(Peripheral):
    kind, service, measurement_uuid = "scale", 0x181D, 0x2A9D

    def build(self) -> None:
        super().build()
        # WSS 3.1 Weight Scale Feature: time stamp supported (bit 0), resolution 0.005 kg (code 7 << 3)
        self.services.append((0x181D, [Char(0x2A9E, P_READ, struct.pack("<I", 0x01 | 7 << 3)),
                                       Char(0x2A9D, P_INDICATE)]))
        self.services.append((0x1805, [Char(0x2A2B, P_READ | P_WRITE | P_NOTIFY)]))

    def measure(self, kg: float | None = None, special: str | None = None, **_) -> bytes:
        # WSS 3.2: flags (bit 1 time stamp) | weight uint16 x 0.005 kg (0xFFFF unsuccessful) | Date Time
        raw = 0xFFFF if special == "unsuccessful" or kg is None else int(round(float(kg) / 0.005))
        return struct.pack("<BH", 0x02, raw) + gatt.encode_date_time(self.device_time())


class Thermometer(Peripheral):
    kind, service, measurement_uuid = "thermometer", 0x1809, 0x2A1C

    def build(self) -> None:
        super().build()
        self.services.append((0x1809, [Char(0x2A1C, P_INDICATE)]))

    def measure(self, celsius: float = 36.6, special: str | None = None, **_) -> bytes:
        # HTS 3.1: flags (bit 1 time stamp, bit 2 type) | FLOAT | Date Time | type (2 body)
        v = encode_float(special if special else float(celsius), -1 if not special else 0)
        return b"\x06" + v + gatt.encode_date_time(self.device_time()) + b"\x02"


class BPMonitor(Peripheral):
    kind, service, measurement_uuid, bond = "bp", 0x1810, 0x2A35, True

    def build(self) -> None:
        super().build()
        self.services.append((0x1810, [Char(0x2A35, P_INDICATE, secure=True), Char(0x2A49, P_READ, b"\x00\x00")]))

    def measure(self, sys: int = 120, dia: int = 80, map: int | None = None, pulse: int = 70,
                special: str | None = None, **_) -> bytes:
        # BLS 3.1: flags (bit 1 time stamp, bit 2 pulse) | sys | dia | MAP (SFLOAT; NaN when not computed)
        sysv = special if special else sys
        return (b"\x06" + encode_sfloat(sysv) + encode_sfloat(dia) + encode_sfloat(map)
                + gatt.encode_date_time(self.device_time()) + encode_sfloat(pulse))


class Oximeter(Peripheral):
    kind, service, measurement_uuid = "oximeter", 0x1822, 0x2A5E

    def __init__(self, *a, **kw):
        self.records: list[bytes] = []
        self.streaming = False
        self.interval_ms = 100
        self.deleted = 0
        super().__init__(*a, **kw)

    def build(self) -> None:
        super().build()
        # PLXS 3.3 features: measurement status (0), measurement storage (2), timestamp (3),
        # multiple bonds (7); Measurement Status Support: bit 9 data from storage
        self.services.append((0x1822, [Char(0x2A5E, P_INDICATE), Char(0x2A5F, P_NOTIFY),
                                       Char(0x2A60, P_READ, struct.pack("<HH", 0x008D, 1 << 9)),
                                       Char(0x2A52, P_WRITE | P_INDICATE)]))

    def wants_connection(self) -> bool:
        return bool(self.pending or self.records or self.streaming)

    def spot(self, spo2=97, pr=64, stored=False, special=None, t=None) -> bytes:
        # PLXS 3.1: flags (bit 0 timestamp, bit 1 measurement status, bit 4 clock not set)
        # | SpO2 | PR | Date Time | Measurement Status (bit 9: from storage)
        flags = 0x03 | (0x10 if self.clock_offset is None else 0)
        t = t or self.device_time()
        if self.clock_offset is None:
            # A clock that was never set runs from its own epoch; PLXS says so with bit 4.
            t = time.gmtime(946684800 + int(time.monotonic()))[:6]
        return (bytes((flags,)) + encode_sfloat(special if special else spo2) + encode_sfloat(pr)
                + gatt.encode_date_time(t) + struct.pack("<H", (1 << 9) if stored else 0))

    def measure(self, spo2=97, pr=64, special=None, **_) -> bytes:
        return self.spot(spo2, pr, False, special)

    def store(self, n: int, spo2: int = 95) -> None:
        base = time.time() + (self.clock_offset or 0) - 60 * n
        for i in range(n):
            t = time.gmtime(base + 60 * i)[:6]
            self.records.append(self.spot(spo2 - i % 3, 60 + i % 7, True, t=t))

    def continuous(self, i: int) -> bytes:
        # PLXS 3.2: flags 0 | SpO2PR-Normal (SpO2, PR)
        return b"\x00" + encode_sfloat(96 + i % 3) + encode_sfloat(70 + i % 5)

    def value_written(self, radio, conn, c: Char, data: bytes) -> int:
        if c.uuid != 0x2A52:
            return super().value_written(radio, conn, c, data)
        if not radio.subscribed(conn, c):
            return ATT_CCCD_IMPROPER
        radio.later(0.002, self._racp, radio, conn, bytes(data))
        return 0

    def _racp(self, radio, conn, data: bytes) -> None:
        racp, spot = self.char(0x2A52), self.char(0x2A5E)
        op = data[0] if data else 0
        if op == 4:
            radio.push(conn, racp, struct.pack("<BBH", 5, 0, len(self.records)), indicate=True)
            return
        if op == 1:
            if not self.records:
                code = 6
            else:
                for r in list(self.records):
                    radio.push(conn, spot, r, indicate=True)
                code = 1
        elif op == 2:
            self.deleted += len(self.records)
            code = 1 if self.records else 6
            self.records.clear()
        else:
            code = 2
        radio.push(conn, racp, bytes((6, 0, op, code)), indicate=True)

    def summary(self) -> dict:
        return {**super().summary(), "records": len(self.records), "deleted": self.deleted,
                "streaming": self.streaming}


class BTHomeDevice(Peripheral):
    """A BTHome v2 sensor (door contact, SOS pendant, fall detector): adverts only."""
    connectable = False

    def __init__(self, addr: str, kind: str, key: str | None = None, **kw):
        self.kind = kind
        self.key = bytes.fromhex(key) if key else None
        self.counter = 1000
        self.packet_id = 0
        self.history: list[bytes] = []  # service data sent, newest last (for replays)
        super().__init__(addr, **kw)

    def build(self) -> None:
        pass

    def wants_connection(self) -> bool:
        return False

    def frame(self, objects: list) -> bytes:
        self.packet_id = (self.packet_id + 1) & 0xFF
        objs = [(0x00, self.packet_id)] + objects
        if self.key:
            self.counter += 1
            sd = bthome_encode.encode_encrypted(self.addr, objs, self.key, self.counter, trigger_based=True)
        else:
            sd = bthome_encode.encode(objs, trigger_based=True)
        self.history = (self.history + [sd])[-8:]
        return sd


KINDS = {"scale": Scale, "oximeter": Oximeter, "bp": BPMonitor, "thermometer": Thermometer}


class _Conn:
    def __init__(self, handle: int, dev: Peripheral, boot: int):
        self.handle, self.dev, self.boot = handle, dev, boot
        self.subs: dict[int, int] = {}  # value handle -> CCCD value
        self.encrypted = False
        self.count = 0  # values pushed (for disconnect_after)
        self.doomed = False


class Radio:
    """The air around one virtual hub."""

    def __init__(self, sup):
        self.sup = sup
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.devices: dict[str, Peripheral] = {}
        self.conns: dict[int, _Conn] = {}
        self.handles = itertools.count(1)
        self.active = False
        self.scan_until: float | None = None  # monotonic; inf = until stopped
        self.boot = None
        self.connecting: tuple | None = None  # (addr, deadline, generation)
        self.gen = itertools.count(1)
        self.queue: list = []  # heap of (due, seq, conn handle or None, event or callable)
        self.seq = itertools.count()
        self.secrets: dict[int, list] = {}
        self.stats = {"adverts": 0, "connections": 0, "values": 0, "dropped_events": 0}
        self.last_trigger: dict[str, float] = {}  # addr -> monotonic time the event went on air
        threading.Thread(target=self._air, daemon=True, name="radio").start()

    # -- scheduling ---------------------------------------------------------------------
    def later(self, delay: float, fn, *args, conn: int | None = None) -> None:
        with self.cv:
            heapq.heappush(self.queue, (time.monotonic() + delay, next(self.seq), conn, (fn, args)))
            self.cv.notify()

    def emit(self, e: int, args: list, delay: float = 0.001, conn: int | None = None) -> None:
        self.later(delay, self._send, {"ev": "ble", "e": e, "d": args}, conn=conn)

    def _send(self, ev: dict) -> None:
        b = self.sup.current_board()
        if b is None or b.boot_id != self.boot:
            self.stats["dropped_events"] += 1
            return
        self.sup.send_event(b, ev)

    def _air(self) -> None:
        next_adv = 0.0
        while not self.sup.stopping.is_set():
            with self.cv:
                now = time.monotonic()
                due = self.queue[0][0] if self.queue else now + 0.05
                if self.scan_until is not None:
                    due = min(due, next_adv)
                if due > now:
                    # Never a zero wait while idle: that spin held the GIL and slowed
                    # every in-process console reader to ~700 bytes/s.
                    self.cv.wait(min(due - now, 0.05))
                    now = time.monotonic()
                items = []
                while self.queue and self.queue[0][0] <= now:
                    _, _, conn, item = heapq.heappop(self.queue)
                    if conn is not None and conn not in self.conns:
                        continue  # the link is gone: what was in flight is lost
                    items.append(item)
                scanning = self.scan_until is not None
                if scanning and now >= self.scan_until:
                    self.scan_until = None
                    items.append((self._send, ({"ev": "ble", "e": SCAN_DONE, "d": []},)))
                    scanning = False
            for fn, args in items:
                try:
                    fn(*args)
                except Exception as e:  # a scripted device's bug must not stop the air
                    print(f"hubctl vhub radio: {e!r}", flush=True)
            if scanning and now >= next_adv:
                next_adv = now + 0.2
                self._periodic_adverts()

    def _periodic_adverts(self) -> None:
        with self.lock:
            busy = {c.dev.addr for c in self.conns.values()}
            # (a "silent" device advertises but never answers a connection request)
            devs = [d for d in self.devices.values() if d.wants_connection() and d.addr not in busy]
        for d in devs:
            adv_type, data = d.advert()
            self._advert(d, adv_type, data)

    def _advert(self, d: Peripheral, adv_type: int, data: bytes, delay: float = 0.0) -> None:
        if delay > 0:  # heard or not as it goes on air, by the scan state then
            self.later(delay, self._advert, d, adv_type, data)
            return
        if self.scan_until is None:
            return
        self.stats["adverts"] += 1
        self.emit(SCAN_RESULT, [0, _h(_addr_bytes(d.addr)), adv_type, -60, _h(data)])

    # -- board side ---------------------------------------------------------------------
    def board_request(self, board, msg: dict) -> dict:
        req = msg["req"]
        with self.lock:
            if board.boot_id != self.boot:  # a new boot: the controller was reset
                self.boot = board.boot_id
                self.conns.clear()
                self.scan_until = None
                self.connecting = None
                self.active = False
            if req == "ble_secret":
                w = self.secrets.get(msg["id"])
                if w:
                    w[1] = msg.get("r")
                    w[0].set()
                return {}
            if req == "ble_active":
                if "on" in msg:
                    self.active = bool(msg["on"])
                    if not self.active:
                        self.conns.clear()
                        self.scan_until = None
                return {"active": self.active}
            if not self.active:
                raise OSError("[Errno 1] EPERM")
            if req == "ble_config":
                if msg.get("get") == "mac":
                    return {"value": [0, self.sup.hub.info["mac"].replace(":", "")]}
                if msg.get("get") == "mtu":
                    return {"value": 256}
                return {"value": None}
            if req == "ble_scan":
                dur = msg.get("duration_ms")
                if dur is None:
                    if self.scan_until is not None:
                        self.scan_until = None
                        self.emit(SCAN_DONE, [])
                else:
                    self.scan_until = float("inf") if dur == 0 else time.monotonic() + dur / 1000
                    self.cv.notify()
                return {}
            if req == "ble_connect":
                return self._connect(msg)
            conn = self.conns.get(msg.get("conn"))
            if conn is None:
                raise OSError("[Errno 107] ENOTCONN")
            return self._gatt(conn, req, msg)

    def _connect(self, msg: dict) -> dict:
        if msg.get("cancel"):
            self.connecting = None
            return {}
        if self.connecting is not None:
            raise OSError("[Errno 114] EALREADY")
        addr = ":".join(msg["addr"][i:i + 2] for i in range(0, 12, 2)).upper()
        g = next(self.gen)
        self.connecting = (addr, g)
        d = self.devices.get(addr)
        if d is None or not d.connectable or d.misbehave.get("silent"):
            # No answer: NimBLE ends the attempt after scan_duration_ms with a disconnect on handle 0xFFFF.
            self.later(msg.get("timeout_ms", 2000) / 1000, self._connect_timeout, g, msg)
            return {}
        self.later(0.005, self._connected, g, d)
        return {}

    def _connect_timeout(self, g: int, msg: dict) -> None:
        with self.lock:
            if self.connecting is None or self.connecting[1] != g:
                return
            self.connecting = None
        self._send({"ev": "ble", "e": DISCONNECT, "d": [NO_CONN, msg["addr_type"], _h(bytes.fromhex(msg["addr"]))]})

    def _connected(self, g: int, d: Peripheral) -> None:
        with self.lock:
            if self.connecting is None or self.connecting[1] != g:
                return
            self.connecting = None
            h = next(self.handles) & 0xFFF
            self.conns[h] = _Conn(h, d, self.boot)
            self.stats["connections"] += 1
        self._send({"ev": "ble", "e": CONNECT, "d": [h, 0, _h(_addr_bytes(d.addr))]})

    def disconnect(self, conn: _Conn, reason_delay: float = 0.001) -> None:
        with self.lock:
            if self.conns.pop(conn.handle, None) is None:
                return
            if isinstance(conn.dev, Oximeter):
                conn.dev.streaming = conn.dev.streaming and not conn.dev.misbehave.get("stop_stream_on_disconnect")
        self.emit(DISCONNECT, [conn.handle, 0, _h(_addr_bytes(conn.dev.addr))], delay=reason_delay)

    def subscribed(self, conn: int, c: Char) -> bool:
        cn = self.conns.get(conn)
        return bool(cn and cn.subs.get(c.handle))

    def push(self, conn: int, c: Char, value: bytes, indicate: bool) -> None:
        """A notification or indication from the device, if the hub subscribed."""
        with self.lock:
            cn = self.conns.get(conn)
            if cn is None or cn.doomed:
                return
            if not cn.subs.get(c.handle):
                if c.uuid == cn.dev.measurement_uuid:
                    cn.dev.pending.append(value)  # kept until the hub subscribes
                return
            m = cn.dev.misbehave
            if m.get("truncate_next"):
                m.pop("truncate_next")
                value = value[:-2]
            if m.get("oversize_next"):
                m.pop("oversize_next")
                value = bytes(512)
            cn.count += 1
            cn.dev.sent += 1
            self.stats["values"] += 1
            cut = m.get("disconnect_after")
            if cut is not None and cn.count >= int(cut):
                m.pop("disconnect_after", None)
                cn.doomed = True  # nothing more goes out on this link
        # Same delay for every value: the queue keeps them in order, as indications are.
        self.emit(INDICATE if indicate else NOTIFY, [conn, c.handle, _h(value)], delay=0.001, conn=conn)
        if cn.doomed:
            self.later(0.002, self.disconnect, cn)

    def _gatt(self, cn: _Conn, req: str, msg: dict) -> dict:
        d, h = cn.dev, cn.handle
        if req == "ble_disconnect":  # the hub's controller ends the link; no answer from the device needed
            self.disconnect(cn)
            return {"ok": True}
        if d.misbehave.get("mute"):
            return {}  # accepts the request, never answers: the hub must time out
        if req == "ble_mtu":
            self.emit(MTU_EXCHANGED, [h, 185], conn=h)
        elif req == "ble_pair":
            threading.Thread(target=self._pair, args=(cn,), daemon=True).start()
        elif req == "ble_disc_svc":
            for uuid, _chars, start, end in d.services:
                if msg.get("uuid") in (None, uuid):
                    self.emit(SVC_RESULT, [h, start, end, {"u": uuid}], conn=h)
            self.emit(SVC_DONE, [h, 0], conn=h)
        elif req == "ble_disc_chr":
            for c in d.chars():
                if msg["start"] <= c.handle <= msg["end"] and msg.get("uuid") in (None, c.uuid):
                    self.emit(CHR_RESULT, [h, c.end, c.handle, c.props, {"u": c.uuid}], conn=h)
            self.emit(CHR_DONE, [h, 0], conn=h)
        elif req == "ble_disc_dsc":
            for c in d.chars():
                if c.cccd and msg["start"] <= c.cccd <= msg["end"]:
                    self.emit(DSC_RESULT, [h, c.cccd, {"u": 0x2902}], conn=h)
            self.emit(DSC_DONE, [h, 0], conn=h)
        elif req == "ble_read":
            c = next((c for c in d.chars() if c.handle == msg["handle"]), None)
            if c is None or not c.props & P_READ:
                self.emit(READ_DONE, [h, msg["handle"], ATT_INVALID_HANDLE if c is None else 0x02], conn=h)
            else:
                value = c.value
                if c.uuid == 0x2A2B:
                    value = gatt.encode_current_time(d.device_time()) if d.clock_offset is not None else bytes(10)
                self.emit(READ_RESULT, [h, c.handle, _h(value)], conn=h)
                self.emit(READ_DONE, [h, c.handle, 0], conn=h)
        elif req == "ble_write":
            self._write(cn, msg["handle"], bytes.fromhex(msg["data"]), msg.get("mode", 0))
        else:
            raise ValueError(f"unknown radio request {req!r}")
        return {}

    def _write(self, cn: _Conn, handle: int, data: bytes, mode: int) -> None:
        d, h = cn.dev, cn.handle
        status, after = ATT_INVALID_HANDLE, None
        for c in d.chars():
            if handle == c.cccd:
                if c.secure and not cn.encrypted:
                    status = ATT_INSUFFICIENT_AUTH
                elif len(data) != 2:
                    status = 0x0D  # invalid attribute value length
                else:
                    cn.subs[c.handle] = data[0] | data[1] << 8
                    status, after = 0, c
                break
            if handle == c.handle:
                status = d.value_written(self, h, c, data) if c.props & (P_WRITE | P_WRITE_NR) \
                    else ATT_WRITE_NOT_PERMITTED
                break
        if mode == 1:
            self.emit(WRITE_DONE, [h, handle, status], conn=h)
        if after is not None and cn.subs[after.handle]:
            self.later(0.003, d.subscribed, self, h, after, conn=h)

    def _secret(self, e: int, args: list, timeout: float = 2.0):
        sid = next(self.gen)
        w = [threading.Event(), None]
        self.secrets[sid] = w
        self._send({"ev": "ble", "e": e, "d": args, "id": sid})
        w[0].wait(timeout)
        self.secrets.pop(sid, None)
        return w[1]

    def _pair(self, cn: _Conn) -> None:
        """Just Works pairing and bonding; a bonded device re-encrypts with the stored key."""
        d = cn.dev
        key = _h(b"\x00" + _addr_bytes(d.addr))
        time.sleep(0.002)
        if d.ltk is not None:
            got = self._secret(GET_SECRET, [2, 0, key])
            if got is not None and bytes.fromhex(got) == d.ltk:
                cn.encrypted = True
                self.emit(ENCRYPTION_UPDATE, [cn.handle, 1, 0, 1, 16], conn=cn.handle)
                return
        ltk = os.urandom(16)
        if self._secret(SET_SECRET, [2, key, _h(ltk)]):
            d.ltk = ltk
        cn.encrypted = True
        self.emit(ENCRYPTION_UPDATE, [cn.handle, 1, 0, 1 if d.ltk == ltk else 0, 16], conn=cn.handle)

    # -- scripting side -----------------------------------------------------------------
    def _dev(self, msg: dict, cls=Peripheral) -> Peripheral:
        addr = str(msg.get("addr") or "").upper()
        d = self.devices.get(addr)
        if d is None:
            raise ValueError(f"no simulated device at {addr or '(no addr)'}; add one first (op add)")
        if not isinstance(d, cls):
            raise ValueError(f"device {addr} is a {d.kind}; this op needs a {cls.__name__}")
        return d

    def _broadcast(self, d: BTHomeDevice, sd: bytes, repeat: int = 1) -> float:
        t = time.monotonic()
        self.last_trigger[d.addr] = t
        adv = bthome_encode.advertisement(sd)
        for i in range(max(1, repeat)):
            self._advert(d, ADV_NONCONN_IND, adv, delay=0.03 * i)
        return t

    def command(self, msg: dict) -> dict:
        op = msg.get("op")
        with self.lock:
            if op == "add":
                kind = msg.get("kind")
                addr = str(msg.get("addr") or _DEFAULT_ADDR.get(kind, "")).upper()
                opts = {"clock_offset": 0 if msg.get("clock_set", True) else None}
                if kind in KINDS:
                    d = KINDS[kind](addr, msg.get("name"), **opts)
                    if "bond" in msg:
                        d.bond = bool(msg["bond"])
                elif kind in ("door", "pendant", "fall"):
                    d = BTHomeDevice(addr, kind, msg.get("key"), name=msg.get("name"))
                else:
                    raise ValueError(f"unknown device kind {kind!r}: scale, oximeter, bp, thermometer, "
                                     "door, pendant, fall")
                self.devices[d.addr] = d
                return {"ok": True, "device": d.summary()}
            if op == "remove":
                self.devices.pop(self._dev(msg).addr)
                return {"ok": True}
            if op in ("state", "list", None):
                return {"ok": True, "active": self.active, "scanning": self.scan_until is not None,
                        "connections": [{"conn": c.handle, "addr": c.dev.addr} for c in self.conns.values()],
                        "devices": [d.summary() for d in self.devices.values()], "stats": dict(self.stats)}
            if op == "measure":
                d = self._dev(msg)
                args = {k: v for k, v in msg.items() if k not in ("cmd", "op", "addr")}
                d.pending.append(d.measure(**args))
                self._push_pending(d)
                return {"ok": True, "pending": len(d.pending)}
            if op == "store":
                d = self._dev(msg, Oximeter)
                d.store(int(msg.get("n", 1)))
                return {"ok": True, "records": len(d.records)}
            if op == "stream":
                d = self._dev(msg, Oximeter)
                was = d.streaming
                d.streaming = bool(msg.get("on", True))
                d.interval_ms = int(msg.get("interval_ms", d.interval_ms))
                if d.streaming and not was:
                    threading.Thread(target=self._stream, args=(d,), daemon=True).start()
                return {"ok": True}
            if op == "misbehave":
                d = self._dev(msg)
                what = msg.get("what")
                if what == "clear":
                    d.misbehave.clear()
                elif what == "clock_not_set":
                    d.clock_offset = None
                elif what in ("disconnect_after", "truncate_next", "oversize_next", "silent", "mute"):
                    d.misbehave[what] = msg.get("n", True)
                elif what == "drop_links":
                    for c in list(self.conns.values()):
                        if c.dev is d:
                            self.disconnect(c)
                else:
                    raise ValueError(f"unknown misbehaviour {what!r}: disconnect_after (n), truncate_next, "
                                     "oversize_next, silent, mute, clock_not_set, drop_links, clear")
                return {"ok": True, "device": d.summary()}
            if op in ("door", "press", "fall", "advert"):
                d = self._dev(msg, BTHomeDevice)
                if op == "door":
                    objs = [(0x1A, bool(msg.get("open", True)))]
                elif op == "press":
                    objs = [(0x3A, msg.get("event", "press"))]
                elif op == "fall":
                    objs = [(0x0F, True)]
                else:
                    objs = [tuple(o) for o in msg.get("objects", [])]
                if "battery" in msg:
                    objs.append((0x01, int(msg["battery"])))
                sd = d.frame(sorted(objs, key=lambda o: o[0]))
                t = self._broadcast(d, sd, int(msg.get("repeat", 3)))
                return {"ok": True, "service_data": sd.hex(), "at": t}
            if op == "replay":
                d = self._dev(msg, BTHomeDevice)
                back = int(msg.get("back", 2))
                if len(d.history) < back:
                    raise ValueError(f"{d.addr} has sent {len(d.history)} adverts; cannot replay {back} back")
                sd = d.history[-back]
                t = self._broadcast(d, sd, 1)
                return {"ok": True, "service_data": sd.hex(), "at": t}
        raise ValueError(f"unknown ble op {op!r}: add, remove, state, measure, store, stream, door, press, "
                         "fall, advert, replay, misbehave")

    def _push_pending(self, d: Peripheral) -> None:
        """A device that is connected and subscribed sends a new measurement at once."""
        for cn in self.conns.values():
            c = d.char(d.measurement_uuid)
            if cn.dev is d and c and cn.subs.get(c.handle):
                while d.pending:
                    self.push(cn.handle, c, d.pending.pop(0), indicate=True)

    def _stream(self, d: Oximeter) -> None:
        i = 0
        c = d.char(0x2A5F)
        while d.streaming and not self.sup.stopping.is_set():
            with self.lock:
                for cn in list(self.conns.values()):
                    if cn.dev is d and cn.subs.get(c.handle):
                        self.push(cn.handle, c, d.continuous(i), indicate=False)
                        i += 1
            time.sleep(d.interval_ms / 1000)
