# The forwarding task's reconnect loop (hemhub.uplink.forward) under MicroPython
# with the hub's 96 KiB heap: what it tells the link manager. A connection that
# the network refuses counts against the link (the manager fails over to 4G
# after enough of them); one the hub's own heap could not make does not: the
# link is fine, and bringing up 4G would only load the modem driver into the
# heap that just ran out.
import sys

import uselect
import utime

# mprun puts the virtual hub's board modules on the path; their time/select
# talk to a world this plain interpreter does not have: use the port's own.
sys.modules["time"] = utime
sys.modules["select"] = uselect

import asyncio  # noqa: E402

from hemhub.uplink.forward import Forwarder  # noqa: E402


class Link:
    def __init__(self):
        self.failures = 0

    async def wait_up(self):
        return True

    def note_failure(self):
        self.failures += 1

    def note_ok(self):
        self.failures = 0

    def state(self):
        return {"type": "wifi"}


class Records:
    journal = object()  # present: the task goes on to connect


def test_a_connection_the_heap_could_not_make_is_not_the_links_failure():
    link = Link()
    tries = []

    async def open_stream():
        tries.append(len(tries))
        if len(tries) == 1:
            raise MemoryError("memory allocation failed, allocating 520 bytes")
        raise OSError(111)  # ECONNREFUSED: the network's answer

    fw = Forwarder({"mqtt_keepalive_s": 10}, Records(), link=link, hub_id="HH1-TEST-0001",
                   open_stream=open_stream)

    async def main():
        task = asyncio.create_task(fw.run())
        for _ in range(300):
            await asyncio.sleep_ms(10)
            if len(tries) == 1:
                assert link.failures == 0, "a MemoryError was reported as the link's failure"
            if len(tries) == 2:
                break
        await asyncio.sleep_ms(20)
        task.cancel()

    asyncio.run(main())
    assert len(tries) == 2, tries
    assert link.failures == 1 and "unreachable" in fw.last_error, (link.failures, fw.last_error)


def test_sensing_is_asked_to_wait_while_a_connection_is_made_and_after_the_heap_failed_it():
    seen = []
    fw = None

    async def open_stream():
        seen.append(fw.connecting)
        if len(seen) == 1:
            raise MemoryError("memory allocation failed, allocating 304 bytes")
        raise OSError(111)

    fw = Forwarder({"mqtt_keepalive_s": 10}, Records(), link=Link(), hub_id="HH1-TEST-0001",
                   open_stream=open_stream)
    after = []

    async def main():
        task = asyncio.create_task(fw.run())
        for _ in range(300):
            await asyncio.sleep_ms(10)
            if len(seen) == 1 and not after:
                await asyncio.sleep_ms(50)  # in the pause after the heap's failure
                after.append(fw.connecting)
            if len(seen) == 2:
                break
        await asyncio.sleep_ms(50)  # in the pause after the network's refusal
        after.append(fw.connecting)
        task.cancel()

    asyncio.run(main())
    assert seen == [True, True], seen
    assert after == [True, False], after  # a refusing network does not hold sensing up


def test_a_heap_too_fragmented_to_connect_three_times_in_a_row_asks_for_a_planned_restart():
    # MicroPython never compacts its heap: a hub whose heap could not make a
    # connection three times running restarts (decision 0006). A network
    # refusal in between is the link's problem, not the heap's, and starts the
    # count again.
    import hemhub.uplink.forward as forward

    forward._jitter = lambda ms: 5  # the test need not wait out the backoff
    answers = [MemoryError("allocating 520 bytes"), MemoryError("allocating 168 bytes"), OSError(111),
               MemoryError("allocating 248 bytes"), MemoryError("allocating 520 bytes"),
               MemoryError("allocating 304 bytes")]
    tries = []
    restarts = []

    async def open_stream():
        tries.append(len(tries))
        raise answers[min(len(tries) - 1, len(answers) - 1)]

    fw = Forwarder({"mqtt_keepalive_s": 10}, Records(), link=Link(), hub_id="HH1-TEST-0001",
                   open_stream=open_stream)

    asked = asyncio.Event()

    async def restart(reason):
        restarts.append((len(tries), reason))
        asked.set()  # main() stops the task before its next try (5 ms away)

    fw.restart = restart

    async def main():
        task = asyncio.create_task(fw.run())
        try:
            await asyncio.wait_for_ms(asked.wait(), 5000)
        except asyncio.TimeoutError:
            pass
        task.cancel()

    asyncio.run(main())
    assert len(restarts) == 1, (tries, restarts)
    after, reason = restarts[0]
    assert after == 6, "asked after %d connections, not the 3rd heap failure in a row" % after
    assert "3 connections in a row found no heap" in reason and "MemoryError" in reason, reason


def test_a_session_waits_out_a_full_heap_instead_of_dropping_its_connection():
    # The next record cannot be read for lack of heap (a GATT link holds it):
    # nothing is sent, the connection stays, and the record goes once there is
    # room. Ending the session would have to make the TLS connection again in
    # the same heap.
    class Journal:
        pending_priority = 0

        def __init__(self):
            self.short = 2

        def pending(self, limit, out=None):
            if self.short:
                self.short -= 1
                raise MemoryError("allocating 304 bytes")
            del out[:]
            out.append(5)
            return out

    class Client:
        connected = True

        def __init__(self):
            self.sent = []

        async def publish(self, topic, payload, retain=False):
            self.sent.append((topic, payload))
            if len(self.sent) == 2:  # the status, then record 5
                self.connected = False

    class WithJournal:
        journal = Journal()

    fw = Forwarder({"status_interval_s": 300}, WithJournal(), Link(), hub_id="HH1-TEST-0001")
    fw.topics = {"rec": "r", "alarm": "a", "status": "s", "ack": "k"}
    fw.client = Client()
    fw.status = lambda: {"online": True}

    async def main():
        await asyncio.wait_for_ms(fw._session(), 3000)

    asyncio.run(main())
    assert [t for t, _ in fw.client.sent] == ["s", "r"] and fw.client.sent[1][1] == 5, fw.client.sent
    assert fw.counters["no_memory"] == 2 and fw.outstanding == {5: fw.outstanding[5]}


def test_between_connections_the_connect_reserve_is_lent_to_a_gatt_link_and_taken_back():
    fw = Forwarder({"mqtt_keepalive_s": 10}, Records(), link=Link(), hub_id="HH1-TEST-0001",
                   open_stream=None)
    assert fw._reserve is not None  # made at start-up
    fw.lend_reserve()
    assert fw._reserve is None  # the link's largest hole
    fw.return_reserve()
    assert fw._reserve is not None and len(fw._reserve) >= 4096
    fw.return_reserve()  # nothing lent: nothing happens twice
    fw.lend_reserve()
    fw.connecting = True  # the uplink started a connection meanwhile: the heap is its
    fw.return_reserve()
    assert fw._reserve is None
