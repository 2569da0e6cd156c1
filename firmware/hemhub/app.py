"""The application: a small asyncio program of tasks with one owner each.

This issue's tasks: health (and with it the watchdog) and the status LED.
Sensing, journal, signer, uplink and commands join as their issues land.
"""
import asyncio

from hemhub import config, health, led, sense, watchdog
from hemhub.sense import gpio, recent


async def _main(cfg):
    status_led = led.StatusLed()
    hl = health.Health(cfg["health_persist_s"])
    watchdog.start()
    asyncio.create_task(status_led.run())
    asyncio.create_task(hl.run())
    sensing = sense.start(cfg)
    if sensing is not None:
        asyncio.create_task(sensing)
    # Wired door contact and service button; events go straight to the ring.
    gpio.start(recent.open_log().record, cfg.get("gpio_debounce_ms", gpio.DEBOUNCE_MS),
               cfg.get("button_long_press_ms", gpio.LONG_PRESS_MS))
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
