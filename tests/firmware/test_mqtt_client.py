# The asyncio MQTT client (hemhub.uplink.mqtt) against a scripted fake stream:
# exact bytes out, scripted bytes in. Time is a fake ticks counter the tests
# advance, so PUBACK and keep-alive timeouts need no waiting for real time.
import sys

import uselect
import utime

# mprun puts the virtual hub's board modules on the path; their time/select
# talk to a world this plain interpreter does not have: use the port's own.
sys.modules["time"] = utime
sys.modules["select"] = uselect

import asyncio  # noqa: E402

from hemhub.uplink.mqtt import Client, MqttRefused  # noqa: E402
from vectors import hexstr  # noqa: E402

HID = "HH1-TEST-0001"
ACK = "hemhub/HH1-TEST-0001/ack"
STATUS = "hemhub/HH1-TEST-0001/status"


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


class FakeStream:
    # Both ends of one connection: what the client writes, what it reads.
    def __init__(self):
        self.out = bytearray()
        self.inbox = bytearray()
        self.ev = asyncio.Event()
        self.closed = False

    def feed(self, hexstr):
        self.inbox += bytes.fromhex(hexstr)
        self.ev.set()

    async def readinto(self, buf):
        while not self.inbox:
            if self.closed:
                return 0
            self.ev.clear()
            await self.ev.wait()
        n = min(len(buf), len(self.inbox))
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def write(self, data):
        if self.closed:
            raise OSError("closed")
        self.out += bytes(data)

    async def drain(self):
        pass

    def close(self):
        self.closed = True
        self.ev.set()

    async def wait_closed(self):
        pass

    def take(self):
        h = hexstr(bytes(self.out))
        self.out = bytearray()
        return h


class Net:
    def __init__(self):
        self.streams = []

    async def open(self):
        s = FakeStream()
        self.streams.append(s)
        return s, s

    @property
    def s(self):
        return self.streams[-1]


def _client(net, clock, **kw):
    return Client(HID, net.open, keepalive=kw.pop("keepalive", 60), will=(STATUS, b'{"online": false}'),
                  subscriptions=((ACK, 1),), ticks_ms=clock, **kw)


async def _connected(net, c, session_present="00"):
    t = asyncio.create_task(c.connect())
    await asyncio.sleep_ms(10)
    net.s.feed("2002" + session_present + "00")  # CONNACK accepted
    await asyncio.sleep_ms(10)
    net.s.feed("9003%04x01" % c._pid)  # SUBACK for the SUBSCRIBE just sent, QoS 1
    await t


# protocol/vectors/mqtt.json "connect_hub": remaining 0x49 = 73; flags 0x2C = will retain |
# will QoS 1 | will flag, clean session 0; keep alive 0x003c
CONNECT = "104900044d515454042c003c000d4848312d544553542d30303031001b68656d6875622f4848312d544553542d303030312f73746174757300117b226f6e6c696e65223a2066616c73657d"
SUBSCRIBE = "821d0001" + "0018" + ACK.encode().hex() + "01"


def _run(coro):
    asyncio.run(coro)
    asyncio.new_event_loop()


def test_connect_subscribe_exact_bytes():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock)
        await _connected(net, c)
        assert net.s.take() == CONNECT + SUBSCRIBE
        assert c.connected and not c.session_present
        await c.close()
        assert net.s.take() == "e000"  # DISCONNECT: the broker drops the will

    _run(main())


def test_publish_qos1_and_puback_frees_the_window():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock, window=2)
        await _connected(net, c)
        net.s.take()
        topic = "hemhub/%s/rec" % HID
        pid = await c.publish(topic, b"\xd2\x84")
        assert pid == 2  # 1 went to the SUBSCRIBE
        # 0x32 QoS 1; remaining 2+24 topic + 2 pid + 2 payload = 30 = 0x1e
        assert net.s.take() == "321e0018" + topic.encode().hex() + "0002" + "d284"
        await c.publish(topic, b"x")
        assert c.inflight() == 2
        blocked = asyncio.create_task(c.publish(topic, b"y"))
        await asyncio.sleep_ms(20)
        assert c.inflight() == 2 and not blocked.done()  # the window is full: waits
        net.s.feed("40020002")  # PUBACK 2
        await asyncio.sleep_ms(20)
        assert blocked.done() and c.inflight() == 2
        assert c.counters["pubacks"] == 1
        await c.close()

    _run(main())


