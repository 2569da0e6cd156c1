"""The status LED: blinking while the hub starts, steady once the application runs."""
import asyncio

from machine import Pin

from hemhub import board


class StatusLed:
    def __init__(self, pin=None):
        self._pin = pin if pin is not None else Pin(board.STATUS_LED, Pin.OUT, value=0)
        self.mode = "starting"  # starting | running | fault

    async def run(self):
        on = 0
        while True:
            if self.mode == "running":
                self._pin.value(1)
                await asyncio.sleep_ms(1000)
                continue
            on ^= 1
            self._pin.value(on)
            await asyncio.sleep_ms(250 if self.mode == "starting" else 100)
