"""Sensing -> record path: one task owns the hub's Recorder (sign + journal).

Sensing (the BLE central, the wired inputs) hands readings and alarm events
over through two bounded queues; the record task signs and commits them one at
a time, alarms first, yielding between records so that the central's IRQ side
and the BTHome alarm path keep running. Nonces for signing are precomputed in
idle time (the signer's pool, protocol/record.md section 7); measurements are
signed only while a nonce is left over for the next alarm, so an alarm never
waits for a k*G behind a burst of measurements.

Without an identity (hub not provisioned) nothing is signed: readings and
events stay in the in-RAM recent windows only, and `state()` says so.

Continuous oximetry (PLXS 0x2A5F) arrives several times a second: every sample
goes to the recent window, one sample per device per _CONTINUOUS_S is signed
(each journal append costs a flash block erase, docs/journal.md).
"""
import asyncio
import binascii
import gc
import os
import time

from micropython import const

_ALARMS = const(8)
_READINGS = const(8)
_CONTINUOUS_S = const(60)
_SYNC_MS = const(5000)
_MEMORY_WAIT_MS = const(50)  # a record that met a full heap is tried again after this
_OPEN_RETRY_MS = const(500)  # and a Recorder that could not be opened for it
_UUID_CONTINUOUS = const(0x2A5F)
_INFO = ("manufacturer", "model", "serial", "firmware")
_TEXT = const(64)
_IDENTITY_KEY = "/data/identity/key"  # hemhub.identity.DIR + "/key"

current = None


def start(make_recorder=None):
    """The application's sink (service.readings_json reports its state). The
    Recorder (journal + signer) is opened by Sink.open() when the hub forwards,
    else by the task at the first record, so a hub that neither forwards nor
    senses never touches its journal."""
    global current
    from hemhub.sense import recent

    recent.open_log()  # the event ring records from now on (service.events_json)
    current = Sink(make_recorder)
    current._check()
    return current


def _addr(name):
    # "C0:FF:EE:00:00:01" -> 6 bytes, most significant first (record.md Peripheral)
    return binascii.unhexlify(name.replace(":", ""))


def _text(v):
    v = str(v)
    return v if len(v) <= _TEXT else v[:_TEXT]


