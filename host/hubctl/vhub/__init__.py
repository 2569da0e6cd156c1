"""The virtual hub: the real MicroPython interpreter, emulated board below its API."""
