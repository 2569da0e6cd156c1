# The BLE central under MicroPython with a fake BLE object injected: the
# BTHome alarm path (door, pendant, replay) and enrolment filtering. The fake
# answers by invoking the IRQ handler with memoryviews into one reused buffer,
# as the driver does. (A GATT-session test with this fake does not fit: the
# test runner compiles link.py from source inside the 96 KiB heap.)
import sys

import uselect
import utime

# mprun puts the virtual hub's board modules on the path; their time/select
# talk to a world this plain interpreter does not have: use the port's own.
sys.modules["time"] = utime
sys.modules["select"] = uselect

import gc  # noqa: E402

gc.collect()
from hemhub.sense.central import Central  # noqa: E402,I001  (first: compiling it needs the most heap)

gc.collect()
import asyncio  # noqa: E402

from hemhub.codec import bthome_encode as enc  # noqa: E402

_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
DOOR = "A4:C1:38:00:00:05"
PENDANT = "A4:C1:38:00:00:06"
SCALE = "C0:FF:EE:00:00:01"
_BUF = bytearray(256)


def _mv(b, off=0):
    _BUF[off:off + len(b)] = b
    return memoryview(_BUF)[off:off + len(b)]


def _mac(s):
    return bytes.fromhex(s.replace(":", ""))


class FakeBLE:
    def __init__(self):
        self.h = None
        self.calls = []
        self.weight = b"\x02" + (14470).to_bytes(2, "little") + bytes((0xE8, 0x07, 5, 14, 19, 41, 17))

    def irq(self, h):
        self.h = h

    def active(self, on=None):
        return True

    def gap_scan(self, *a):
        self.calls.append(("scan",) + a)

    def gap_connect(self, t, addr=None, ms=0):
        if t is not None:
            asyncio.get_event_loop()  # answered from a task, like an IRQ later on
            asyncio.create_task(self._later(7, (1, 0, _mv(_mac(SCALE)))))

    async def _later(self, e, data):
        await asyncio.sleep_ms(1)
        self.h(e, data)

    def advert(self, addr, sd):
        self.h(5, (0, _mv(_mac(addr)), 3, -60, _mv(enc.advertisement(sd), 32)))


def _central(ble, extra=()):
    readings, events = [], []
    c = Central(ble, [{"addr": DOOR, "kind": "door", "key": None},
                      {"addr": PENDANT, "kind": "pendant", "key": _KEY.hex()}] + list(extra),
                readings.append, events.append)
    return c, readings, events


def _run(coro_fn):
    asyncio.run(coro_fn())


def test_door_and_pendant_raise_events_and_replay_is_rejected():
    ble = FakeBLE()
    c, _r, events = _central(ble)

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))  # re-broadcast: once
        first = enc.encode_encrypted(PENDANT, [(0x00, 7), (0x3A, "press")], _KEY, 100)
        ble.advert(PENDANT, first)
        await asyncio.sleep_ms(5)
        ble.advert(PENDANT, enc.encode_encrypted(PENDANT, [(0x00, 8), (0x3A, "press")], _KEY, 101))
        await asyncio.sleep_ms(5)
        ble.advert(PENDANT, first)  # replayed
        ble.advert("11:22:33:44:55:66", enc.encode([(0x1A, True)]))  # not enrolled
        await asyncio.sleep_ms(10)
        task.cancel()

    _run(main)
    got = [(e["event"], e["addr"], e["value"]) for e in events]
    assert got[0] == ("door", DOOR, True), got
    assert got[1:3] == [("sos", PENDANT, "press"), ("sos", PENDANT, "press")], got
    assert got[3][0] == "bthome_rejected" and len(got) == 4, got
    assert c.counters["rejected"] == 1 and c.counters["unknown_adverts"] == 1



def test_an_alarm_that_meets_a_full_heap_is_retried_not_lost():
    # The consumer (the record path) fails with MemoryError twice, as at the heap's
    # edge: the sensor's repeats are duplicates by packet id, so only a retry of
    # the hand-over keeps the alarm. A consumer that fails otherwise loses it, and
    # says so; the alarm path goes on.
    ble = FakeBLE()
    got, fails = [], [MemoryError, MemoryError]

    def consumer(e):
        if fails:
            raise fails.pop(0)("allocating 520 bytes")
        got.append((e["event"], e["addr"], e["value"]))

    c = Central(ble, [{"addr": PENDANT, "kind": "pendant", "key": _KEY.hex()},
                      {"addr": DOOR, "kind": "door", "key": None}], lambda r: True, consumer)

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        press = enc.encode_encrypted(PENDANT, [(0x00, 7), (0x3A, "press")], _KEY, 100)
        for _ in range(3):  # one press, broadcast three times
            ble.advert(PENDANT, press)
        await asyncio.sleep_ms(200)
        fails.append(ValueError)
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        await asyncio.sleep_ms(20)
        ble.advert(DOOR, enc.encode([(0x00, 2), (0x1A, False)]))
        await asyncio.sleep_ms(20)
        task.cancel()

    _run(main)
    assert got == [("sos", PENDANT, "press"), ("door", DOOR, False)], got
    assert c.counters["no_memory"] == 2 and c.counters["events"] == 2, c.counters
    assert c.counters["lost"] == 1 and "ValueError" in c.last_error, (c.counters, c.last_error)


