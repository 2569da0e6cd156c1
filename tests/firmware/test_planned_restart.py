# The application's planned restart (hemhub.app._restart_when_quiet, decision
# 0006), under MicroPython with the hub's 96 KiB heap: it resets the hub only
# once nothing waits in RAM and no GATT link is open, says why in
# /data/boots.json first, and gives up (the uplink goes on) when the hub does
# not become quiet.
import sys

import uselect
import utime

sys.modules["time"] = utime
sys.modules["select"] = uselect


class _Machine:
    """The board's machine module as far as the application's imports go; reset()
    is recorded instead of done."""

    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    resets = []

    class Pin:
        OUT = IN = PULL_UP = 0

    class WDT:
        pass

    class Timer:
        pass

    @classmethod
    def reset(cls):
        cls.resets.append(utime.ticks_ms())
        raise SystemExit  # as on the hub: nothing after reset() runs

    @staticmethod
    def reset_cause():
        return 1


sys.modules["machine"] = _Machine

import asyncio  # noqa: E402

from hemhub import app, health, sense  # noqa: E402

notes = []
health.note_restart = notes.append  # /data is not mounted here


class Records:
    def __init__(self, busy_polls):
        self.busy_polls = busy_polls

    def drained(self):
        self.busy_polls -= 1
        return self.busy_polls < 0


class Central:
    def __init__(self, busy_polls):
        self.busy_polls = busy_polls

    def busy(self):
        self.busy_polls -= 1
        return self.busy_polls >= 0


def _run(records, central):
    _Machine.resets.clear()
    notes.clear()
    sense.current = central
    try:
        asyncio.run(app._restart_when_quiet(records, "uplink: 3 connections in a row found no heap"))
    except SystemExit:
        pass


def test_a_planned_restart_waits_for_the_queued_records_and_the_gatt_link():
    records, central = Records(busy_polls=3), Central(busy_polls=2)
    _run(records, central)
    assert len(_Machine.resets) == 1, _Machine.resets
    assert records.busy_polls < 0 and central.busy_polls < 0, "reset while records or a link were busy"
    assert notes == ["uplink: 3 connections in a row found no heap"], notes


def test_a_hub_that_never_becomes_quiet_is_not_restarted():
    _run(Records(busy_polls=10 ** 6), None)
    assert _Machine.resets == [] and notes == [], (_Machine.resets, notes)
