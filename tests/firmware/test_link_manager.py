# The link manager's 4G side (hemhub.link.manager) under MicroPython, with a
# driver factory instead of a modem: it takes turns with the GATT links for the
# heap. A try waits while a link runs (heap_busy), and a driver that does not
# fit the heap is a state with a backoff, not an exception out of the task.
import sys

# The board emulation's `time` needs a running world; these tests use the
# interpreter's own time and asyncio.
sys.path[:] = [p for p in sys.path if not p.endswith("/vhub/board")]

import asyncio  # noqa: E402
import time  # noqa: E402

from hemhub.link.manager import LinkManager  # noqa: E402

CFG = {"apn": "iot.test", "link": {"backoff_ms": 100, "backoff_max_ms": 400, "check_ms": 10}}


def _driver_that_does_not_fit(loads):
    """A cell() factory whose driver import meets a full heap; notes each load."""
    def cell():
        loads.append(time.ticks_ms())
        raise MemoryError("memory allocation failed, allocating 360 bytes")

    return cell


def test_a_4g_try_waits_while_a_gatt_link_holds_the_heap():
    loads = []
    m = LinkManager(CFG, cell=_driver_that_does_not_fit(loads))
    busy = [True]
    m.heap_busy = lambda: busy[0]

    async def main():
        for _ in range(5):
            await m.step()
        assert loads == [] and not m.dialling  # the link's turn
        busy[0] = False
        await m.step()

    asyncio.run(main())
    assert len(loads) == 1


def test_a_modem_driver_that_does_not_fit_the_heap_is_a_state_and_backs_off():
    loads = []
    m = LinkManager(CFG, cell=_driver_that_does_not_fit(loads))

    async def main():
        for _ in range(30):  # 300 ms of steps
            await m.step()  # never raises
            await asyncio.sleep_ms(10)

    asyncio.run(main())
    assert m.cellular == "no memory" and m.modem is None and not m.dialling, m.state()
    assert 2 <= len(loads) <= 4, loads  # after 0, then ~50-100 ms, then ~100-200 ms: not every step
    assert m.state()["link"] == "none"
