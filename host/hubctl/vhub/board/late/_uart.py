# machine.UART for the virtual hub (machine.py loads it on first use). What the
# hub transmits goes to the world; what the far end (the modem, when the pins
# are the ones wired to it) sends arrives as world events into a bounded
# receive buffer (rxbuf, 256 bytes by default as on the ESP32 port): bytes
# beyond it are lost, as on the chip. Reads wait up to `timeout` ms.
import binascii

import _world
import utime

_uarts = {}
_PINS = {0: (1, 3), 1: (10, 9), 2: (17, 16)}  # ESP32 default TX, RX per UART


def _on_uart(ev):
    u = _uarts.get(ev["id"])
    if u is not None:
        d = binascii.unhexlify(ev["h"])
        room = u._size - len(u._buf)
        u._buf.extend(d[:room])
        u.overruns += max(0, len(d) - room)


_world.on("uart", _on_uart)


class UART:
    def __init__(self, id, baudrate=115200, **kw):
        self._id = id
        self._buf = bytearray()
        self.overruns = 0
        tx, rx = _PINS.get(id, (-1, -1))
        self._cfg = {"baudrate": baudrate, "tx": tx, "rx": rx, "timeout": 0, "rxbuf": 256}
        self.init(baudrate, **kw)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, **kw):
        c = self._cfg
        if baudrate:
            c["baudrate"] = baudrate
        for k in ("tx", "rx", "timeout", "rxbuf"):
            if k in kw:
                c[k] = kw[k]
        self._size = max(c["rxbuf"], 64)
        _uarts[self._id] = self
        _world.request({"req": "net_uart", "id": self._id, "baud": c["baudrate"], "tx": c["tx"], "rx": c["rx"]})

    def deinit(self):
        _uarts.pop(self._id, None)
        _world.request({"req": "net_uart", "id": self._id, "tx": -1, "rx": -1})

    def any(self):
        return len(self._buf)

    def _wait(self):
        end = utime.ticks_add(utime.ticks_ms(), self._cfg["timeout"])
        import time  # the board's sleep: world events are handled while it waits

        while not self._buf and utime.ticks_diff(end, utime.ticks_ms()) > 0:
            time.sleep_ms(1)

    def read(self, n=-1):
        self._wait()
        if not self._buf:
            return None
        if n is None or n < 0:
            n = len(self._buf)
        d = bytes(self._buf[:n])
        self._buf[:n] = b""
        return d

    def readinto(self, buf, n=-1):
        d = self.read(len(buf) if n is None or n < 0 else min(n, len(buf)))
        if d is None:
            return None
        buf[: len(d)] = d
        return len(d)

    def readline(self):
        self._wait()
        i = self._buf.find(b"\n")
        return self.read(i + 1 if i >= 0 else -1)

    def write(self, buf):
        _world.notify({"req": "net_uart_w", "id": self._id, "h": binascii.hexlify(buf).decode()})
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True
