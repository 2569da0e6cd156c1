"""The forwarding task: journal -> MQTT, application acks -> journal.ack.

One owner task (protocol/uplink.md 3): connects (after the link is up), sends
the pending records alarms first, looking at the journal again after every
publish so an alarm committed meanwhile goes next; applies the fleet's acks
(Journal.ack, the only thing that deletes a record); publishes status; and
reconnects with backoff and jitter when the connection ends.
"""
import asyncio
import gc
import json
import os
import time

from micropython import const

from hemhub.journal_format import buffer as _read_buffer
from hemhub.uplink import ack as ackmod
from hemhub.uplink.mqtt import Client, MqttRefused

MAX_OUTSTANDING = const(32)  # PUBACKed records awaiting the fleet's ack
ACK_TIMEOUT_MS = const(30000)
_POLL_MS = const(50)
_BACKOFF_MIN_MS = const(1000)
_SHORT_WAIT_MS = const(100)  # a session's pause after a turn that found no heap
_SHORT_TURNS = const(100)  # and how many such turns in a row it waits out (~10 s)
_CONNECT_RESERVE = const(6144)  # kept free for the next connection's allocations
_BACKOFF_MAX_MS = const(60000)
# A heap too fragmented for a connection does not heal (MicroPython never
# compacts it): after this many failures in a row the uplink asks for a planned
# restart, never sooner after a boot than the uptime below, so a hub whose heap
# is short from the start cannot loop (docs/decisions/0006-planned-restart.md).
HEAP_RESTART_AFTER = const(3)
HEAP_RESTART_UPTIME_MS = const(300000)
_CLOCK_SET_AFTER = const(1577836800)
_SEQ_MAX = const(0x3FFFFFFF)  # protocol/uplink.md 3.2: 1 <= seq <= 2^30 - 1
_CLOCK_SLACK_S = const(60)
WILL = b'{"online": false}'


def _jitter(ms):
    # +-25 %
    r = os.urandom(1)[0]
    return ms * 3 // 4 + ms * r // 510


def describe(e):
    """A short reason for a failed connection (service selftest, status)."""
    if isinstance(e, MqttRefused):
        return e.reason
    if isinstance(e, asyncio.TimeoutError):
        return "timeout: no answer from the broker"
    if isinstance(e, ValueError):
        msg = str(e).strip()
        if "certificate" in msg or "CN" in msg or "cert" in msg:
            return "server-cert-rejected: " + msg.replace("\n", " ")
        return "protocol-error: " + msg
    if isinstance(e, OSError):
        code = e.args[0] if e.args else None
        if code == -202:  # lwIP: getaddrinfo with no network interface up
            return "unreachable: no network link is up"
        if code in (111, 113, 101, 110, 104):  # ECONNREFUSED EHOSTUNREACH ENETUNREACH ETIMEDOUT ECONNRESET
            return "unreachable: %s" % (e,)
        if isinstance(code, int) and code < -255:  # an mbedTLS error: handshake refused
            return "tls-rejected: %s" % (" ".join(str(a) for a in e.args),)
        if "closed" in str(e):
            return "closed-by-broker: the broker ended the connection (certificate refused or revoked?)"
        return "network: %s" % (e,)
    return "error: %r" % (e,)


def open_tls(host, port, server_name=None, base=None):
    # (open_stream for Client, the date check whose .error explains a refusal):
    # TLS to the broker with the hub's identity.
    from hemhub import uplink
    from hemhub.uplink import tls

    if base is None and uplink._tls is not None:
        ctx, check = uplink._tls  # made at start-up (uplink.prepare)
    else:
        ctx, check = tls.context(base or tls.DIR)

    async def open_stream():
        check.error = None
        return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_name or host)

    return open_stream, check


