"""Wired inputs: the door reed contact and the service button.

Pins and levels are in hardware/README.md (Pins); timing and its measured cost
in docs/sensing-gpio.md.

Shape (as aioble's IRQ handlers): the pin IRQ, on both edges, only counts the
edge, notes when it came and sets a ThreadSafeFlag. The line's asyncio task
wakes, waits until no edge has come for ``debounce_ms`` and then reads the
level, so contact bounce (several edges within the interval) ends in one
stable level and at most one event. Events go to an injected callback at
once:

    emit(event, ticks_ms, source)

with ``event`` one of DOOR_OPEN, DOOR_CLOSE, BUTTON_SHORT, BUTTON_LONG,
``ticks_ms`` the ``time.ticks_ms()`` of the edge that started the change (for
a long press: when the press became long) and ``source`` SOURCE ("wired").
The callback must not block: door events are alarm-class. It returns False
when it cannot take the event now (the sink's alarm queue is full): the line's
task then offers the same event again every RETRY_MS until it is taken
(Line.offer_again), and reads the line again only after (an alarm is never
dropped; changes meanwhile end in the level read next, as contact bounce
does). Nothing on this path allocates apart from asyncio's own wait on the
flag (measured: 192 bytes per change in the Unix port's poll): the strings are
constants, the ticks small ints, and each line has one long-lived task, no
coroutine per event.

Pins are injected (anything with ``value()``, ``irq(handler, trigger)`` and
the IRQ_RISING / IRQ_FALLING constants), so tests can drive a fake pin.
"""
import asyncio
import time

from micropython import const

from hemhub import board

DEBOUNCE_MS = const(30)
LONG_PRESS_MS = const(10000)
RETRY_MS = const(20)

DOOR_OPEN = "door_open"
DOOR_CLOSE = "door_close"
BUTTON_SHORT = "button_short"
BUTTON_LONG = "button_long"
SOURCE = "wired"


class Line:
    """One debounced input line; subclasses act on changed(level, edge_ms)."""

    def __init__(self, pin, debounce_ms=DEBOUNCE_MS):
        self.pin = pin
        self.debounce_ms = debounce_ms
        self.level = pin.value()  # the last stable level
        self.edges = 0  # edges since the last stable level was read
        self._first_ms = 0
        self._last_ms = 0
        self._flag = asyncio.ThreadSafeFlag()
        self.event_ms = 0
        self.retries = 0  # offers refused and made again (the sink's queue was full)
        pin.irq(self._irq, pin.IRQ_RISING | pin.IRQ_FALLING)

    def _irq(self, pin):
        # Runs as a (soft) IRQ: note the edge, wake the task, return.
        t = time.ticks_ms()
        if not self.edges:
            self._first_ms = t
        self.edges += 1
        self._last_ms = t
        self._flag.set()

    def changed(self, level, edge_ms):
        """The event for a new stable level, or None; it is dated event_ms
        (edge_ms unless changed() says otherwise)."""
        return None

    async def offer_again(self, event, edge_ms):
        """emit refused the event: wait and offer it again until it is taken.
        (Only then a coroutine: the first offer is a plain call, as it allocates
        nothing.)"""
        while True:
            self.retries += 1
            await asyncio.sleep_ms(RETRY_MS)
            if self.emit(event, edge_ms, SOURCE) is not False:
                return

    async def run(self):
        # One loop, no coroutine per event: asyncio's wait on the flag is the
        # only allocation per change.
        flag = self._flag
        while True:
            await flag.wait()
            while True:  # until no edge for debounce_ms
                left = self.debounce_ms - time.ticks_diff(time.ticks_ms(), self._last_ms)
                if left <= 0:
                    break
                await asyncio.sleep_ms(left)
            edge_ms = self._first_ms
            self.edges = 0
            level = self.pin.value()
            if level != self.level:  # else a glitch, or a bounce that ended where it began
                self.level = level
                self.event_ms = edge_ms
                event = self.changed(level, edge_ms)
                if event is not None and self.emit(event, self.event_ms, SOURCE) is False:
                    await self.offer_again(event, self.event_ms)

    def stop(self):
        self.pin.irq(None)


class Door(Line):
    """The reed contact: magnet present (door closed) pulls the line low."""

    def __init__(self, pin, emit, debounce_ms=DEBOUNCE_MS):
        super().__init__(pin, debounce_ms)
        self.emit = emit

    @property
    def is_open(self):
        return self.level == 1

    def changed(self, level, edge_ms):
        return DOOR_OPEN if level else DOOR_CLOSE


class Button(Line):
    """The service button (pressed = low).

    A short press is reported on release; a long press as soon as the button
    has been held for long_press_ms (its release then reports nothing). A
    press already held when the hub starts is not a press (on an ESP32,
    holding GPIO 0 at reset enters the ROM bootloader anyway)."""

    def __init__(self, pin, emit, debounce_ms=DEBOUNCE_MS, long_press_ms=LONG_PRESS_MS):
        super().__init__(pin, debounce_ms)
        self.emit = emit
        self.long_press_ms = long_press_ms
        self.pressed = False
        self._pressed_ms = 0
        self._long_sent = False
        self._press = asyncio.Event()

    def changed(self, level, edge_ms):
        if not level:
            self.pressed = True
            self._pressed_ms = edge_ms
            self._long_sent = False
            self._press.set()
        elif self.pressed:
            self.pressed = False
            if not self._long_sent:
                self.event_ms = self._pressed_ms  # a short press is dated by its press
                return BUTTON_SHORT
        return None

    async def watch_long_press(self):
        while True:
            await self._press.wait()
            self._press.clear()
            # Sleep to the deadline; a release and new press meanwhile moves it.
            while self.pressed and not self._long_sent:
                left = self.long_press_ms - time.ticks_diff(time.ticks_ms(), self._pressed_ms)
                if left > 0:
                    await asyncio.sleep_ms(left)
                    continue
                self._long_sent = True
                t = time.ticks_ms()
                if self.emit(BUTTON_LONG, t, SOURCE) is False:
                    await self.offer_again(BUTTON_LONG, t)


def start(emit, debounce_ms=DEBOUNCE_MS, long_press_ms=LONG_PRESS_MS, door_pin=None, button_pin=None):
    """Watch the board's door contact and service button; starts their tasks.

    Returns (door, button). Pins default to the board's (pull-ups on)."""
    if door_pin is None or button_pin is None:
        from machine import Pin

        if door_pin is None:
            door_pin = Pin(board.DOOR_REED, Pin.IN, Pin.PULL_UP)
        if button_pin is None:
            button_pin = Pin(board.SERVICE_BUTTON, Pin.IN, Pin.PULL_UP)
    door = Door(door_pin, emit, debounce_ms)
    button = Button(button_pin, emit, debounce_ms, long_press_ms)
    asyncio.create_task(door.run())
    asyncio.create_task(button.run())
    asyncio.create_task(button.watch_long_press())
    return door, button
