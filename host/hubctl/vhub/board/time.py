# time, as on the ESP32 port:
#  - ticks count from the last hard reset or power-on (not from a soft reset):
#    the supervisor starts the interpreter in a Linux time namespace whose
#    monotonic clock starts at the reset, so the C-level ticks that asyncio's
#    task queue uses agree with these;
#  - time() and friends read the RTC, which starts at 2000-01-01 at power-on
#    until something sets it (machine.RTC or ntptime);
#  - sleeping lets scheduled callbacks (IRQs) run as soon as they are pending.
import os

import _world
import uselect
import utime
from utime import *  # noqa: F401,F403

_rtc = [int(os.getenv("HEMHUB_RTC_OFFSET") or "0")]  # seconds added to host time
_W = _world.wake_socket()
_poller = uselect.poll()
_poller.register(_W, uselect.POLLIN)


def time():
    return utime.time() + _rtc[0]


def time_ns():
    return utime.time_ns() + _rtc[0] * 1000000000


def gmtime(secs=None):
    return utime.gmtime(time() if secs is None else secs)


def localtime(secs=None):
    return gmtime(secs)


def _set_offset(offset):
    _rtc[0] = offset


def sleep_ms(ms):
    end = utime.ticks_add(utime.ticks_ms(), int(ms))
    while True:
        left = utime.ticks_diff(end, utime.ticks_ms())
        if left <= 0:
            return
        if _poller.poll(left):
            _world.drain_wake()  # an IRQ is pending: it runs between these bytecodes


def sleep(s):
    sleep_ms(s * 1000)


def sleep_us(us):
    if us >= 2000:
        sleep_ms(us // 1000)
    else:
        utime.sleep_us(us)
