"""Sensing: the BLE central (central.py), bonding keys (keys.py).

start(cfg) builds the central from the enrolment list in the config and
returns its task's coroutine; readings and alarm events go to the hooks given
(the journal's, once it lands) and to a small in-RAM window for the service
API (hemhub.service.readings_json).
"""
from micropython import const

_RECENT = const(12)

recent_readings = []
recent_events = []
current = None


def _keep(lst, item):
    lst.append(item)
    del lst[:-_RECENT]


def start(cfg, on_reading=None, on_event=None):
    """The sensing task's coroutine for cfg["peripherals"] (None if there are none)."""
    global current
    peripherals = cfg.get("peripherals") or []
    if not peripherals:
        return None
    import bluetooth

    from hemhub.sense.central import Central
    from hemhub.sense.keys import KeyStore

    def _reading(r):
        _keep(recent_readings, r)
        return on_reading(r) if on_reading else True

    def _event(e):
        _keep(recent_events, e)
        if on_event:
            on_event(e)

    current = Central(bluetooth.BLE(), peripherals, _reading, _event, KeyStore())
    return current.run()
