"""The hub's BLE central: enrolled GATT health devices and BTHome alarm sensors.

Shape after micropython-lib's aioble: the BLE object is injected; the IRQ
handler only copies the driver's memoryviews, finds the target and sets an
asyncio.ThreadSafeFlag (or appends to a bounded queue); all waiting happens in
async code with timeouts.

  * Alarms: a passive scan runs all the time (also while a GATT link is up).
    Adverts from enrolled BTHome devices go through their BTHomeReceiver
    (replay and duplicate filtering) and hemhub.codec.bthome.events() to
    on_event(event) at once. Adverts from devices not enrolled are counted and
    dropped in the IRQ.
  * Readings: an enrolled GATT device advertises when it has something to send;
    the central connects (one link at a time), discovers, bonds where the
    profile needs it, reads Device Information and Battery, sets the device's
    clock (Current Time 0x2A2B) when the hub's own clock is trusted, subscribes
    to the measurement characteristics, fetches stored records via RACP 0x2A52
    and deletes them only after on_reading() confirmed each one, then stays
    until the device is quiet. Each value becomes on_reading(reading), the
    decoded dict of hemhub.codec.gatt.decode plus who sent it and when.
  * Bounds: values over _MAX_VALUE bytes are dropped in the IRQ; at most
    _QUEUE values and _QUEUE adverts wait; a link lasts at most _LINK_MS; every
    GATT step has a timeout. Counters (self.counters) say what was dropped.

Protocol references: protocol/gatt.md, protocol/bthome.md; the docs in
docs/sensing.md.
"""
import asyncio
import gc
import time

from micropython import const

from hemhub.codec import CodecError, bthome

_IRQ_SCAN_RESULT = const(5)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_GATTC_INDICATE = const(19)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_UUID_RACP = const(0x2A52)
_NO_CONN = const(0xFFFF)

_MAX_VALUE = const(64)  # longest health measurement with every optional field is ~30 bytes
_QUEUE = const(8)
_MAX_RESULTS = const(24)
_RETRY_MS = const(500)  # pause after a failed link before the next one
# After a link that found no heap, the next waits 1 s, 2 s, ... up to 32 s: a
# link tried every 500 ms loads and drops 7 KiB of code each time, and that
# churn fragments the heap the uplink and the link manager need to recover.
_SHORT_MS = const(1000)
_SHORT_MAX_MS = const(32000)
# An alarm that meets a full heap is retried, not dropped: the sensor's repeats
# carry the same packet id and would be filtered as duplicates. First the
# central's spare block is given up (a hole of _SPARE bytes in which the
# hand-over's few small allocations fit, however fragmented the rest of the
# heap is), then 250 x 20 ms let the record and uplink tasks free what they hold.
_SPARE = const(1024)
_MEMORY_TRIES = const(250)
_MEMORY_WAIT_MS = const(20)
# A decoded alarm the record path cannot take within _HANDOVER_TRIES waits is
# owed: kept in one of _OWED slots (made at start-up: keeping it allocates
# nothing) and handed over, oldest first, as soon as the heap or the queue has
# room, while the alarm task goes on with the next adverts. An alarm lost is
# the worst this product can do: only one that finds every slot taken is.
_HANDOVER_TRIES = const(10)
_OWED = const(4)
_OWED_FIELDS = const(6)  # device, event, object, value, rx ticks, waits
_REPAY_MS = const(100)
_FAILED = object()  # what _patiently returns when fn never went through
_DEFER_MS = const(100)  # how often a deferred GATT link looks again
_DEFER_MAX_MS = const(30000)  # and how long it waits at most

# kind -> (service, characteristics to subscribe, bond by default)
_PROFILES = {
    "scale": (0x181D, (0x2A9D,), False),
    "oximeter": (0x1822, (0x2A5E, 0x2A5F, _UUID_RACP), False),
    "bp": (0x1810, (0x2A35,), True),
    "thermometer": (0x1809, (0x2A1C,), False),
}
_BTHOME_KINDS = ("door", "pendant", "fall", "motion")


