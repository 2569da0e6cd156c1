"""Sensing: the BLE central (central.py), bonding keys (keys.py), the wired
inputs (gpio.py) and the hand-over to the record path (sink.py).

start(cfg, sink) builds the central from the enrolment list in the config and
returns its task's coroutine. Each reading goes to a small in-RAM window
(recent_readings, compact) and to the sink; each alarm event to the shared
event ring (recent.py, also the wired inputs') and to the sink. The service
API (hemhub.service.readings_json) shows both.
"""
from micropython import const

from hemhub.sense import recent

_RECENT = const(8)  # readings the window keeps on a hub that does not journal them
# On a hub that journals them the window is for a technician's eye only: the
# last 3 live readings. A decoded reading held there is ~1 KiB of this build's
# heap (its dict, observations, device info), and a backlog of stored records
# fetched over RACP turned the window over 1,000 times while the uplink drained
# it: long-lived blocks scattered through the heap the reconnects needed.
_RECENT_JOURNALED = const(3)
# what the recent window keeps of a reading (the rest is in the signed record)
_KEEP = ("addr", "kind", "uuid", "observations", "device_time", "hub_time", "from_storage",
         "device_clock_not_set", "user_id", "device")

recent_readings = []
current = None


def link_unload():
    """Drop the GATT side (link.py and the GATT codecs) after a link, also when
    its import failed half-way (MemoryError)."""
    from hemhub import unload

    unload("hemhub.codec", "gatt", "gatt_weight", "gatt_plx", "gatt_bp", "gatt_temp", "gatt_device", "gatt_racp")
    unload("hemhub.sense", "link")


def _compact(r):
    out = {}
    for k in _KEEP:
        if k in r:
            out[k] = r[k]
    return out


def start(cfg, sink=None):
    """The sensing task's coroutine for cfg["peripherals"] (None if there are none)."""
    global current
    peripherals = cfg.get("peripherals") or []
    if not peripherals:
        return None
    import bluetooth

    from hemhub.sense.central import Central
    from hemhub.sense.keys import KeyStore

    ring = recent.open_log()

    def _reading(r):
        journaled = sink is not None and sink.provisioned
        if not (journaled and r.get("from_storage")):
            recent_readings.append(_compact(r))
            del recent_readings[:-(_RECENT_JOURNALED if journaled else _RECENT)]
        return sink.reading(r) if sink is not None else True

    def _event(e):
        # The central calls this again after a MemoryError: everything that
        # allocates comes before the queue, and the ring (which does not
        # allocate) after it, so a retry never queues or records twice.
        detail = (e["addr"], e["kind"], e["object"], e["value"], e["serves"], e["waits"], e["time"])
        if sink is not None:
            from hemhub.sense.sink import event_record

            t, src, v, p = event_record(e)
            if not sink.alarm(t, src, v, p):
                return False  # its queue is full: the central offers it again
        ring.record(e["event"], e["rx_ticks"], "ble", detail)
        return True

    current = Central(bluetooth.BLE(), peripherals, _reading, _event, KeyStore())
    if sink is not None:
        current.sync = sink.sync
    return current.run()
