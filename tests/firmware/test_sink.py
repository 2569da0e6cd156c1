# The sensing -> record hand-over (hemhub.sense.sink): the task that signs and
# commits what sensing queued, under MicroPython with the hub's 96 KiB heap.
# The recorder is a stand-in here (the real one, with P-256 and littlefs, is
# tests/firmware/test_recorder.py; that a failed signature leaves no seq gap is
# tests/firmware/test_journal.py): with both, the compiled modules do not fit
# the test heap next to asyncio.
import sys

import uselect
import utime

# asyncio polls and the sink reads the clock: no virtual hub's world here, so
# the port's own modules.
sys.modules["time"] = utime
sys.modules["select"] = uselect

import asyncio  # noqa: E402

from hemhub.sense.sink import Sink  # noqa: E402


class Signer:
    def ready(self):
        return 2

    def refill(self):
        return False


class Recorder:
    """Commits records with consecutive seqs; `heap_full` times raises
    MemoryError first, as signing can at the heap's edge."""

    def __init__(self, heap_full=0, broken=0):
        self.signer = Signer()
        self.heap_full = heap_full
        self.broken = broken
        self.stored = []

    def _commit(self, what):
        if self.heap_full:
            self.heap_full -= 1
            raise MemoryError("memory allocation failed, allocating 520 bytes")
        if self.broken:
            self.broken -= 1
            raise OSError(5)  # EIO: the flash failed
        self.stored.append(what)
        return len(self.stored)

    def event(self, type_, source=None, value=None, peripheral=None):
        return self._commit(("event", type_, value))

    def observations(self, obs, peripheral, device_time=None, user=None):
        return self._commit(("observations", obs[0]["value"]))


def _drain(sink, until):
    async def main():
        task = asyncio.create_task(sink.run())
        for _ in range(400):
            await asyncio.sleep_ms(10)
            if until():
                break
        task.cancel()

    asyncio.run(main())


def test_alarms_and_readings_that_meet_a_full_heap_are_kept_and_committed_later():
    rec = Recorder(heap_full=3)
    sink = Sink(lambda: rec)
    reading = {"addr": "C0:FF:EE:00:00:01", "kind": "scale", "hub_time": 1800000000,
               "observations": [{"mdc": 188736, "value": 72.35, "unit": "kg"}]}
    assert sink.reading(reading)
    assert sink.alarm("sos", "ble", "press")
    _drain(sink, lambda: len(rec.stored) == 2)
    assert rec.stored == [("event", "sos", "press"), ("observations", 72.35)], rec.stored  # alarm first
    st = sink.state()
    assert st["no_memory"] == 3 and st["alarms_signed"] == 1 and st["readings_signed"] == 1, st
    assert st["sign_failed"] == 0 and st["queued"] == 0 and st["last_seq"] == 2, st


def test_a_record_that_fails_otherwise_is_counted_and_the_next_one_goes_on():
    rec = Recorder(broken=1)
    sink = Sink(lambda: rec)
    assert sink.alarm("door_open", "wired")
    assert sink.alarm("door_close", "wired")
    _drain(sink, lambda: sink.state()["queued"] == 0)
    st = sink.state()
    assert rec.stored == [("event", "door_close", None)], rec.stored
    assert st["sign_failed"] == 1 and "OSError" in st["mode"], st


def test_a_recorder_that_cannot_open_for_lack_of_heap_is_opened_later():
    rec = Recorder()
    tries = [MemoryError, MemoryError]

    def make():
        if tries:
            raise tries.pop(0)("memory allocation failed, allocating 98 bytes")
        return rec

    sink = Sink(make)
    assert sink.alarm("sos", "ble", "press")
    _drain(sink, lambda: rec.stored)
    assert rec.stored == [("event", "sos", "press")] and sink.state()["mode"] == "journal", sink.state()


def test_a_wired_alarm_the_full_queue_refuses_is_not_in_the_ring_until_taken():
    from hemhub.sense import recent

    rec = Recorder()
    sink = Sink(lambda: rec)
    ring = recent.open_log()
    before = ring.total
    while sink.alarm("sos", "ble", "press"):  # fill the queue
        pass
    assert sink.wired("door_open", 1234, "wired") is False  # gpio.Line.offer_again tries again
    assert ring.total == before  # nothing recorded for a refused offer
    _drain(sink, lambda: sink.state()["queued"] == 0)
    assert sink.wired("door_open", 1234, "wired") is True
    assert ring.total == before + 1 and ring.items()[-1]["event"] == "door_open"
    _drain(sink, lambda: sink.state()["queued"] == 0)
    assert rec.stored[-1] == ("event", "door_open", None), rec.stored