def test_puback_timeout_resends_with_dup_then_declares_dead():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock, puback_timeout_ms=10000)
        await _connected(net, c)
        net.s.take()
        await c.publish("t/x", b"AB")
        # 0x32 PUBLISH QoS 1; remaining 2+3 topic + 2 packet id + 2 payload = 9
        assert net.s.take() == "3209" + "0003742f78" + "0002" + "4142"
        clock.now += 10001
        await asyncio.sleep_ms(700)
        # the same PUBLISH, same packet id, DUP set: 0x3A (3.3.1.1)
        assert net.s.take() == "3a09" + "0003742f78" + "0002" + "4142"
        assert c.connected and c.counters["resent"] == 1
        clock.now += 10001
        reason = await asyncio.wait_for_ms(c.wait_dead(), 2000)
        assert "no PUBACK" in reason and not c.connected
        assert c.inflight() == 1  # kept for the next connection

    _run(main())


def test_reconnect_resends_inflight_with_dup():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock)
        await _connected(net, c)
        await c.publish("t/x", b"AB")
        net.s.close()  # the link drops
        reason = await asyncio.wait_for_ms(c.wait_dead(), 2000)
        assert reason.startswith("connection-lost")
        await _connected(net, c, session_present="01")
        # CONNECT, SUBSCRIBE (pid 3), then the unacknowledged PUBLISH 2 with DUP
        out = net.s.take()
        assert out.startswith(CONNECT)
        assert out.endswith("3a09" + "0003742f78" + "0002" + "4142")
        assert c.session_present
        net.s.feed("40020002")
        await asyncio.sleep_ms(20)
        assert c.inflight() == 0
        await c.close()

    _run(main())


def test_keepalive_ping_and_dead_connection():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock, keepalive=10)
        await _connected(net, c)
        net.s.take()
        clock.now += 10000
        await asyncio.sleep_ms(700)
        assert net.s.take() == "c000"  # PINGREQ after 10 s without sending
        net.s.feed("d000")  # PINGRESP
        await asyncio.sleep_ms(20)
        clock.now += 16000  # then silence beyond 1.5 x keep alive
        reason = await asyncio.wait_for_ms(c.wait_dead(), 2000)
        assert reason.startswith("dead"), reason

    _run(main())


