# Wired door contact and service button (hemhub.sense.gpio) under MicroPython,
# driven through a fake pin: bounce filtering, open/close, short and long press,
# and the RAM ring of recent events.
import sys

# The board emulation's `time` needs a running world; these tests use the
# interpreter's own time and asyncio.
sys.path[:] = [p for p in sys.path if not p.endswith("/vhub/board")]

import asyncio  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402

from hemhub.sense import gpio, recent  # noqa: E402

_DEBOUNCE = 20
_LONG = 200


class FakePin:
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, level):
        self.level = level
        self.handler = None
        self.trigger = 0

    def value(self, v=None):
        return self.level

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger

    def drive(self, level):
        # An edge, as the port delivers it: the handler runs on the main thread.
        if level != self.level:
            self.level = level
            if self.handler is not None:
                self.handler(self)


class Events:
    def __init__(self):
        self.got = []

    def emit(self, event, ticks_ms, source):
        self.got.append((event, ticks_ms, source, time.ticks_ms()))

    def names(self):
        return [e[0] for e in self.got]


def _run(scenario, door_level=0, button_level=1):
    door_pin, button_pin = FakePin(door_level), FakePin(button_level)
    ev = Events()

    async def main():
        door, button = gpio.start(ev.emit, _DEBOUNCE, _LONG, door_pin, button_pin)
        await asyncio.sleep_ms(5)
        await scenario(door_pin, button_pin, ev)
        return door, button

    result = asyncio.run(main())
    asyncio.new_event_loop()
    return ev, result


def test_irq_on_both_edges():
    pin = FakePin(0)
    gpio.Line(pin)
    assert pin.handler is not None and pin.trigger == FakePin.IRQ_RISING | FakePin.IRQ_FALLING


def test_door_open_then_close():
    async def scenario(door, button, ev):
        t0 = time.ticks_ms()
        door.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 30)
        assert ev.names() == ["door_open"]
        event, ticks, source, seen = ev.got[0]
        assert source == "wired"
        assert abs(time.ticks_diff(ticks, t0)) <= 2  # the time of the edge
        lag = time.ticks_diff(seen, ticks)
        assert _DEBOUNCE <= lag <= _DEBOUNCE + 15, lag  # right after the debounce
        door.drive(0)
        await asyncio.sleep_ms(_DEBOUNCE + 30)

    ev, (door, _) = _run(scenario)
    assert ev.names() == ["door_open", "door_close"]
    assert not door.is_open


class BusyEvents(Events):
    """A sink whose alarm queue is full for the first `busy` offers."""

    def __init__(self, busy):
        super().__init__()
        self.busy = busy
        self.refused = 0

    def emit(self, event, ticks_ms, source):
        if self.busy:
            self.busy -= 1
            self.refused += 1
            return False
        super().emit(event, ticks_ms, source)
        return True


def test_an_event_the_sink_cannot_take_is_offered_again_until_taken_in_order():
    door_pin, button_pin = FakePin(0), FakePin(1)
    ev = BusyEvents(busy=5)

    async def main():
        door, button = gpio.start(ev.emit, _DEBOUNCE, _LONG, door_pin, button_pin)
        await asyncio.sleep_ms(5)
        t0 = time.ticks_ms()
        door_pin.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 10)
        door_pin.drive(0)  # closed again while the open still waits for the sink
        for _ in range(100):
            await asyncio.sleep_ms(10)
            if len(ev.got) == 2:
                break
        return door, t0

    door, t0 = asyncio.run(main())
    asyncio.new_event_loop()
    assert ev.refused == 5 and door.retries == 5
    assert ev.names() == ["door_open", "door_close"]  # nothing dropped, in order
    assert abs(time.ticks_diff(ev.got[0][1], t0)) <= 2  # dated by its edge, not by the retry


def test_a_short_press_is_dated_by_the_press():
    async def scenario(door, button, ev):
        ev.t0 = time.ticks_ms()
        button.drive(0)
        await asyncio.sleep_ms(80)
        button.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 60)

    ev, _ = _run(scenario)
    assert ev.names() == ["button_short"]
    assert abs(time.ticks_diff(ev.got[0][1], ev.t0)) <= 2


def test_bounce_gives_one_event():
    async def scenario(door, button, ev):
        for _ in range(3):  # contact chatter: 5 edges 2 ms apart, ends open
            door.drive(1)
            await asyncio.sleep_ms(2)
            door.drive(0)
            await asyncio.sleep_ms(2)
        door.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE // 2)
        assert ev.names() == []  # not yet stable
        await asyncio.sleep_ms(_DEBOUNCE + 30)

    ev, (door, _) = _run(scenario)
    assert ev.names() == ["door_open"]
    assert door.is_open


