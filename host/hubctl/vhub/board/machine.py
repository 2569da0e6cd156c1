# machine, as on the ESP32 port, for the virtual hub. Inputs are driven by the
# world; outputs are reported to it; IRQ handlers run via micropython.schedule.
import os

import _world
from micropython import const
from umachine import *  # noqa: F401,F403

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_levels = {}  # gpio -> level, as last reported by the world
_pins = {}  # gpio -> Pin with an IRQ handler
for _k, _v in _world.hello.get("pins", {}).items():
    _levels[int(_k)] = _v


def _on_pin(ev):
    gpio = ev["gpio"]
    old = _levels.get(gpio, 0)
    new = ev["level"]
    _levels[gpio] = new
    p = _pins.get(gpio)
    if p is None or p._handler is None or old == new:
        return
    if (new and p._trigger & Pin.IRQ_RISING) or (not new and p._trigger & Pin.IRQ_FALLING):
        p._handler(p)


_world.on("pin", _on_pin)


class Pin:
    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_UP = const(1)
    PULL_DOWN = const(2)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)
    WAKE_LOW = const(4)
    WAKE_HIGH = const(5)

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self._id = id
        self._mode = Pin.IN
        self._handler = None
        self._trigger = 0
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        if mode != -1:
            self._mode = mode
        if pull != -1 or mode != -1:
            _world.notify({"req": "pin_mode", "gpio": self._id, "mode": self._mode, "pull": pull})
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _levels.get(self._id, 0)
        v = 1 if v else 0
        if _levels.get(self._id) != v:
            _levels[self._id] = v
            _world.notify({"req": "pin_out", "gpio": self._id, "level": v})

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        self._handler = handler
        self._trigger = trigger
        if handler is None:
            _pins.pop(self._id, None)
        else:
            _pins[self._id] = self

    def __repr__(self):
        return "Pin(%d)" % self._id


class WDT:
    # One hardware watchdog: once started it cannot be stopped, only fed. It
    # survives a soft reset (as the ESP32 task watchdog does) and bites with a
    # WDT_RESET.
    def __init__(self, id=0, timeout=5000):
        _world.notify({"req": "wdt_start", "timeout_ms": timeout})

    def feed(self):
        _world.notify({"req": "wdt_feed"})


_timers = {}


def _on_timer(ev):
    t = _timers.get(ev["id"])
    if t is not None and t._cb is not None:
        if t._mode == Timer.ONE_SHOT:
            _timers.pop(ev["id"], None)
        t._cb(t)


_world.on("timer", _on_timer)


class Timer:
    ONE_SHOT = const(0)
    PERIODIC = const(1)

    def __init__(self, id, mode=PERIODIC, period=-1, callback=None, **kw):
        self._id = id
        self._cb = None
        self._mode = mode
        if callback is not None:
            self.init(mode=mode, period=period, callback=callback)

    def init(self, mode=PERIODIC, period=-1, callback=None, freq=-1):
        if freq > 0:
            period = 1000 // freq
        self._mode = mode
        self._cb = callback
        _timers[self._id] = self
        _world.notify({"req": "timer", "id": self._id, "period_ms": period, "periodic": mode == Timer.PERIODIC})

    def deinit(self):
        _timers.pop(self._id, None)
        self._cb = None
        _world.notify({"req": "timer", "id": self._id, "period_ms": -1})


class RTC:
    def datetime(self, dt=None):
        import time

        if dt is None:
            t = time.gmtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        import utime

        secs = utime.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        offset = secs - utime.time()
        _world.request({"req": "rtc_set", "offset": offset})
        time._set_offset(offset)

    def init(self, dt):
        self.datetime(dt)


def reset():
    _world.notify({"req": "reset"})
    import utime

    while True:  # the world pulls the plug; nothing after this runs
        utime.sleep_ms(1000)


def reset_cause():
    return int(os.getenv("HEMHUB_RESET_CAUSE") or PWRON_RESET)


def unique_id():
    import binascii

    return binascii.unhexlify(os.getenv("HEMHUB_MAC") or "000000000000")


def freq(hz=None):
    return 240000000


def __getattr__(name):
    # UART lives in board/late/_uart.py, which the start-up imports after this
    # module (it needs the world link first).
    if name == "UART":
        from _uart import UART

        return UART
    raise AttributeError(name)