class Forwarder:
    def __init__(self, cfg, records, link=None, hub_id=None, open_stream=None, clock=time.time):
        self.cfg = cfg
        self.records = records
        self.link = link
        self.clock = clock
        self._hub = hub_id
        self._open = open_stream
        self._check = None
        self.client = None
        self.outstanding = {}  # seq -> ticks_ms when published
        self._pending = []  # Journal.pending's list, reused: send_next runs after every publish
        self._kick = asyncio.Event()
        self._seen = None
        self.last_error = None
        # True while a connection is being made, and through the pause after one
        # that the heap could not make: the TLS handshake is the heap's largest
        # short-lived need, and sensing starts no GATT link meanwhile (app.py).
        self.connecting = False
        self._reserve = None
        self._lent = False  # the reserve is lent to a GATT link (lend_reserve)
        self._take_reserve()  # at start-up, while the heap is in one piece
        # async restart(reason): set by the app; returns only if the hub was not
        # quiet enough to restart without losing anything (app.py).
        self.restart = None
        self.heap_failures = 0  # connections in a row the heap could not make
        self.counters = {"published": 0, "acked_ranges": 0, "bad_acks": 0, "skipped_ranges": 0,
                         "resent": 0, "connects": 0, "clock_set": 0,
                         "no_memory": 0}

    # ---- wiring -----------------------------------------------------------------

    def journal(self):
        rec = getattr(self.records, "recorder", None)
        return getattr(rec, "journal", None) if rec is not None else getattr(self.records, "journal", None)

    def _note(self, what):
        # Tell the link manager whether the link carried us (its health check).
        f = getattr(self.link, what, None)
        if f is not None:
            f()

    def kick(self):
        self._kick.set()

    def _make_client(self):
        if self._hub is None:
            from hemhub import identity

            self._hub = identity.hub_id()
        self.topics = ackmod.topics(self._hub)
        if self._open is None:
            c = self.cfg
            self._open, self._check = open_tls(c["broker_host"], c.get("broker_port", 8883),
                                               c.get("broker_name"))
        self.client = Client(self._hub, self._open, keepalive=self.cfg.get("mqtt_keepalive_s", 60),
                             will=(self.topics["status"], WILL),
                             subscriptions=((self.topics["ack"], 1),), on_message=self._on_message,
                             payload_of=self._record)

    def _record(self, seq):
        # The client's payload_of: record `seq` in the journal's read buffer, read
        # again for each send (a DUP resend too), so no copy waits in the window.
        buf = _read_buffer()
        r = self.journal().read_into(seq, buf)
        return None if r is None else memoryview(buf)[:r[1]]

    def lend_reserve(self):
        """A GATT link is about to start: between connections, the connect
        reserve is the largest free hole the hub has, and the link needs one.
        (While connected the reserve is already spent on the connection.)"""
        if self._reserve is not None:
            self._reserve = None
            self._lent = True

    def return_reserve(self):
        """The link is over and unloaded: keep the hole for the next connect again."""
        if self._lent:
            self._lent = False
            if not self.connecting:
                self._take_reserve()

    def _take_reserve(self):
        try:
            self._reserve = bytearray(_CONNECT_RESERVE)
        except MemoryError:
            self._reserve = None  # nothing to keep: the next connect tries anyway

    # ---- the task --------------------------------------------------------------------

    async def run(self):
        backoff = _BACKOFF_MIN_MS
        while self.journal() is None:  # the app opens it at start-up (Sink.open)
            await asyncio.sleep_ms(200)
        while self.client is None:
            # A MemoryError while the heap is fragmented or a TlsSetupError (files
            # missing) must not end the task: say why, wait, try again.
            try:
                self._make_client()
            except Exception as e:  # noqa: BLE001
                self.last_error = describe(e)
                print("uplink: cannot prepare the connection (%s); retry in ~%d s"
                      % (self.last_error, backoff // 1000))
                gc.collect()
                await asyncio.sleep_ms(_jitter(backoff))
                backoff = min(backoff * 2, _BACKOFF_MAX_MS)
        while True:
            if self.link is not None:
                await self.link.wait_up()
            # Each connection allocates its socket, TLS session and streams anew,
            # some of them blocks of ~1 KiB. MicroPython's heap is never compacted,
            # so after hours of sensing no hole that size may be left: the hole
            # this reserve kept since the last connection is handed over now.
            self.connecting = True
            self._reserve = None
            self._lent = False  # a link that borrowed it leaves the heap to this connect
            gc.collect()
            short_of_heap = False
            try:
                await self.client.connect()
                self.connecting = False
                self.counters["connects"] += 1
                self._note("note_ok")
                backoff = _BACKOFF_MIN_MS
                self.last_error = None
                await self._session()
                self.last_error = self.client.reason
            except Exception as e:  # noqa: BLE001 - every failure means: wait, reconnect
                check = self._check
                self.last_error = (check.error if check is not None and check.error else describe(e))
                short_of_heap = isinstance(e, MemoryError)
                if not short_of_heap:
                    # The hub's own heap is not the link's fault: failing over
                    # to 4G would load the modem driver into the heap that ran out.
                    self._note("note_failure")
                await self.client.close()
            self.connecting = short_of_heap
            gc.collect()
            self._take_reserve()
            print("uplink: disconnected (%s); retry in ~%d s" % (self.last_error, backoff // 1000))
            self.heap_failures = self.heap_failures + 1 if short_of_heap else 0
            if (short_of_heap and self.restart is not None and self.heap_failures >= HEAP_RESTART_AFTER
                    and time.ticks_ms() >= HEAP_RESTART_UPTIME_MS):
                await self.restart("uplink: %d connections in a row found no heap (%s)"
                                   % (self.heap_failures, self.last_error))
            await asyncio.sleep_ms(_jitter(backoff))
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)

    async def _session(self):
        interval = self.cfg.get("status_interval_s", 300) * 1000
        last_status = None
        link_type = self._link()[0]
        short = 0  # turns in a row that found no heap
        while self.client.connected:
            try:
                if (last_status is None or time.ticks_diff(time.ticks_ms(), last_status) >= interval
                        or self._link()[0] != link_type):
                    link_type = self._link()[0]
                    await self.publish_status()
                    last_status = time.ticks_ms()
                sent = await self.send_next()
                short = 0
            except MemoryError:
                # No heap to read or frame the next message (a GATT link holds
                # it for a while). Nothing was sent: wait and try again on this
                # connection, which the same heap could not make again. A heap
                # that stays full ends the session (the planned restart counts).
                short += 1
                if short > _SHORT_TURNS:
                    raise
                self.counters["no_memory"] += 1
                gc.collect()
                await asyncio.sleep_ms(_SHORT_WAIT_MS)
                continue
            if not sent:
                await self._idle()

    async def _idle(self):
        # Until something may be sendable: a kick, a new record, an ack, a tick.
        self._kick.clear()
        for _ in range(20):
            if self._kick.is_set() or not self.client.connected:
                return
            seq = getattr(self.records, "last_seq", None)
            if seq != self._seen:
                self._seen = seq
                return
            await asyncio.sleep_ms(_POLL_MS)

    async def send_next(self):
        # Publishes the first pending record not yet outstanding; False if none.
        # Its own state needs no allocation per record (a copy of the outstanding
        # map was a ~300-byte block per publish); the journal's cursors still
        # open a segment file (~300 B, freed at once) for pending() and the read.
        j = self.journal()
        now = time.ticks_ms()
        self.counters["resent"] += self._forget(0, _SEQ_MAX, now)
        if len(self.outstanding) >= MAX_OUTSTANDING:
            return False
        pending = j.pending(len(self.outstanding) + 1, out=self._pending)
        for i in range(len(pending)):
            seq = pending[i]
            if seq in self.outstanding:
                continue
            # The priority class is the alarms (journal.py); the client reads
            # the record itself when it writes the PUBLISH (_record).
            topic = self.topics["alarm"] if i < j.pending_priority else self.topics["rec"]
            self.outstanding[seq] = time.ticks_ms()
            try:
                await self.client.publish(topic, seq)
            except BaseException:
                del self.outstanding[seq]
                raise
            self.counters["published"] += 1
            return True
        return False

    def _forget(self, first, last, now=None):
        # Drops the outstanding seqs first..last (with `now`: only those published
        # more than ACK_TIMEOUT_MS before it, to be sent again: the fleet acks
        # again). One at a time, as a dict must not change while it is iterated,
        # and without a copy of it. Returns how many.
        n = 0
        while True:
            hit = None
            for seq, sent in self.outstanding.items():
                if first <= seq <= last and (now is None or time.ticks_diff(now, sent) > ACK_TIMEOUT_MS):
                    hit = seq
                    break
            if hit is None:
                return n
            del self.outstanding[hit]
            n += 1

    # ---- incoming -----------------------------------------------------------------------

    def _on_message(self, topic, payload, dup):
        if topic != self.topics["ack"]:
            return  # PUBACKed by the client and dropped (protocol/uplink.md 4)
        try:
            ranges, fleet_time = ackmod.decode_ack(payload)
        except ValueError as e:
            self.counters["bad_acks"] += 1
            print("uplink: ack ignored: %s" % e)
            return
        j = self.journal()
        from hemhub.journal import JournalError

        for a, b in ranges:
            try:
                j.ack(a, b)
                self.counters["acked_ranges"] += 1
            except JournalError as e:
                self.counters["skipped_ranges"] += 1
                print("uplink: ack range skipped: %s" % e)
            self._forget(a, b)
        if fleet_time is not None:
            self._set_clock(fleet_time)
        self._kick.set()

    def _set_clock(self, t):
        # protocol/uplink.md 5: from the fleet's time, over the verified session.
        now = self.clock()
        if now >= _CLOCK_SET_AFTER and abs(now - t) <= _CLOCK_SLACK_S:
            return
        try:
            import machine

            tm = time.gmtime(t)
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
            self.counters["clock_set"] += 1
        except Exception as e:  # noqa: BLE001 - keep running on the old clock
            print("uplink: clock not set: %r" % (e,))

    # ---- status --------------------------------------------------------------------------

    def _link(self):
        if self.link is None:
            return None, None
        try:
            s = self.link.state()
        except Exception:  # noqa: BLE001 - status must not fail on it
            return None, None
        if isinstance(s, dict):
            q = s.get("quality", s.get("rssi"))
            if isinstance(q, dict):  # the link manager's {"rssi"} or {"csq", "rssi_dbm"}
                q = q.get("rssi", q.get("rssi_dbm"))
            return s.get("type") or s.get("link"), q
        return s, None

    def status(self):
        import gc

        from hemhub import sense, version

        gc.collect()  # free heap means live data, not garbage not yet collected
        st = self.journal().stats()
        link, quality = self._link()
        now = int(self.clock())
        central = sense.current
        return {"online": True, "fw": version.VERSION, "link": link, "quality": quality,
                "pending": st["records"], "alarms": st["priority_records"], "dropped": st["dropped"],
                "uptime_s": time.ticks_ms() // 1000, "time": now, "unsynced": now < _CLOCK_SET_AFTER,
                "heap_free": gc.mem_free(),
                # BLE alarms sensing could not hand to the record path (a heap full for
                # seconds): never signed, so the fleet learns of them only here.
                "alarms_lost": central.counters["lost"] if central is not None else 0}

    async def publish_status(self):
        await self.client.publish(self.topics["status"], json.dumps(self.status()).encode(), True)