class _Busy(Exception):
    """on_event answered False: the record path cannot take an alarm now (its
    queue is full); the alarm is offered again, as after a MemoryError."""



class Disconnected(Exception):
    pass


def _u16(u):
    """A 16-bit UUID as an int (real bluetooth.UUID exposes its bytes; the
    virtual hub's and the tests' fakes give ints or int()-able objects)."""
    if isinstance(u, int):
        return u
    try:
        b = bytes(u)
    except TypeError:
        return int(u)
    return b[0] | b[1] << 8 if len(b) == 2 else -1


class Peripheral:
    """One enrolled device (from /data/config.json "peripherals")."""

    def __init__(self, entry):
        self.name = str(entry["addr"]).upper()
        self.addr = bthome.mac_bytes(self.name)
        self.kind = entry.get("kind")
        self.serves = entry.get("serves")
        key = entry.get("key")
        self.receiver = None
        self.state = None  # last door/window state, to alarm on changes
        self.profile = _PROFILES.get(self.kind)
        if self.kind in _BTHOME_KINDS:
            self.receiver = bthome.BTHomeReceiver(self.addr, None if not key else bytes.fromhex(key), self.kind)
        elif self.profile is None:
            raise ValueError("peripheral %s: unknown kind %r" % (self.name, self.kind))
        self.bond = bool(entry.get("bond", self.profile[2] if self.profile else False))
        self.info = {}
        # (n, key): the first n of the device's stored records (RACP) are handed
        # over, the nth has this key; they stay on the device until all of
        # them are, and the next link skips them (sense/link.py _fetch_records).
        self.racp_done = None


class _Link:
    """One connection: what the IRQ handler hands to the async side."""

    def __init__(self, dev):
        self.dev = dev
        self.handle = None
        self.up = False
        self.ended = False
        self.flag = asyncio.ThreadSafeFlag()
        self.results = []
        self.done = None  # status of the running GATT operation
        self.value = None
        self.encrypted = False
        self.values = []  # (value handle, bytes, number on count_vh or 0)
        # While stored records are reported (sense/link.py _Stored): their value
        # handle, and how many values arrived on it, queued or dropped; each
        # queued value carries its number, so a dropped one leaves a visible gap.
        self.count_vh = None
        self.arrived = 0
        self.uuids = {}  # value handle -> uuid16


