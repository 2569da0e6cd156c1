"""One GATT session with an enrolled health device (the central's slow side).

Loaded by central.Central.run() for a link and dropped after it
(hemhub.sense.link_unload()),
together with the GATT codecs: an ESP32 build freezes them into flash, the
virtual hub keeps .mpy bytecode in RAM, and both sides together do not fit a
96 KiB heap beside the always-on alarm path. Functions take the Central as
`self` (its IRQ handler fills the _Link they wait on).

Steps (protocol/gatt.md for the values): connect (the scan pauses only while
the connection is being made), exchange MTU, pair/bond if the profile needs it,
discover, read Device Information and Battery, set the clock (Current Time
0x2A2B) if the hub's clock is trusted, subscribe (CCCD 0x2902), fetch stored
records (RACP 0x2A52: report number, report all, confirm each, then delete),
then stay while the device talks and leave when it has been quiet _IDLE_MS.
"""
import asyncio
import time

from micropython import const

from hemhub.codec import CodecError, gatt
from hemhub.codec.names import word
from hemhub.sense.central import Disconnected, _Link

_PROP_WRITE = const(0x08)
_PROP_INDICATE = const(0x20)
_UUID_CCCD = const(0x2902)
_UUID_RACP = const(0x2A52)
_UUID_CURRENT_TIME = const(0x2A2B)
_UUID_BATTERY = const(0x2A19)
_SEEN = const(48)  # recent record keys (dedupe across reconnects)
_BATCH = const(8)  # stored records a link takes beyond those handed over before
_UUID_STORED = const(0x2A5E)  # where RACP reports stored records: PLX Spot-Check Measurement
_OP_MS = const(3000)
_CONNECT_MS = const(2500)
_IDLE_MS = const(2000)  # a device quiet this long has sent everything
_LINK_MS = const(60000)  # a stuck link ends here whatever the device does
_TRUSTED_YEAR = const(2024)  # the hub's RTC starts at 2000 until the uplink sets it
# Device Information (0x180A) and Battery (0x180F) characteristics read at connection
_INFO_UUIDS = (0x2A29, 0x2A24, 0x2A25, 0x2A26)
_INFO_KEYS = "manufacturer model serial firmware"  # word k: what _INFO_UUIDS[k] holds
_EXTRA_SERVICES = (0x180A, 0x180F, 0x1805)


async def _wait(self, link, cond, ms=_OP_MS):
    """Wait until cond() holds; TimeoutError when it does not in time, Disconnected
    when the link goes (the two are told apart, as aioble's DeviceTimeout does)."""
    end = time.ticks_add(time.ticks_ms(), ms)
    while not cond():
        if link.ended:
            raise Disconnected()
        left = time.ticks_diff(end, time.ticks_ms())
        if left <= 0:
            raise asyncio.TimeoutError()
        try:
            await asyncio.wait_for_ms(link.flag.wait(), left)
        except asyncio.TimeoutError:
            pass

async def _op(self, link, ms, start, *args):
    # start(*args) begins a GATT operation; its status (0 = done) once the IRQ
    # handler has it
    link.done = None
    link.results = []
    link.value = None
    start(*args)
    await _wait(self, link, lambda: link.done is not None, ms)
    return link.done

async def _discover(self, link):
    h = link.handle
    await _op(self, link, _OP_MS, self.ble.gattc_discover_services, h)
    wanted = (link.dev.profile[0],) + _EXTRA_SERVICES
    services = [s for s in link.results if s[2] in wanted]
    chars = {}
    for start, end, _u in services:
        await _op(self, link, _OP_MS, self.ble.gattc_discover_characteristics, h, start, end)
        for c_end, vh, props, uuid in link.results:
            chars[uuid] = (vh, c_end, props)
            link.uuids[vh] = uuid
    return chars

async def _subscribe(self, link, vh, c_end, props):
    h = link.handle
    await _op(self, link, _OP_MS, self.ble.gattc_discover_descriptors, h, vh + 1, c_end)
    for dh, uuid in link.results:
        if uuid == _UUID_CCCD:
            value = b"\x02\x00" if props & _PROP_INDICATE else b"\x01\x00"
            return await _op(self, link, _OP_MS, self.ble.gattc_write, h, dh, value, 1) == 0
    return False

async def _read(self, link, vh):
    if await _op(self, link, _OP_MS, self.ble.gattc_read, link.handle, vh) == 0:
        return link.value
    return None