def test_an_alarm_gets_the_spare_block_first_and_waits_out_a_full_queue():
    # The first MemoryError gives up the central's spare block and retries at once
    # (the spare is a hole the hand-over fits in); the block is taken back after.
    # A record path whose alarm queue is full (on_event answers False) is offered
    # the alarm again until it takes it: it is neither dropped nor handed twice.
    ble = FakeBLE()
    got, answers = [], [MemoryError, False, False]

    def consumer(e):
        a = answers.pop(0) if answers else True
        if a is MemoryError:
            raise MemoryError("allocating 256 bytes")
        if a:
            got.append((e["event"], e["addr"], e["value"]))
        return a

    c = Central(ble, [{"addr": DOOR, "kind": "door", "key": None}], lambda r: True, consumer)

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        await asyncio.sleep_ms(300)
        task.cancel()

    _run(main)
    assert got == [("door", DOOR, True)], got
    assert c.counters["spare_used"] == 1 and c.counters["no_memory"] == 1, c.counters
    assert c.counters["events"] == 1 and c.counters["lost"] == 0, c.counters
    assert c._spare is not None and len(c._spare) == 1024  # taken back for the next alarm


def test_alarms_the_record_path_cannot_take_for_seconds_are_owed_in_order_not_lost():
    # A heap full for 2.5 s (every hand-over meets MemoryError): the alarms are
    # kept in the central's owed slots, the alarm task goes on decoding, and once
    # the heap has room they are handed over in the order they happened, with
    # the time they were received. Only an alarm that finds every slot taken is
    # lost, and that is said and counted.
    ble = FakeBLE()
    got, full = [], [True]

    def consumer(e):
        if full[0]:
            raise MemoryError("allocating 272 bytes")
        got.append((e["event"], e["value"], e["time"]))

    c = Central(ble, [{"addr": DOOR, "kind": "door", "key": None}], lambda r: True, consumer)
    t_rx = utime.time()

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        for pid in range(1, 7):  # open, close, open, close, open, close
            ble.advert(DOOR, enc.encode([(0x00, pid), (0x1A, pid % 2 == 1)]))
            await asyncio.sleep_ms(400)
        assert c.counters["adverts"] == 6, c.counters  # the alarm task was never stuck
        assert c.counters["owed"] == 4 and c.counters["lost"] == 2, c.counters
        assert "4 alarms already wait" in c.last_error, c.last_error
        assert c.busy(), "a planned restart would not wait for the owed alarms"
        await asyncio.sleep_ms(100)
        full[0] = False
        await asyncio.sleep_ms(300)
        assert not c.busy()
        task.cancel()

    _run(main)
    assert [(ev, v) for ev, v, _ in got] == [("door", True), ("door", False), ("door", True), ("door", False)], got
    assert got[0][2] - t_rx <= 1, (got[0][2], t_rx)  # received at t_rx, handed over 2.5 s later
    assert c.counters["events"] == 4 and c._owed_n == 0 and c._owed == [None] * len(c._owed)


def test_the_alarm_task_lives_on_when_the_heap_cannot_even_hold_an_alarm():
    # A MemoryError outside the retries (here: listing the advert's events) loses
    # that alarm, counted and said, but not the task: the next alarm goes through.
    from hemhub.codec import bthome

    ble = FakeBLE()
    got = []
    c = Central(ble, [{"addr": DOOR, "kind": "door", "key": None}], lambda r: True,
                lambda e: got.append((e["event"], e["value"])))
    events = bthome.events
    calls = []

    def events_once_out_of_heap(kind, res):
        calls.append(kind)
        if len(calls) == 1:
            raise MemoryError("allocating 64 bytes")
        return events(kind, res)

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        await asyncio.sleep_ms(50)
        ble.advert(DOOR, enc.encode([(0x00, 2), (0x1A, False)]))
        await asyncio.sleep_ms(50)
        task.cancel()

    bthome.events = events_once_out_of_heap
    try:
        _run(main)
    finally:
        bthome.events = events
    assert got == [("door", False)], got
    assert c.counters["lost"] == 1 and "no heap even to keep it" in c.last_error, (c.counters, c.last_error)