def test_incoming_ack_is_delivered_and_pubacked():
    got = []

    async def main():
        net, clock = Net(), Clock()
        c = Client(HID, net.open, subscriptions=((ACK, 1),), ticks_ms=clock,
                   on_message=lambda t, p, d: got.append((t, bytes(p), d)))
        await _connected(net, c)
        net.s.take()
        body = "0018" + ACK.encode().hex() + "0005" + "a16461636b738182010a"
        net.s.feed("32%02x" % (len(body) // 2) + body)
        await asyncio.sleep_ms(20)
        assert net.s.take() == "40020005"  # PUBACK 5
        await c.close()

    _run(main())
    assert got == [(ACK, bytes.fromhex("a16461636b738182010a"), False)]


def test_hostile_frames_end_the_connection_cleanly():
    cases = (
        ("0000", "reserved packet type"),
        ("30ffffff7f", "too large"),
        ("30ffffffff7f", "more than 4 bytes"),
        ("20020000", "unexpected CONNACK"),
        ("34060001740004" + "71", "QoS 2"),
        ("3005" + "0003612f23", "wildcard"),
        ("9003000103", "SUBACK"),
    )
    for frame, why in cases:
        async def main(frame=frame, why=why):
            net, clock = Net(), Clock()
            c = _client(net, clock)
            await _connected(net, c)
            net.s.feed(frame)
            reason = await asyncio.wait_for_ms(c.wait_dead(), 2000)
            assert reason.startswith("protocol-error") and why in reason, (frame, reason)
            assert net.s.closed and not c.connected
            assert c.counters["protocol_errors"] == 1
            await _connected(net, c)  # and the client can connect again
            assert c.connected
            await c.close()

        _run(main())


def test_refusals_are_reported_by_name():
    async def main():
        net, clock = Net(), Clock()
        c = _client(net, clock)
        t = asyncio.create_task(c.connect())
        await asyncio.sleep_ms(10)
        net.s.feed("20020005")
        try:
            await t
        except MqttRefused as e:
            assert e.code == 5 and "not authorized" in e.reason
        else:
            raise AssertionError("no refusal")
        assert net.s.closed
        t = asyncio.create_task(c.connect())
        await asyncio.sleep_ms(10)
        net.s.feed("20020000")
        await asyncio.sleep_ms(10)
        net.s.feed("9003%04x80" % c._pid)  # SUBACK failure (the ACL refused the filter)
        try:
            await t
        except MqttRefused as e:
            assert "subscribe-refused" in e.reason
        else:
            raise AssertionError("no refusal")

    _run(main())


def test_a_keyed_payload_is_read_at_each_send_and_not_held_in_the_window():
    # The forwarder publishes journal seqs: payload_of(seq) reads the record for
    # the first send and again for a DUP resend; the window keeps only the key.
    async def main():
        net, clock = Net(), Clock()
        store = {7: b"AB", 8: b"CD"}
        reads = []

        def payload_of(key):
            reads.append(key)
            return store.get(key)

        c = _client(net, clock, payload_of=payload_of)
        await _connected(net, c)
        net.s.take()
        await c.publish("t/x", 7)
        assert net.s.take() == "3209" + "0003742f78" + "0002" + "4142"
        assert c._inflight[2][1] == 7  # the key, not a copy of the record
        net.s.close()
        await asyncio.wait_for_ms(c.wait_dead(), 2000)
        await _connected(net, c, session_present="01")
        assert net.s.take().endswith("3a09" + "0003742f78" + "0002" + "4142")  # read again, DUP
        assert reads == [7, 7]
        # A record that is gone by its resend (the fleet acknowledged it) leaves
        # the window without a PUBLISH.
        await c.publish("t/x", 8)
        net.s.take()
        del store[8]
        clock.now += 10001
        await asyncio.sleep_ms(700)
        assert net.s.take() == "3a09" + "0003742f78" + "0002" + "4142"  # 7 still unacked: resent
        assert c.inflight() == 1 and 8 not in [e[1] for e in c._inflight.values()]
        await c.close()

    _run(main())


def test_no_heap_to_read_a_record_or_parse_a_packet_keeps_the_connection():
    # A MemoryError before anything is written leaves the window as it was and
    # the connection up (the caller tries again); a packet read whole but not
    # parsed for lack of heap is dropped like a lost one, and the next is read.
    import hemhub.codec.mqtt as codec

    async def main():
        net, clock = Net(), Clock()
        short = [True]

        def payload_of(key):
            if short[0]:
                raise MemoryError("allocating 304 bytes")
            return b"AB"

        c = _client(net, clock, payload_of=payload_of)
        await _connected(net, c)
        net.s.take()
        try:
            await c.publish("t/x", 7)
            raise AssertionError("publish did not report the MemoryError")
        except MemoryError:
            pass
        assert c.connected and c.inflight() == 0 and net.s.take() == ""
        short[0] = False
        await c.publish("t/x", 7)
        assert net.s.take() == "3209" + "0003742f78" + "0003" + "4142"
        parse = codec.parse_body
        fail = [True]

        def parse_short(first, body):
            if fail:
                fail.pop()
                raise MemoryError("allocating 64 bytes")
            return parse(first, body)

        codec.parse_body = parse_short
        try:
            net.s.feed("40020003")  # this PUBACK is lost to the full heap...
            await asyncio.sleep_ms(20)
            assert c.connected and c.inflight() == 1 and c.counters["dropped"] == 1
            net.s.feed("40020003")  # ...the broker's next packet is read as usual
            await asyncio.sleep_ms(20)
            assert c.connected and c.inflight() == 0
        finally:
            codec.parse_body = parse
        await c.close()

    _run(main())