async def session(self, d):
    link = _Link(d)
    self._link = link
    ble = self.ble
    try:
        ble.gap_scan(None)  # the controller cannot start a connection while it scans
        ble.gap_connect(0, d.addr, _CONNECT_MS)
        try:
            await _wait(self, link, lambda: link.up, _CONNECT_MS + 500)
        except asyncio.TimeoutError:
            ble.gap_connect(None)
            raise
        finally:
            if not link.up:  # once connected, the central's IRQ handler resumed the scan
                self._scan()
        self.counters["connections"] += 1
        await asyncio.wait_for_ms(_transfer(self, link), _LINK_MS)
    except (Disconnected, asyncio.TimeoutError, OSError, CodecError) as e:
        self.counters["failed"] += 1
        self.last_error = "%s %s: %r" % (d.name, d.kind, e)
    finally:
        if link.up and not link.ended:
            try:
                ble.gap_disconnect(link.handle)
                await _wait(self, link, lambda: False, 1000)
            except (OSError, Disconnected, asyncio.TimeoutError):
                pass
        self._link = None
        if self.keys:
            self.keys.save()

async def _transfer(self, link):
    d = link.dev
    h = link.handle
    try:
        await _op(self, link, 1000, self.ble.gattc_exchange_mtu, h)
    except asyncio.TimeoutError:
        pass  # the default MTU (23) does for every health measurement
    if d.bond:
        await _op(self, link, 5000, self.ble.gap_pair, h)
        if not link.encrypted:
            raise OSError("pairing failed")
    chars = await _discover(self, link)
    for k, uuid in enumerate(_INFO_UUIDS):
        if uuid in chars:
            v = await _read(self, link, chars[uuid][0])
            if v is not None:
                d.info[word(_INFO_KEYS, k)] = v.decode("utf-8", "replace") if isinstance(v, bytes) else None
    if _UUID_BATTERY in chars:
        v = await _read(self, link, chars[_UUID_BATTERY][0])
        if v:
            d.info["battery"] = v[0]
    ct = chars.get(_UUID_CURRENT_TIME)
    if ct and ct[2] & _PROP_WRITE and time.gmtime()[0] >= _TRUSTED_YEAR:
        t = time.gmtime()
        # CTS 3.1: adjust reason bit 1, external reference time update
        data = gatt.encode_current_time(t[:6], t[6] + 1, 0, 2)
        d.info["clock_set"] = await _op(self, link, _OP_MS, self.ble.gattc_write, h, ct[0], data, 1) == 0
    for uuid in d.profile[1]:
        if uuid in chars:
            vh, c_end, props = chars[uuid]
            await _subscribe(self, link, vh, c_end, props)
    if _UUID_RACP in chars and not await _fetch_records(self, link, chars[_UUID_RACP][0]):
        return  # the rest of the report would only fill the queue: the next link goes on
    # Stay while the device talks (stored measurements, a stream); leave when quiet.
    while True:
        try:
            await _wait(self, link, lambda: link.values, _IDLE_MS)
        except asyncio.TimeoutError:
            return
        await _drain(self, link)

async def _drain(self, link, report=False):
    """Deliver queued values (while a report of stored records runs, those go
    to _take); returns the last RACP response seen."""
    got = None
    while link.values:
        vh, raw, n = link.values.pop(0)
        uuid = link.uuids.get(vh)
        if uuid is None:
            continue
        if report and n:
            _take(self, link, uuid, raw, n - 1)
            continue
        res = _decode(self, link.dev, uuid, raw)
        if res is None:
            continue
        if uuid == _UUID_RACP:
            got = res
            continue
        _deliver(self, link.dev, uuid, res, raw)
        await asyncio.sleep_ms(0)  # let alarms run between readings
    return got

def _decode(self, d, uuid, raw):
    """gatt.decode, or None for a value that does not decode (counted, said in last_error)."""
    try:
        return gatt.decode(uuid, raw)
    except CodecError as e:
        self.counters["invalid"] += 1
        self.last_error = "%s 0x%04X: %s" % (d.name, uuid, e)
        return None

def _reading(self, d, uuid, res, raw):
    res["addr"] = d.name
    res["kind"] = d.kind
    res["serves"] = d.serves
    res["uuid"] = uuid
    res["device"] = d.info
    res["hub_time"] = time.time()
    t = res.get("time")
    # A key to drop the same stored record sent again after a reconnect: the
    # device's own time stamp (set or not) is part of the bytes.
    res["_key"] = bytes(raw) if t and t[0] else None
    if not t or not t[0] or res.get("device_clock_not_set"):
        # no time stamp, "not known" (year 0), or a clock the device says was never set
        res["time"] = t = None
    res["device_time"] = gatt.time_iso(t) if t else None
    return res

def _seen_before(self, key):
    if key is None:
        return False
    if key in self._seen:
        self.counters["duplicates"] += 1
        return True
    return False

