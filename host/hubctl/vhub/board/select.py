# select, as on the ESP32 port: a scheduled callback (an IRQ) ends a blocking
# poll early. The world's wake socket is polled alongside the caller's objects
# and never reported to the caller.
import _world
import uselect
from uselect import *  # noqa: F401,F403

_W = _world.wake_socket()


class _Poll:
    def __init__(self):
        self._p = uselect.poll()
        self._p.register(_W, uselect.POLLIN)

    def register(self, obj, mask=uselect.POLLIN | uselect.POLLOUT):
        self._p.register(obj, mask)

    def unregister(self, obj):
        self._p.unregister(obj)

    def modify(self, obj, mask):
        self._p.modify(obj, mask)

    def poll(self, timeout=-1):
        return list(self.ipoll(timeout))

    def ipoll(self, timeout=-1, flags=0):
        res = self._p.poll(timeout)
        out = []
        for item in res:
            if item[0] is _W:
                _world.drain_wake()
            else:
                out.append(item)
        return out


def poll():
    return _Poll()
