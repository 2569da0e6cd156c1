"""The last alarm-class events, in RAM only, for diagnosis (service.events_json,
service.readings_json): the wired inputs' and the BLE central's in one ring.

A fixed ring: record() is the sensing layer's emit callback and allocates
nothing (the event and source are constant strings, the ticks small ints).
A BLE event also keeps a `detail` tuple in DETAIL's order, which items() turns
back into keys: 16 event dicts held for the life of a boot would cost ~4.8 KiB
of this 64-bit build's heap in scattered blocks, the tuples ~1.5 KiB.
The journal, not this ring, is what keeps events across a restart.
"""
import time

SIZE = 16
DETAIL = ("addr", "kind", "object", "value", "serves", "waits", "time")

_log = None


class RecentEvents:
    def __init__(self, size=SIZE):
        self.size = size
        self.total = 0  # events recorded since start; the ring keeps the last `size`
        self._event = [None] * size
        self._ticks = [0] * size
        self._source = [None] * size
        self._recorded = [0] * size
        self._detail = [None] * size

    def record(self, event, ticks_ms, source, detail=None):
        i = self.total % self.size
        self._detail[i] = detail
        self._event[i] = event
        self._ticks[i] = ticks_ms
        self._source[i] = source
        self._recorded[i] = time.ticks_ms()
        self.total += 1

    def items(self):
        """Oldest first: {"event", "ticks_ms", "source", "latency_ms"} each, where
        latency_ms is how long after ticks_ms the event was recorded; a BLE
        event adds its detail's keys (addr, kind, object, value, serves, ...)."""
        n = min(self.total, self.size)
        out = []
        for k in range(self.total - n, self.total):
            i = k % self.size
            e = {}
            d = self._detail[i]
            if d:
                for k, v in zip(DETAIL, d):
                    e[k] = v
                e["rx_ticks"] = self._ticks[i]
                e["ticks"] = self._recorded[i]
            e["event"] = self._event[i]
            e["ticks_ms"] = self._ticks[i]
            e["source"] = self._source[i]
            e["latency_ms"] = time.ticks_diff(self._recorded[i], self._ticks[i])
            out.append(e)
        return out


def open_log(size=SIZE):
    """The application's ring (created on first use)."""
    global _log
    if _log is None:
        _log = RecentEvents(size)
    return _log


def snapshot():
    """{"recording": bool, "total": int, "events": [...]}; recording is False when
    no application has recorded in this interpreter (e.g. after a soft reset)."""
    if _log is None:
        return {"recording": False, "total": 0, "events": []}
    return {"recording": True, "total": _log.total, "events": _log.items()}
