"""Health: uptime, free heap, flash usage, reset cause; feeds the watchdog.

The health task is the watchdog's only feeder while the application runs, so a
stalled event loop resets the hub.
"""
import asyncio
import gc
import json
import os
import time

import machine

from hemhub import watchdog

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard_reset",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep_sleep",
    machine.SOFT_RESET: "soft_reset",
}

SNAPSHOT = "/data/health.json"
BOOTS = "/data/boots.json"


def reset_cause():
    return _CAUSES.get(machine.reset_cause(), "unknown")


def fs_usage(path):
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return {"used": st[0] * (st[2] - st[3]), "total": st[0] * st[2]}


def snapshot():
    gc.collect()
    return {
        "uptime_s": time.ticks_ms() // 1000,
        "reset_cause": reset_cause(),
        "heap_free": gc.mem_free(),
        "heap_used": gc.mem_alloc(),
        "flash": {"app": fs_usage("/"), "data": fs_usage("/data")},
    }


def _write_atomic(path, obj):
    # littlefs commits a file on close; the rename makes the swap atomic, so a
    # power cut leaves either the old or the new file, never a torn one.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def _boots():
    try:
        with open(BOOTS) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"count": 0}


def hardware_reset_cause():
    """Why the hub last reset in hardware (power-on, watchdog, hard reset).

    A soft reset (a console session) keeps the previous cause: it is what a
    technician diagnosing a hub wants to see."""
    cause = reset_cause()
    if cause != "soft_reset":
        return cause
    return _boots().get("last_hw_cause", "unknown")


def note_restart(reason):
    """Say in /data/boots.json why the application is about to reset the hub, so
    the next boot can tell a planned restart from a crash (hubctl status)."""
    boots = _boots()
    boots["planned"] = reason
    boots["planned_restarts"] = boots.get("planned_restarts", 0) + 1
    try:
        _write_atomic(BOOTS, boots)
    except OSError:
        pass


def last_restart_reason():
    """The reason the application gave for the last hardware reset, or None when
    that reset was not one the application asked for."""
    return _boots().get("last_planned")


def record_boot():
    """Count this start of the application in /data/boots.json; returns the count."""
    boots = _boots()
    boots["count"] = boots.get("count", 0) + 1
    boots["last_cause"] = reset_cause()
    if boots["last_cause"] != "soft_reset":
        boots["last_hw_cause"] = boots["last_cause"]
        boots["last_planned"] = boots.pop("planned", None)
    try:
        _write_atomic(BOOTS, boots)
    except OSError:
        pass  # data partition damaged or full: health reports it
    return boots["count"]


class Health:
    def __init__(self, persist_s):
        self.persist_s = persist_s
        self.last = None
        self.boots = 0

    async def run(self):
        self.boots = record_boot()
        persisted = time.ticks_ms()
        while True:
            watchdog.feed()
            self.last = snapshot()
            now = time.ticks_ms()
            if time.ticks_diff(now, persisted) >= self.persist_s * 1000:
                persisted = now
                try:
                    _write_atomic(SNAPSHOT, self.last)
                except OSError:
                    pass
            await asyncio.sleep_ms(min(1000, max(20, int(self.persist_s * 1000))))
