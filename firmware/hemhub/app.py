"""The application: a small asyncio program of tasks with one owner each.

This issue's tasks: health (and with it the watchdog) and the status LED.
Sensing, journal, signer, uplink and commands join as their issues land.
"""
import asyncio

from hemhub import config, health, led, sense, watchdog
from hemhub.sense import gpio, sink


async def _main(cfg):
    status_led = led.StatusLed()
    hl = health.Health(cfg["health_persist_s"])
    watchdog.start()
    asyncio.create_task(status_led.run())
    asyncio.create_task(hl.run())
    # One task owns the Recorder (sign + journal); sensing hands over through its
    # bounded queues, alarms first (hemhub/sense/sink.py, docs/sensing.md).
    records = sink.start()
    asyncio.create_task(records.run())
    sensing = sense.start(cfg, records)
    if sensing is not None:
        asyncio.create_task(sensing)
    # Wired door contact and service button: into the event ring at once, then signed.
    gpio.start(records.wired, cfg.get("gpio_debounce_ms", gpio.DEBOUNCE_MS),
               cfg.get("button_long_press_ms", gpio.LONG_PRESS_MS))
    if cfg.get("wifi") or cfg.get("apn"):
        from hemhub.link import manager  # WiFi preferred, 4G fallback (docs/link.md)

        asyncio.create_task(manager.start(cfg))
    if cfg.get("broker_host"):
        # Journal -> fleet over MQTT/TLS, reading the Recorder's own journal (docs/uplink.md).
        from hemhub import uplink

        link = None
        if cfg.get("wifi") or cfg.get("apn"):
            from hemhub.link import manager

            link = manager.current
        asyncio.create_task(uplink.start(cfg, records, link).run())
    await asyncio.sleep_ms(0)
    status_led.mode = "running"
    while True:
        await asyncio.sleep(3600)


def main():
    cfg = config.load()
    try:
        asyncio.run(_main(cfg))
    finally:
        # Stopped from the console (Ctrl-C) or by an error: keep the watchdog
        # fed for the service window, then it resets the hub into service.
        watchdog.service_window()
        asyncio.new_event_loop()