def _deliver(self, d, uuid, res, raw):
    """Hand one reading on; True when the consumer confirmed it is stored."""
    if not isinstance(res.get("addr"), str):
        res = _reading(self, d, uuid, res, raw)
    key = res.pop("_key")
    if _seen_before(self, key):
        return True
    try:
        ok = self.on_reading(res) is not False
    except Exception as e:
        self.last_error = repr(e)
        ok = False
    if not ok:
        res["_key"] = key  # offered again (a stored record waits for room)
        return False
    self.counters["readings"] += 1
    if key is not None:
        self._seen.append(key)
        del self._seen[:-_SEEN]
    return True

async def _racp(self, link, vh, op, report=False, ms=_OP_MS * 3):
    req = gatt.profile("gatt_racp").encode_racp(op, "all")
    if await _op(self, link, _OP_MS, self.ble.gattc_write, link.handle, vh, req, 1) != 0:
        return None
    end = time.ticks_add(time.ticks_ms(), ms)
    while True:
        await _wait(self, link, lambda: link.values, max(1, time.ticks_diff(end, time.ticks_ms())))
        got = await _drain(self, link, report)
        if got is not None:
            return got
        if report and link.stopped:
            return None  # the report was cut short: its answer is not awaited

def _start_report(link, vh):
    """Begin one RACP report of stored records (PLXS 3.4) on value handle vh.

    A device may hold hundreds: decoded and held until the report ends they
    would not fit the heap, and signed as they arrive they would stall the
    event loop while the device goes on sending (the link's queue of _QUEUE
    values then drops some). So a link takes the raw values of at most _BATCH
    records beyond those an earlier link handed over (Peripheral.racp_done:
    skipped without decoding), hands them on after the report (_hand_over),
    and the next link goes on from there. Records are numbered as they arrive
    (central.py counts them in the IRQ, dropped or not), so the batch is a
    contiguous run: a dropped record ends it, a dropped one that an earlier
    link handed over does not matter. The report's state lives on the link:
    skip and key (what racp_done said), batch ((uuid, value) of this link's
    records) and stopped."""
    link.skip, link.key = link.dev.racp_done or (0, None)
    link.batch = []
    link.stopped = False
    link.arrived = 0
    link.count_vh = vh


def _take(self, link, uuid, raw, i):
    # a stored record, i its place in the report from 0
    if link.stopped:
        return
    if i < link.skip:
        self.counters["duplicates"] += 1
        if i == link.skip - 1 and raw != link.key:
            # Not the list an earlier link saw (the device dropped or reordered
            # records): start from its first record next time (_seen drops repeats).
            link.dev.racp_done = None
            link.stopped = True
    elif i == link.skip + len(link.batch) and len(link.batch) < _BATCH:
        link.batch.append((uuid, raw))
    else:
        link.stopped = True  # the one before was dropped, or a full batch: the next link goes on


async def _hand_over(self, link):
    """Decode and hand on the report's batch, each once the record path has
    room; True when every record of it was taken."""
    d = link.dev
    done = link.skip
    for uuid, raw in link.batch:
        res = _decode(self, d, uuid, raw)
        if res is not None:  # (one that never decodes is handled, not kept)
            r = _reading(self, d, uuid, res, raw)
            end = time.ticks_add(time.ticks_ms(), _OP_MS)
            while not _deliver(self, d, uuid, r, raw):
                # The record path's queue is full (it signs one at a time).
                if time.ticks_diff(end, time.ticks_ms()) <= 0:
                    return False
                await asyncio.sleep_ms(20)
        done += 1
        d.racp_done = (done, raw)
    return True


async def _fetch_records(self, link, vh):
    """PLXS 3.4: report stored records, hand them on a batch per link
    (_start_report), delete them only when every one is confirmed stored (sync: in
    the journal). A link that ends first leaves them on the device. Returns
    False when the report was cut short: the link then ends, the next goes on."""
    n = await _racp(self, link, vh, "report_number_of_stored_records")
    if not n or not n.get("count"):
        link.dev.racp_done = None
        return True
    if self.sync is not None:
        await self.sync()  # an idle record path does not stall the loop while values arrive
    spot = None
    for h, u in link.uuids.items():
        if u == _UUID_STORED:
            spot = h
    if spot is None:
        return True  # no characteristic of ours carries its records
    _start_report(link, spot)
    try:
        resp = await _racp(self, link, vh, "report_stored_records", True)
    finally:
        link.count_vh = None
    if not await _hand_over(self, link) or link.stopped:
        return False
    if not resp or resp.get("response") != "success" or link.skip + len(link.batch) != n["count"]:
        return False
    if self.sync is not None and not await self.sync():
        return True  # not committed (or no journal): the device keeps them
    await _racp(self, link, vh, "delete_stored_records")
    link.dev.racp_done = None
    return True