class Sink:
    def __init__(self, make_recorder=None):
        self._make = make_recorder
        self.recorder = None
        self.provisioned = make_recorder is not None
        self.mode = "starting"  # journal | ram-only (not provisioned) | failed: ...
        self._alarms = []
        self._readings = []
        self._flag = asyncio.ThreadSafeFlag()
        self._last_cont = {}  # addr -> hub time of the last continuous sample signed
        self.counters = {"alarms_signed": 0, "readings_signed": 0, "queue_full": 0, "sign_failed": 0,
                         "continuous_skipped": 0, "no_memory": 0}
        self.last_seq = None

    # -- hand-over (called by sensing; never blocks, never signs) --------------------------
    def alarm(self, type_, source=None, value=None, peripheral=None):
        if not self.provisioned:
            return True  # kept in the RAM ring only
        if len(self._alarms) >= _ALARMS:
            self.counters["queue_full"] += 1
            return False
        self._alarms.append((type_, source, value, peripheral))
        self._flag.set()
        return True

    def wired(self, event, ticks_ms, source):
        """gpio.start's emit: the hub's own door contact / service button; to be
        signed, and into the shared event ring once taken. False when the alarm
        queue is full: the line's task offers the event again (gpio.Line.offer_again)."""
        if not self.alarm(event, source):
            return False
        from hemhub.sense import recent

        recent.open_log().record(event, ticks_ms, source)
        return True

    def reading(self, r):
        """A decoded reading (central.py); False when it cannot be taken now."""
        if not self.provisioned:
            return True  # kept in RAM only (the recent window): nothing to sign with
        if r.get("uuid") == _UUID_CONTINUOUS:
            last = self._last_cont.get(r["addr"])
            if last is not None and r["hub_time"] - last < _CONTINUOUS_S:
                self.counters["continuous_skipped"] += 1
                return True
            self._last_cont[r["addr"]] = r["hub_time"]
        if len(self._readings) >= _READINGS:
            self.counters["queue_full"] += 1
            return False
        self._readings.append(r)
        self._flag.set()
        return True

    def drained(self):
        """True when no alarm or reading waits in RAM to be signed and committed."""
        return not self._alarms and not self._readings

    async def sync(self):
        """True once every reading handed over is committed to the journal (the
        central deletes a device's stored records only then); False when there
        is no journal or it did not happen within _SYNC_MS."""
        end = time.ticks_add(time.ticks_ms(), _SYNC_MS)
        while self._readings:
            if time.ticks_diff(end, time.ticks_ms()) <= 0:
                return False
            await asyncio.sleep_ms(5)
        return self.recorder is not None and self.counters["sign_failed"] == 0

    # -- the task ---------------------------------------------------------------------------
    def _check(self):
        if self._make is None:
            try:
                # identity.state() != "none", without loading P-256 on a hub that has no key
                os.stat(_IDENTITY_KEY)
                self.provisioned = True
                self.mode = "journal (opened at the first record)"
            except OSError:
                self.mode = "ram-only (hub not provisioned: no identity)"

    def _open(self):
        try:
            if self._make is not None:
                self.recorder = self._make()
            else:
                from hemhub import identity
                from hemhub.recorder import Recorder

                self.recorder = Recorder(identity.hub_id(), identity.signer(pool_size=2))
            self.mode = "journal"
        except MemoryError as e:  # for a moment: run() tries again, alarms stay queued
            self.mode = "opening (%s)" % _text(repr(e))
        except Exception as e:  # no factory record, damaged /data: say so, keep sensing
            self.provisioned = False
            self._alarms = []
            self._readings = []
            self.mode = "failed: %s" % _text(repr(e))

    def open(self):
        """Open the Recorder now rather than at the first record: the app does
        this at start-up when it forwards, so a backlog drains at once and the
        journal's and signer's buffers are made before the heap fragments."""
        if self.provisioned and self.recorder is None:
            self._open()
            if self.recorder is None:
                print("hemhub records:", self.mode)

    async def run(self):
        if not self.provisioned:
            return
        if self.recorder is None:
            await self._flag.wait()  # the first record to sign
        while self.recorder is None:
            self.open()
            if not self.provisioned:
                return
            if self.recorder is None:
                gc.collect()
                await asyncio.sleep_ms(_OPEN_RETRY_MS)
        rec = self.recorder
        signer = rec.signer
        while True:
            if self._alarms:
                done = self._commit(rec, self._alarms, self._alarm)
            elif self._readings and signer.ready() > 1:
                done = self._commit(rec, self._readings, self._reading)
            elif signer.refill():
                done = True  # one nonce (a k*G) per turn, then let everything else run
            else:
                await self._flag.wait()
                continue
            await asyncio.sleep_ms(0 if done else _MEMORY_WAIT_MS)

    def _commit(self, rec, queue, commit):
        # Signs and stores queue[0]; it leaves the queue only once it is in the
        # journal or failed for a reason other than a momentarily full heap, so
        # a MemoryError never loses an alarm or a reading (the journal gives the
        # unused seq back). False: try again after a pause.
        try:
            self.last_seq = commit(rec, queue[0])
        except MemoryError:
            self.counters["no_memory"] += 1
            if self.counters["no_memory"] == 1:
                print("hemhub records: MemoryError signing a record; it is kept and tried again")
            gc.collect()
            return False
        except Exception as e:
            self._failed(e)
            print("hemhub records: record not signed:", self.mode)
        else:
            self.counters["alarms_signed" if queue is self._alarms else "readings_signed"] += 1
        queue.pop(0)
        return True

    @staticmethod
    def _alarm(rec, a):
        type_, source, value, peripheral = a
        return rec.event(type_, source=source, value=value, peripheral=peripheral)

    @staticmethod
    def _reading(rec, r):
        obs = []
        for o in r["observations"]:
            x = {"mdc": o["mdc"], "value": o["value"], "unit": o["unit"]}
            if o["value"] is None:
                x["reason"] = o.get("reason") or "reserved"
            obs.append(x)
        info = {}
        dev = r.get("device") or {}
        for k in _INFO:
            if dev.get(k):
                info[k] = _text(dev[k])
        periph = {"addr": _addr(r["addr"]), "addr_type": 0, "kind": r["kind"]}
        if info:
            periph["info"] = info
        from hemhub.record import device_time

        return rec.observations(obs[:16], periph, device_time(r.get("time")), r.get("user_id"))

    def _failed(self, e):
        self.counters["sign_failed"] += 1
        self.mode = "journal (last failure: %s)" % _text(repr(e))

    def state(self):
        c = dict(self.counters)
        c["mode"] = self.mode
        c["queued"] = len(self._alarms) + len(self._readings)
        c["last_seq"] = self.last_seq
        return c


def event_record(ev):
    """A BLE alarm event (central.py) as Recorder.event arguments."""
    t = ev["event"]
    v = ev["value"]
    if t in ("door", "window", "opening"):
        t = "%s_%s" % ("window" if t == "window" else "door", "open" if v else "close")
    if isinstance(v, str):
        v = _text(v)
    elif v is not None and not isinstance(v, (bool, int)):
        v = _text(v)
    periph = {"addr": _addr(ev["addr"]), "addr_type": 0, "kind": ev["kind"]}
    return t, ev.get("object"), v, periph