class Central:
    def __init__(self, ble, peripherals, on_reading, on_event, keys=None):
        self.ble = ble
        self.on_reading = on_reading
        self.on_event = on_event
        self.keys = keys
        self.devices = {}
        for entry in peripherals:
            p = Peripheral(entry)
            self.devices[bytes(p.addr)] = p
        self.counters = {"unknown_adverts": 0, "adverts": 0, "rejected": 0, "dropped": 0, "oversized": 0,
                         "invalid": 0, "connections": 0, "failed": 0, "readings": 0, "duplicates": 0,
                         "events": 0, "no_memory": 0, "lost": 0, "owed": 0, "spare_used": 0}
        self.last_error = None
        self._short = 0  # GATT links in a row that found no heap
        self._spare = bytearray(_SPARE)  # given up for an alarm that meets a full heap
        self._owed = [None] * (_OWED * _OWED_FIELDS)  # a ring of owed alarms' fields
        self._owed_head = 0
        self._owed_n = 0
        self._adv = []
        self._wakes = 0
        self._adv_flag = asyncio.ThreadSafeFlag()
        self._want = []  # GATT devices that advertised (bounded by the enrolment list)
        self._want_flag = asyncio.ThreadSafeFlag()
        self._link = None
        self._seen = []
        # async () -> bool: every reading handed on is stored for good (the
        # record path's journal); stored records are deleted from a device
        # only then. None: on_reading's confirmation is enough.
        self.sync = None
        # () -> bool: True while no GATT link should start (the uplink is making
        # its connection, which needs the heap a link would take; app.py wires
        # it). None: links start when a device advertises.
        self.defer_links = None
        # () -> None each: before a GATT link, others lend it heap they keep in
        # reserve (the uplink's connect reserve); after the link they take it
        # back. None: nothing to borrow.
        self.lend_heap = None
        self.return_heap = None
        self.in_link = False  # from the link's imports to their unload (others wait their turn)
        ble.irq(self._irq)

    # -- IRQ: copy, look up, flag; nothing else ------------------------------------------
    def _irq(self, event, data):
        if event == _IRQ_SCAN_RESULT:
            d = self.devices.get(bytes(data[1]))
            if d is None:
                self.counters["unknown_adverts"] += 1
            elif d.receiver is not None:
                if len(self._adv) < _QUEUE:
                    self._adv.append((d, bytes(data[4]), time.ticks_ms(), self._wakes))
                    self._adv_flag.set()
                else:
                    self.counters["dropped"] += 1
            elif d not in self._want and (self._link is None or self._link.dev is not d):
                self._want.append(d)
                self._want_flag.set()
            return
        if event == _IRQ_GET_SECRET:
            return self.keys.get(data[0], data[1], data[2]) if self.keys else None
        if event == _IRQ_SET_SECRET:
            return self.keys.set(data[0], data[1], data[2]) if self.keys else False
        link = self._link
        if link is None:
            return
        if event == _IRQ_PERIPHERAL_CONNECT:
            if bytes(data[2]) == link.dev.addr and link.handle is None:
                link.handle = data[0]
                link.up = True
                # Alarms are not heard while a connection is made (the scan
                # must stop: Core spec v4.2 Vol 3 Part C 9.3.6); listen again
                # at once, not when the link task next runs.
                self._scan()
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            if data[0] == link.handle or (data[0] == _NO_CONN and link.handle is None):
                link.up = False
                link.ended = True
        elif not data or data[0] != link.handle:
            return
        elif event == _IRQ_GATTC_NOTIFY or event == _IRQ_GATTC_INDICATE:
            n = 0
            if data[1] == link.count_vh:
                link.arrived += 1
                n = link.arrived
            if len(link.values) >= _QUEUE:
                self.counters["dropped"] += 1
            elif len(data[2]) > _MAX_VALUE:
                self.counters["oversized"] += 1
            else:
                link.values.append((data[1], bytes(data[2]), n))
        elif event == _IRQ_GATTC_READ_RESULT:
            link.value = bytes(data[2]) if len(data[2]) <= _MAX_VALUE else None
        elif event in (_IRQ_GATTC_SERVICE_RESULT, _IRQ_GATTC_CHARACTERISTIC_RESULT, _IRQ_GATTC_DESCRIPTOR_RESULT):
            if len(link.results) < _MAX_RESULTS:
                # service: (start, end, uuid); characteristic: (end, value handle, props, uuid);
                # descriptor: (handle, uuid)
                # (the UUID is the last argument; it becomes an int here)
                link.results.append(tuple(data[1:-1]) + (_u16(data[-1]),))
        elif event == _IRQ_ENCRYPTION_UPDATE:
            link.encrypted = bool(data[1])
            link.done = 0
        elif event == _IRQ_MTU_EXCHANGED:
            link.done = 0
        elif event in (_IRQ_GATTC_SERVICE_DONE, _IRQ_GATTC_CHARACTERISTIC_DONE, _IRQ_GATTC_DESCRIPTOR_DONE):
            link.done = data[1]
        elif event == _IRQ_GATTC_READ_DONE or event == _IRQ_GATTC_WRITE_DONE:
            link.done = data[2]
        link.flag.set()

    # -- alarms -------------------------------------------------------------------------
    async def _alarms(self):
        while True:
            await self._adv_flag.wait()
            self._wakes += 1
            while self._adv:
                d, adv, rx, woke = self._adv.pop(0)
                # How many times the alarm task woke between the IRQ and now:
                # 1 = handled in the first scheduling of the task after it.
                waits = self._wakes - woke
                self.counters["adverts"] += 1
                try:
                    await self._advert(d, adv, rx, waits)
                except MemoryError:
                    # Not even room to begin the retries (their own arguments):
                    # the task must live on for the next alarm.
                    self._lose(d, "no heap even to keep it")

    async def _advert(self, d, adv, rx, waits):
        try:
            # receive() changes the device's replay state only once it
            # succeeds, so decoding the same advert again is safe.
            res = await self._patiently(_MEMORY_TRIES, self._decode, d, adv)
        except CodecError as e:
            # A replay, a downgrade, a MIC failure: loud, a technical alarm.
            self.counters["rejected"] += 1
            await self._hand_over(d, "bthome_rejected", None, str(e), rx, waits)
            return
        if res is _FAILED:
            self._lose(d, "no heap to decode it for %d ms" % (_MEMORY_TRIES * _MEMORY_WAIT_MS))
            return
        if res is None:
            return
        for ev, obj, value in bthome.events(d.kind, res):
            if ev in ("door", "window", "opening"):
                if value == d.state:
                    continue
                d.state = value
            await self._hand_over(d, ev, obj, value, rx, waits)

    async def _hand_over(self, *fields):
        # One decoded alarm to the record path, behind any owed ones (the order
        # of a sensor's events is kept); owed when it cannot go now.
        if self._owed_n and not self._repay():
            res = _FAILED
        else:
            res = await self._patiently(_HANDOVER_TRIES, self._event, *fields)
        if res is not _FAILED:
            return
        if self._owed_n >= _OWED:
            self._lose(fields[0], "no heap or queue room, and %d alarms already wait" % _OWED)
            return
        base = (self._owed_head + self._owed_n) % _OWED * _OWED_FIELDS
        for i in range(_OWED_FIELDS):
            self._owed[base + i] = fields[i]
        self._owed_n += 1
        self.counters["owed"] += 1

    def _repay(self):
        # Owed alarms to the record path, oldest first; True when none is left.
        o = self._owed
        while self._owed_n:
            b = self._owed_head * _OWED_FIELDS
            try:
                self._event(o[b], o[b + 1], o[b + 2], o[b + 3], o[b + 4], o[b + 5])
            except (MemoryError, _Busy):
                if self._give_up_spare():
                    continue
                return False
            for i in range(_OWED_FIELDS):
                o[b + i] = None
            self._owed_head = (self._owed_head + 1) % _OWED
            self._owed_n -= 1
        return True

    async def _repayer(self):
        while True:
            await asyncio.sleep_ms(_REPAY_MS)
            if self._owed_n:
                gc.collect()
                self._repay()
            if not self._owed_n:
                self._take_spare()

    def _give_up_spare(self):
        # The spare block is what a hand-over fits in, however fragmented the
        # rest of the heap is: freed for it once; False when already given.
        if self._spare is None:
            return False
        self._spare = None
        self.counters["spare_used"] += 1
        gc.collect()
        return True

    def _take_spare(self):
        if self._spare is None:
            try:
                self._spare = bytearray(_SPARE)
            except MemoryError:
                pass  # taken again after a later alarm

    def _lose(self, d, why):
        # Counted (status: alarms_lost) and said on the console, if the heap
        # has room for the words.
        self.counters["lost"] += 1
        try:
            self.last_error = "%s: alarm lost, %s" % (d.name, why)
            print("hemhub sense:", self.last_error)
        except MemoryError:
            self.last_error = why

    async def _patiently(self, tries, fn, *args):
        # fn(*args), tried again while the heap is full (MemoryError) or the
        # record path's alarm queue is (_Busy), up to `tries` times; _FAILED
        # when it never went through.
        for _ in range(tries):
            try:
                res = fn(*args)
            except (MemoryError, _Busy) as e:
                if isinstance(e, MemoryError):
                    self.counters["no_memory"] += 1
                if self._give_up_spare():
                    continue
                gc.collect()
                await asyncio.sleep_ms(_MEMORY_WAIT_MS)
                continue
            self._take_spare()
            return res
        return _FAILED

    @staticmethod
    def _decode(d, adv):
        sd = bthome.service_data(adv)
        return None if sd is None else d.receiver.receive(sd)

    def _event(self, d, ev, obj, value, rx, waits):
        # MemoryError goes to _patiently, which tries again; any other failure of
        # the consumer must not stop alarms, but is said on the console.
        try:
            taken = self.on_event({"event": ev, "object": obj, "value": value, "addr": d.name, "kind": d.kind,
                                   "serves": d.serves, "rx_ticks": rx, "ticks": time.ticks_ms(), "waits": waits,
                                   # when it was received, also for one that was owed
                                   "time": time.time() - time.ticks_diff(time.ticks_ms(), rx) // 1000})
        except MemoryError:
            raise
        except Exception as e:
            self.counters["lost"] += 1
            self.last_error = repr(e)
            print("hemhub sense: alarm from", d.name, "not handed over:", self.last_error)
            return
        if taken is False:
            raise _Busy()
        self.counters["events"] += 1

    # -- the task -----------------------------------------------------------------------
    def _scan(self):
        # Passive, continuous, 100 % duty: an SOS advert is caught the first time.
        self.ble.gap_scan(0, 30000, 30000, False)

    async def run(self):
        self.ble.active(True)
        self._scan()
        asyncio.create_task(self._alarms())
        asyncio.create_task(self._repayer())
        while True:
            if not self._want:
                await self._want_flag.wait()
            if self._want and self.defer_links is not None:
                for _ in range(_DEFER_MAX_MS // _DEFER_MS):
                    if not self.defer_links():
                        break
                    await asyncio.sleep_ms(_DEFER_MS)
            if self._want:
                # The GATT side (link.py and the GATT codecs, ~13 KiB of RAM even
                # imported in place from ROMFS) is loaded for a link and dropped after it.
                d = self._want.pop(0)
                self.in_link = True
                if self.lend_heap is not None:
                    self.lend_heap()
                gc.collect()
                failed = self.counters["failed"]
                pause = 0
                try:
                    from hemhub.sense import link

                    await link.session(self, d)
                    self._short = 0
                except MemoryError as e:
                    # No room for a link now: the device keeps its data and advertises
                    # again; alarms (this task's other half) go on regardless.
                    self.counters["failed"] += 1
                    self.counters["no_memory"] += 1
                    self._short += 1
                    pause = min(_SHORT_MS << min(self._short - 1, 5), _SHORT_MAX_MS)
                    self.last_error = "%s %s: no memory for a GATT link (%s; %d B free; next in %d s)" % (
                        d.name, d.kind, e.args[0] if e.args else "", gc.mem_free(), pause // 1000)
                    print("hemhub sense:", self.last_error)
                finally:
                    from hemhub.sense import link_unload

                    link_unload()
                    gc.collect()
                    self.in_link = False
                    if self.return_heap is not None:
                        self.return_heap()
                if not pause and self.counters["failed"] != failed:
                    pause = _RETRY_MS
                if pause:
                    await asyncio.sleep_ms(pause)

    def busy(self):
        """True while a GATT link is open (a device deletes its stored records, and
        a new bond is saved, only at the link's end) or an alarm is owed (held
        in RAM until the record path takes it): a planned restart waits."""
        return self._link is not None or self._owed_n > 0

    def stats(self):
        c = dict(self.counters)
        c["enrolled"] = len(self.devices)
        c["link"] = None if self._link is None else self._link.dev.name
        c["last_error"] = self.last_error
        return c
