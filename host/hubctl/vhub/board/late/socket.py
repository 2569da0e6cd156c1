# socket, as on the ESP32 port, for the virtual hub: the built-in, except that
# getaddrinfo routes through the world. It resolves the name (the world's host
# table, 'localhost', IP literals) and answers with the address of the world's
# proxy for that destination, which carries the connection over the hub's
# current default link (WiFi, else PPP), so each link can be cut, slowed or
# made lossy on its own. Without a link up, it fails as lwIP does (-202).
# Imported at the end of the board's start-up (board/late/, see _board.py).
import _world
import usocket
from usocket import *  # noqa: F401,F403


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    r = _world.request({"req": "net_route", "host": host, "port": port})
    if "err" in r:
        raise OSError(r["err"])
    return usocket.getaddrinfo("127.0.0.1", r["port"], af, type, proto, flags)