def test_glitch_back_to_same_level_gives_nothing():
    async def scenario(door, button, ev):
        door.drive(1)
        await asyncio.sleep_ms(3)
        door.drive(0)
        await asyncio.sleep_ms(_DEBOUNCE + 30)

    ev, _ = _run(scenario)
    assert ev.names() == []


def test_door_open_at_start_then_closes():
    async def scenario(door, button, ev):
        door.drive(0)
        await asyncio.sleep_ms(_DEBOUNCE + 30)

    ev, _ = _run(scenario, door_level=1)
    assert ev.names() == ["door_close"]


def test_short_press():
    async def scenario(door, button, ev):
        button.drive(0)
        await asyncio.sleep_ms(2)
        button.drive(1)  # bounce on press
        await asyncio.sleep_ms(2)
        button.drive(0)
        await asyncio.sleep_ms(80)
        assert ev.names() == []  # reported on release
        button.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 60)

    ev, _ = _run(scenario)
    assert ev.names() == ["button_short"]


def test_long_press_reported_while_held_and_once():
    async def scenario(door, button, ev):
        t0 = time.ticks_ms()
        button.drive(0)
        while not ev.got and time.ticks_diff(time.ticks_ms(), t0) < 2 * _LONG:
            await asyncio.sleep_ms(5)
        assert ev.names() == ["button_long"]
        held = time.ticks_diff(ev.got[0][3], t0)
        assert _LONG <= held <= _LONG + 40, held
        await asyncio.sleep_ms(100)  # still held
        button.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 60)

    ev, _ = _run(scenario)
    assert ev.names() == ["button_long"]


def test_button_and_door_independent():
    async def scenario(door, button, ev):
        button.drive(0)
        await asyncio.sleep_ms(50)
        door.drive(1)  # the door opens while the button is held
        await asyncio.sleep_ms(_DEBOUNCE + 30)
        assert ev.names() == ["door_open"]
        button.drive(1)
        await asyncio.sleep_ms(_DEBOUNCE + 60)

    ev, _ = _run(scenario)
    assert ev.names() == ["door_open", "button_short"]


async def _grown_over(n, step):
    # heap growth over n calls of step(), gc off, after a warm-up
    for _ in range(4):
        await step()
    gc.collect()
    before = gc.mem_alloc()
    gc.disable()
    for _ in range(n):
        await step()
    grown = gc.mem_alloc() - before
    gc.enable()
    return grown


def test_door_events_allocate_no_more_than_asyncio_flag():
    log = recent.RecentEvents(4)

    async def main():
        # The floor: asyncio's ThreadSafeFlag.wait() alone (the poller's
        # registration), which the door path cannot avoid.
        flag = asyncio.ThreadSafeFlag()

        async def waiter():
            while True:
                await flag.wait()

        asyncio.create_task(waiter())

        async def bare():
            flag.set()
            await asyncio.sleep_ms(8)

        floor = await _grown_over(20, bare)
        pin = FakePin(0)
        gpio.start(log.record, 5, _LONG, pin, FakePin(1))

        async def toggle():
            pin.drive(1 - pin.level)
            await asyncio.sleep_ms(15)

        return floor, await _grown_over(20, toggle)

    floor, grown = asyncio.run(main())
    asyncio.new_event_loop()
    assert log.total == 24
    assert grown <= floor + 64, (grown, floor)


def test_recent_ring_keeps_the_last_events_oldest_first():
    log = recent.RecentEvents(3)
    for i in range(5):
        log.record("door_open" if i % 2 == 0 else "door_close", 1000 + i, "wired")
    items = log.items()
    assert [it["ticks_ms"] for it in items] == [1002, 1003, 1004]
    assert [it["event"] for it in items] == ["door_open", "door_close", "door_open"]
    assert log.total == 5
    assert all(it["source"] == "wired" for it in items)


def test_recent_snapshot_without_application():
    recent._log = None
    assert recent.snapshot() == {"recording": False, "total": 0, "events": []}
    recent.open_log().record("button_short", 5, "wired")
    snap = recent.snapshot()
    assert snap["recording"] and snap["total"] == 1 and snap["events"][0]["event"] == "button_short"
    recent._log = None
