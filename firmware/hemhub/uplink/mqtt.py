"""An asyncio MQTT 3.1.1 client for the hub: QoS 1 out, QoS 0/1 in.

What umqtt lacks and this has (SYSTEM.md section 6, protocol/uplink.md 2 and 4):
PUBACK timeout with DUP resend, keep alive with PINGREQ and dead-connection
detection, a persistent session (clean session 0) with the unacknowledged
PUBLISHes re-sent (DUP) after a reconnect, resubscription after every CONNACK,
and a bounded window of messages in flight. Frames come from
hemhub.codec.mqtt; incoming packets are bounded to MAX_PACKET bytes and any
malformed one closes the connection with an MqttError, never a crash.

    c = Client(hub_id, open_stream, keepalive=60, will=(topic, payload),
               subscriptions=((ack_topic, 1),), on_message=f)
    await c.connect()            # CONNECT/CONNACK, SUBSCRIBE/SUBACK, DUP resends
    await c.publish(topic, payload, retain=False)   # QoS 1; waits for window room
    await c.publish(topic, seq)  # payload_of(seq) gives the bytes at each send
    reason = await c.wait_dead() # the connection ended: why
    await c.close()              # DISCONNECT (discards the will)

`open_stream()` is an async function returning (reader, writer), asyncio
streams: TLS in production (hemhub.uplink.tls), a fake in tests.

A payload given as an int is a key: `payload_of(key)` returns its bytes (or
None once it no longer exists) each time the PUBLISH is written, so a window
of records in flight holds no copies of them: the forwarder passes journal
seqs and reads each record into the journal's one read buffer.
"""
import asyncio
import time

from micropython import const

from hemhub.codec import mqtt as m

WINDOW = const(8)  # PUBLISH in flight (no PUBACK yet)
PUBACK_TIMEOUT_MS = const(10000)
CONNACK_TIMEOUT_MS = const(10000)
_TICK_MS = const(500)
_TX_START = const(512)


