"""The hardware watchdog, owned by the application's health task.

Once started the ESP32 watchdog cannot be stopped, and it keeps running across
a soft reset. When a technician's console session stops the application
(Ctrl-C, or a host tool's soft reset into the raw REPL), a timer keeps feeding
it for a bounded service window; then the watchdog resets the hub back into
normal operation, so a hub left at a prompt returns to service by itself.
"""
import time

from machine import WDT, Timer
from micropython import const

TIMEOUT_MS = const(30000)
SERVICE_WINDOW_MS = const(600000)
_TIMER_ID = const(0)

_wdt = None
_timer = None


def start():
    global _wdt
    stop_service_window()
    _wdt = WDT(timeout=TIMEOUT_MS)
    return _wdt


def feed():
    if _wdt is not None:
        _wdt.feed()


def service_window(ms=SERVICE_WINDOW_MS):
    global _timer, _wdt
    _wdt = WDT(timeout=TIMEOUT_MS)
    deadline = time.ticks_add(time.ticks_ms(), ms)

    def _feed(t):
        if time.ticks_diff(deadline, time.ticks_ms()) > 0:
            _wdt.feed()

    _timer = Timer(_TIMER_ID)
    _timer.init(mode=Timer.PERIODIC, period=TIMEOUT_MS // 3, callback=_feed)
    _wdt.feed()


def stop_service_window():
    global _timer
    if _timer is not None:
        _timer.deinit()
        _timer = None