def test_a_gatt_link_waits_while_it_is_deferred_and_alarms_do_not():
    ble = FakeBLE()
    c, _r, events = _central(ble, [{"addr": SCALE, "kind": "scale", "key": None}])
    hold = [True]
    c.defer_links = lambda: hold[0]

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        ble.h(5, (0, _mv(_mac(SCALE)), 0, -60, _mv(b"\x02\x01\x06", 32)))  # the scale has data
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        await asyncio.sleep_ms(300)
        assert not [x for x in ble.calls if x[0] != "scan"] and len(c._want) == 1, ble.calls
        assert [e["event"] for e in events] == ["door"], events  # alarms go on meanwhile
        hold[0] = False
        await asyncio.sleep_ms(300)
        assert not c._want  # taken up once the hold ends
        task.cancel()

    _run(main)


def test_the_scan_resumes_in_the_connect_irq_so_alarms_are_heard_again_at_once():
    # A connection can only be made with the scan stopped, and alarms are not
    # heard meanwhile. The scan starts again in the IRQ that says the link is up,
    # not when the link's task next runs (which may be after a signature or a
    # TLS write); an advert right after it is an alarm.
    ble = FakeBLE()
    c, _r, events = _central(ble, [{"addr": SCALE, "kind": "scale", "key": None}])

    class Flag:
        def set(self):
            pass

    class Link:
        dev = c.devices[_mac(SCALE)]
        handle = None
        up = False
        flag = Flag()

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        link = c._link = Link()
        ble.calls.clear()
        ble.h(7, (1, 0, _mv(_mac(SCALE))))  # _IRQ_PERIPHERAL_CONNECT
        assert link.up and ble.calls == [("scan", 0, 30000, 30000, False)], ble.calls
        ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
        await asyncio.sleep_ms(20)
        assert [e["event"] for e in events] == ["door"], events
        c._link = None
        task.cancel()

    _run(main)


def _with_fake_link(session, main, on_unload=None):
    """Run main() with `session` standing in for hemhub.sense.link.session (what
    `from hemhub.sense import link` finds first: the package's attribute), kept
    in place between links."""
    import hemhub.sense as sense

    class fake:
        pass

    fake.session = session
    unload = sense.link_unload
    sense.link_unload = on_unload or (lambda: None)
    sys.modules["hemhub.sense.link"] = fake
    sense.link = fake
    try:
        _run(main)
    finally:
        sense.link_unload = unload
        sys.modules.pop("hemhub.sense.link", None)
        del sense.link


def test_a_gatt_link_borrows_reserved_heap_and_gives_it_back():
    # The uplink lends its connect reserve for the link's duration; in_link tells
    # the link manager to hold its 4G try (its driver) until the link is unloaded.
    order = []

    async def session(central, d):
        order.append(("session", central.in_link))

    ble = FakeBLE()
    c, _r, _events = _central(ble, [{"addr": SCALE, "kind": "scale", "key": None}])
    c.lend_heap = lambda: order.append(("lend", c.in_link))
    c.return_heap = lambda: order.append(("return", c.in_link))

    async def main():
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(5)
        ble.h(5, (0, _mv(_mac(SCALE)), 0, -60, _mv(b"\x02\x01\x06", 32)))
        await asyncio.sleep_ms(100)
        task.cancel()

    _with_fake_link(session, main, on_unload=lambda: order.append("unload"))
    assert order == [("lend", True), ("session", True), "unload", ("return", False)], order
    assert not c.in_link


def test_a_gatt_link_that_finds_no_heap_backs_off():
    # A link that meets MemoryError is tried again after 1 s, then 2 s (not every
    # 500 ms: each attempt loads and drops the GATT side, which fragments the heap
    # the uplink needs); the device keeps its data, and alarms go on meanwhile.
    tries = []

    async def session(central, d):
        tries.append(utime.ticks_ms())
        raise MemoryError("allocating 336 bytes")

    ble = FakeBLE()
    c, _r, events = _central(ble, [{"addr": SCALE, "kind": "scale", "key": None}])

    async def main():
        task = asyncio.create_task(c.run())
        for i in range(38):  # the scale advertises every 100 ms for 3.8 s
            ble.h(5, (0, _mv(_mac(SCALE)), 0, -60, _mv(b"\x02\x01\x06", 32)))
            if i == 5:
                ble.advert(DOOR, enc.encode([(0x00, 1), (0x1A, True)]))
            await asyncio.sleep_ms(100)
        task.cancel()

    _with_fake_link(session, main)
    gaps = [utime.ticks_diff(tries[i + 1], tries[i]) for i in range(len(tries) - 1)]
    assert len(tries) == 3 and gaps[0] >= 900 and gaps[1] >= 1900, gaps
    assert c.counters["no_memory"] == 3 and "next in 4 s" in c.last_error, (c.counters, c.last_error)
    assert [e["event"] for e in events] == ["door"], events