class MqttRefused(Exception):
    """The broker refused the CONNECT (CONNACK return code) or a subscription."""

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Client:
    def __init__(self, client_id, open_stream, keepalive=60, will=None, subscriptions=(),
                 on_message=None, window=WINDOW, puback_timeout_ms=PUBACK_TIMEOUT_MS,
                 max_packet=m.MAX_PACKET, ticks_ms=time.ticks_ms, payload_of=None):
        self.client_id = client_id
        self.open_stream = open_stream
        self.keepalive = keepalive
        self.will = will
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.window = window
        self.puback_timeout_ms = puback_timeout_ms
        self.max_packet = max_packet
        self.ticks = ticks_ms
        self.payload_of = payload_of
        # Outgoing frames. Made at start-up at the size of a status message or a
        # typical record, so that it does not grow later into a long-lived block
        # in the middle of a heap the session fragments; a larger record grows it.
        self._tx = bytearray(_TX_START)
        self._rx = bytearray(max_packet)  # one incoming packet at a time
        self._hdr = bytearray(1)
        self._inflight = {}  # pid -> [topic, payload or key, retain, sent_ms, sends]
        self._pid = 0
        self._r = self._w = None
        self._lock = asyncio.Lock()
        self._room = asyncio.Event()  # set when the window has room
        self._room.set()
        self._dead = asyncio.Event()
        self._suback = None
        self._tasks = ()
        self.reason = None  # why the last connection ended
        self.connected = False
        self.session_present = False
        self.last_rx = self.last_tx = 0
        self.counters = {"connects": 0, "sent": 0, "resent": 0, "pubacks": 0, "received": 0,
                         "pings": 0, "protocol_errors": 0, "dropped": 0}

    # ---- connection -------------------------------------------------------------

    async def connect(self):
        # Raises MqttRefused (CONNACK code, SUBACK failure), MqttError (protocol),
        # OSError / ValueError (network, TLS) or asyncio.TimeoutError.
        await self._drop()
        self._dead = asyncio.Event()
        self.reason = None
        r, w = await self.open_stream()
        self._r, self._w = r, w
        try:
            will_t, will_p = self.will if self.will else (None, b"")
            n = m.connect_into(self._tx_for(len(self.client_id) + len(will_t or "") + len(will_p) + 32),
                               self.client_id, self.keepalive, False, will_t, will_p, 1, True)
            await self._send(n)
            pkt = await asyncio.wait_for_ms(self._read_packet(), CONNACK_TIMEOUT_MS)
            if pkt is None:
                raise MemoryError("no heap to parse the CONNACK")
            if pkt[0] != m.CONNACK:
                raise m.MqttError("expected CONNACK, got packet type %d" % pkt[0])
            if pkt[2]:
                raise MqttRefused("refused: " + m.CONNACK_REASONS[pkt[2]], pkt[2])
            self.session_present = pkt[1]
            self.connected = True
            self.counters["connects"] += 1
            self._tasks = (asyncio.create_task(self._reader()), asyncio.create_task(self._timer()))
            for topic, qos in self.subscriptions:
                await self._subscribe(topic, qos)
            # 4.4: re-send every PUBLISH still without a PUBACK, DUP set, same id.
            for pid in sorted(self._inflight):
                e = self._inflight.get(pid)
                if e is not None:  # (a PUBACK may have come for it meanwhile)
                    e[4] = 0
                    await self._send_publish(pid, True)
        except BaseException:
            await self._drop()
            raise

    async def _subscribe(self, topic, qos):
        pid = self._next_pid()
        self._suback = ev = asyncio.Event()
        ev.result = None
        n = m.subscribe_into(self._tx_for(len(topic) + 8), pid, ((topic, qos),))
        await self._send(n)
        await asyncio.wait_for_ms(ev.wait(), CONNACK_TIMEOUT_MS)
        codes = ev.result
        if ev.pid != pid or codes is None or len(codes) != 1:
            raise m.MqttError("SUBACK does not answer SUBSCRIBE %d" % pid)
        if codes[0] == m.SUBACK_FAILURE:
            raise MqttRefused("subscribe-refused: the broker refused %s" % topic)

    async def wait_dead(self):
        await self._dead.wait()
        return self.reason

    async def close(self):
        # Clean disconnect: the broker discards the will (3.14).
        if self.connected:
            try:
                await asyncio.wait_for_ms(self._send_raw(m.DISCONNECT), 2000)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        await self._drop("closed")

    def _die(self, reason):
        if self.reason is None:
            self.reason = reason
        self.connected = False
        self._dead.set()
        self._room.set()  # wake publishers: they see the dead connection

    async def _drop(self, reason="dropped"):
        self._die(reason)
        cur = asyncio.current_task()
        for t in self._tasks:
            if t is not cur:
                t.cancel()
        self._tasks = ()
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
                await asyncio.wait_for_ms(w.wait_closed(), 1000)
            except Exception:  # noqa: BLE001 - the socket is going away regardless
                pass

    # ---- publishing ---------------------------------------------------------------

    def inflight(self):
        return len(self._inflight)

    async def publish(self, topic, payload, retain=False):
        # QoS 1. Returns the packet id once the PUBLISH is written; the message
        # stays in the window until its PUBACK (re-sent meanwhile as needed).
        while len(self._inflight) >= self.window:
            if not self.connected:
                raise OSError("not connected")
            self._room.clear()
            await self._room.wait()
        if not self.connected:
            raise OSError("not connected")
        pid = self._next_pid()
        self._inflight[pid] = [topic, payload, retain, self.ticks(), 0]
        try:
            await self._send_publish(pid, False)
        except MemoryError:
            # Nothing was written (no heap to read or frame it): the caller may
            # try again later on the same connection.
            self._release(pid)
            raise
        return pid

    async def _send_publish(self, pid, dup):
        async with self._lock:
            if self._w is None:
                raise OSError("not connected")
            e = self._inflight.get(pid)
            if e is None:  # PUBACKed while this waited for the lock
                return
            p = e[1]
            if isinstance(p, int):
                # No await from here to the write: payload_of may hand out a
                # shared buffer that the next reader refills.
                p = self.payload_of(p)
                if p is None:  # gone (the fleet acknowledged it meanwhile): nothing to send
                    self._release(pid)
                    return
            # One write, so one TLS record (two would cost 29 more bytes on the air).
            n = m.publish_into(self._tx_for(len(e[0]) + 8 + len(p)), e[0], p, 1, pid, dup, e[2])
            # A MemoryError up to here left the connection as it was; one in the
            # write may have sent part of the frame, which ends the connection.
            try:
                self._w.write(memoryview(self._tx)[:n])
                e[3] = self.ticks()
                e[4] += 1
                self.last_tx = e[3]
                await self._w.drain()
            except MemoryError:
                self._die("connection-lost: no heap to write a PUBLISH")
                raise OSError("no heap to write a PUBLISH") from None
        self.counters["resent" if dup else "sent"] += 1

    def _release(self, pid):
        # Takes a PUBLISH out of the window (PUBACKed, or not to be sent); True if it was in it.
        if self._inflight.pop(pid, None) is None:
            return False
        self._room.set()
        return True

    def _next_pid(self):
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._inflight:
                return self._pid
        raise OSError("no free packet identifier")

    # ---- sending ------------------------------------------------------------------

    def _tx_for(self, n):
        if len(self._tx) < n:
            self._tx = bytearray(n)
        return self._tx

    async def _send(self, n):
        async with self._lock:
            if self._w is None:
                raise OSError("not connected")
            self._w.write(memoryview(self._tx)[:n])
            self.last_tx = self.ticks()
            await self._w.drain()

    async def _send_raw(self, frame):
        async with self._lock:
            if self._w is None:
                raise OSError("not connected")
            self._w.write(frame)
            self.last_tx = self.ticks()
            await self._w.drain()

    # ---- receiving ------------------------------------------------------------------

    async def _fill(self, buf):
        mv = memoryview(buf)  # slices of it are views: readinto fills buf itself
        got = 0
        while got < len(mv):
            k = await self._r.readinto(mv[got:])
            if not k:
                raise OSError("connection closed by the broker")
            got += k

    async def _read_packet(self):
        # One packet: fixed header, remaining length (checked against the limit
        # before anything is read), body into the preallocated buffer.
        hdr = self._hdr
        await self._fill(hdr)
        first = hdr[0]
        n = 0
        shift = 0
        for i in range(5):
            if i == 4:
                raise m.MqttError("remaining length takes more than 4 bytes (2.2.3)")
            await self._fill(hdr)
            n |= (hdr[0] & 0x7F) << shift
            if not hdr[0] & 0x80:
                break
            shift += 7
        if n > self.max_packet:
            raise m.MqttError("packet too large: remaining length %d above the limit of %d"
                              % (n, self.max_packet))
        body = memoryview(self._rx)[:n]
        await self._fill(body)
        self.last_rx = self.ticks()
        try:
            return m.parse_body(first, body)
        except MemoryError:
            # The packet has been read whole: the stream is still in step. Dropped
            # like a lost packet (a PUBLISH is re-sent after its PUBACK timeout,
            # a fleet ack after the hub's resend), rather than ending a session
            # that the same full heap could not make again.
            self.counters["dropped"] += 1
            return None

    async def _reader(self):
        try:
            while True:
                pkt = await self._read_packet()
                if pkt is None:
                    continue
                t = pkt[0]
                if t == m.PUBACK:
                    if self._release(pkt[1]):
                        self.counters["pubacks"] += 1
                elif t == m.PUBLISH:
                    await self._incoming(pkt)
                elif t == m.SUBACK:
                    ev = self._suback
                    if ev is None:
                        raise m.MqttError("SUBACK without a SUBSCRIBE")
                    ev.pid, ev.result = pkt[1], pkt[2]
                    ev.set()
                elif t == m.PINGRESP:
                    pass
                else:
                    raise m.MqttError("unexpected CONNACK on an open connection")
        except m.MqttError as e:
            self.counters["protocol_errors"] += 1
            self._die("protocol-error: %s" % e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - network errors end the connection
            self._die("connection-lost: %s" % (e,))
        await self._drop()

    async def _incoming(self, pkt):
        _, topic, payload, qos, pid, dup, retain = pkt
        if qos == 2:
            raise m.MqttError("QoS 2 PUBLISH: the hub subscribes with QoS 1 at most")
        self.counters["received"] += 1
        if self.on_message is not None:
            try:
                self.on_message(topic, payload, dup)
            except Exception as e:  # noqa: BLE001 - a bad message must not end the session
                print("uplink: message on %s not handled: %r" % (topic, e))
        if qos == 1:
            n = m.puback_into(self._tx_for(4), pid)
            await self._send(n)

    async def _timer(self):
        # Keep alive (3.1.2.10) and PUBACK timeouts (protocol/uplink.md 4).
        ka = self.keepalive * 1000
        ping_sent = None
        try:
            while self.connected:
                await asyncio.sleep_ms(_TICK_MS)
                now = self.ticks()
                if ka:
                    if ping_sent is not None and time.ticks_diff(self.last_rx, ping_sent) >= 0:
                        ping_sent = None
                    if ping_sent is not None and time.ticks_diff(now, ping_sent) > min(ka, 10000):
                        self._die("dead: no PINGRESP")
                        break
                    if time.ticks_diff(now, self.last_rx) > ka * 3 // 2:
                        self._die("dead: nothing received for 1.5 x keep alive")
                        break
                    if ping_sent is None and time.ticks_diff(now, self.last_tx) >= ka:
                        ping_sent = now
                        self.counters["pings"] += 1
                        await self._send_raw(m.PINGREQ)
                while self.connected:
                    # One PUBLISH past its PUBACK timeout at a time (no list of
                    # them to allocate): the reader may change the window during
                    # each send's await.
                    late = None
                    for pid, e in self._inflight.items():
                        if time.ticks_diff(now, e[3]) >= self.puback_timeout_ms:
                            late = pid
                            break
                    if late is None:
                        break
                    if self._inflight[late][4] >= 2:
                        self._die("dead: no PUBACK for packet %d after a DUP resend" % late)
                        break
                    try:
                        await self._send_publish(late, True)
                    except MemoryError:
                        break  # not sent: tried again at the next tick
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - network errors end the connection
            self._die("connection-lost: %s" % (e,))
        if not self.connected:
            await self._drop()
