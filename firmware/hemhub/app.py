"""The application: a small asyncio program of tasks with one owner each.

Tasks: health (and with it the watchdog), the status LED, the record task
(sign + journal), sensing (BLE central, wired door), the link manager (WiFi/4G)
and the uplink (journal -> fleet). Commands and updates join as their issues land.
"""
import asyncio
import gc

from micropython import const

from hemhub import config, health, led, sense, watchdog
from hemhub.sense import gpio, sink

_QUIET_WAIT_MS = const(10000)  # how long a planned restart waits for the queues to drain


def _preload(cfg):
    # The long-lived modules first, while the heap is still in one piece: loaded
    # later, between the tasks' buffers, they fragment it
    # (docs/decisions/0003-application-heap.md).
    if cfg.get("broker_host"):  # the uplink opens the journal at once
        from hemhub import identity, recorder, uplink  # noqa: F401
        from hemhub.uplink import forward, tls  # noqa: F401
    if cfg.get("wifi") or cfg.get("apn"):
        from hemhub.link import manager  # noqa: F401


async def _restart_when_quiet(records, reason):
    # A planned restart (docs/decisions/0006-planned-restart.md) must lose
    # nothing: every alarm and reading queued in RAM is committed to the journal
    # first, no GATT link is open (a device deletes its stored records, and a
    # new bond is saved, only at the link's end) and no BLE alarm is owed. The
    # journal survives the reset as it survives a power cut. Not quiet in time:
    # return, the caller goes on.
    for _ in range(_QUIET_WAIT_MS // 100):
        central = sense.current
        if records.drained() and (central is None or not central.busy()):
            health.note_restart(reason)
            print("hemhub: planned restart:", reason)
            import machine

            machine.reset()
        await asyncio.sleep_ms(100)
    print("hemhub: restart postponed (records or a GATT link still busy):", reason)


async def _main(cfg, arena):
    forwards = bool(cfg.get("broker_host"))
    _preload(cfg)
    # Every module is in: the hole main.py kept now takes the long-lived buffers
    # (TLS context, MQTT buffers, journal buffer, signer table, BLE queues).
    arena.clear()
    gc.collect()
    if forwards:
        from hemhub import uplink

        uplink.prepare(cfg)
    status_led = led.StatusLed()
    hl = health.Health(cfg["health_persist_s"])
    watchdog.start()
    asyncio.create_task(status_led.run())
    asyncio.create_task(hl.run())
    # One task owns the Recorder (sign + journal); sensing hands over through its
    # bounded queues, alarms first (hemhub/sense/sink.py, docs/sensing.md).
    records = sink.start()
    if forwards:
        records.open()  # the journal and signer now, while the heap is in one piece
    asyncio.create_task(records.run())
    if forwards and records.recorder is not None and uplink.current.client is not None:
        # The identity (key, certificate, factory record) is read once a boot:
        # the signer and the TLS context now hold what the hub needs of it.
        import hemhub

        hemhub.unload("hemhub", "identity", "factory")
    link = None
    if cfg.get("wifi") or cfg.get("apn"):
        from hemhub.link import manager  # WiFi preferred, 4G fallback (docs/link.md)

        task = manager.start(cfg)
        if task is not None:
            asyncio.create_task(task)
            link = manager.current
    fw = None
    if forwards:
        # Journal -> fleet over MQTT/TLS, reading the Recorder's own journal (docs/uplink.md).
        fw = uplink.start(cfg, records, link)
        fw.restart = lambda reason: _restart_when_quiet(records, reason)
        asyncio.create_task(fw.run())
    sensing = sense.start(cfg, records)
    # The central now holds what it needs of each enrolled device; the parsed
    # JSON (a dict and strings per device) need not stay for the whole boot.
    cfg.pop("peripherals", None)
    if sensing is not None:
        central = sense.current
        # The heap's largest short-lived needs take turns: the uplink's TLS
        # connect, a GATT link, the modem driver of a 4G try. A link waits
        # while the uplink connects or 4G is being tried (at most 30 s), and
        # borrows the uplink's connect reserve; a 4G try waits while a link
        # runs (docs/decisions/0004-heap-on-a-64-bit-interpreter.md).
        if fw is not None:
            central.lend_heap = fw.lend_reserve
            central.return_heap = fw.return_reserve
        if fw is not None or link is not None:
            central.defer_links = lambda: ((fw is not None and fw.connecting)
                                           or (link is not None and link.dialling))
        if link is not None:
            link.heap_busy = lambda: central.in_link
        asyncio.create_task(sensing)
    # Wired door contact and service button: into the event ring at once, then signed.
    gpio.start(records.wired, cfg.get("gpio_debounce_ms", gpio.DEBOUNCE_MS),
               cfg.get("button_long_press_ms", gpio.LONG_PRESS_MS))
    await asyncio.sleep_ms(0)
    status_led.mode = "running"
    while True:
        await asyncio.sleep(3600)


def main(arena=None):
    # arena: [bytearray] main.py made before any import, freed once all are in.
    cfg = config.load()
    try:
        asyncio.run(_main(cfg, arena if arena is not None else []))
    finally:
        # Stopped from the console (Ctrl-C) or by an error: keep the watchdog
        # fed for the service window, then it resets the hub into service.
        watchdog.service_window()
        asyncio.new_event_loop()
