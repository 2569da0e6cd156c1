# Link from the emulated board to the world process (the host-side simulator).
#
# Three AF_UNIX connections to the world socket, each with one owner:
#   ctl  - main thread: requests (one JSON line out, one JSON line back) and notices;
#   irq  - the reader thread: world events in; it hands each line to
#          micropython.schedule (so handlers run on the main thread between
#          bytecodes, like ESP32 IRQ callbacks) and acknowledges it;
#   wake - main thread: after an acknowledged event the world writes one byte here,
#          so blocking waits (select.poll, time.sleep, the REPL) return at once,
#          the way an interrupt ends a WFI on the chip.
# The reader thread touches nothing but its own socket and buffer (this build
# has no GIL).
import _thread
import json
import os
import socket
import struct

import micropython
from micropython import const
import uselect
import utime

_path = os.getenv("HEMHUB_WORLD")
_boot = os.getenv("HEMHUB_BOOT_ID") or "0"
_handlers = {}


def _connect(role):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The Unix port's connect() takes a raw sockaddr: struct sockaddr_un.
    s.connect(struct.pack("<H", socket.AF_UNIX) + _path.encode() + b"\0")
    s.send(b'{"hello":"%s","boot":"%s"}\n' % (role.encode(), _boot.encode()))
    return s


_ctl = _connect("ctl")
_wake = _connect("wake")
_irq = _connect("irq")


def _readline(sock):
    # The ctl socket is used only synchronously, so a byte-at-a-time read is
    # enough and keeps no buffer around.
    out = bytearray()
    while True:
        c = sock.recv(1)
        if not c:
            raise OSError("world closed")
        if c == b"\n":
            return out
        out.extend(c)


def request(msg):
    _ctl.send(json.dumps(msg).encode() + b"\n")
    reply = json.loads(_readline(_ctl))
    if "error" in reply:
        raise OSError(reply["error"])
    return reply


def notify(msg):
    msg["noreply"] = 1
    _ctl.send(json.dumps(msg).encode() + b"\n")


def on(kind, handler):
    _handlers[kind] = handler


def _dispatch(line):
    try:
        ev = json.loads(line)
    except ValueError:
        print("hemhub runtime: unreadable world event %r" % bytes(line[:120]))
        return
    h = _handlers.get(ev.get("ev"))
    if h is not None:
        h(ev)


def wake_socket():
    return _wake


_wake_buf = bytearray(64)
_INTERRUPT = const(0x69)  # b"i": a Ctrl-C typed while code runs


def drain_wake(interruptible=True):
    # The world writes b"!" on the wake socket after each event it has handed
    # over, and b"i" for a Ctrl-C while code runs. The interrupt is raised here,
    # in the main thread where it waits, as the ESP32 raises a UART Ctrl-C at the
    # next bytecode: never inside a garbage collection, as a SIGINT could be.
    # Where no code runs (the REPL reads), a late one is discarded, as pyexec
    # clears a pending interrupt when code ends.
    while True:
        try:
            n = _wake.readinto(_wake_buf)
        except OSError:
            return
        if not n:
            return
        if interruptible:
            for i in range(n):
                if _wake_buf[i] == _INTERRUPT:
                    raise KeyboardInterrupt


def _reader():
    # This thread allocates on the shared heap (the emulation's cost; the chip's
    # driver does not): when the firmware has it full, wait like a busy bus
    # rather than die, which would end every interrupt for the rest of the boot.
    # Bytes are read into a preallocated buffer (socket.recv allocates its result
    # after the read, so a MemoryError there would lose what was read), and every
    # allocation after the read is retried, so no event is ever cut.
    rbuf = bytearray(256)
    poller = uselect.poll()
    poller.register(_irq, uselect.POLLIN)
    _irq.setblocking(False)
    buf = b""
    while True:
        try:
            for _ in poller.ipoll(-1):
                pass
            n = _irq.readinto(rbuf)
        except MemoryError:
            utime.sleep_ms(2)
            continue
        except OSError as e:
            if e.errno == 11:  # EAGAIN: woken, nothing yet
                continue
            return
        if n is None:
            continue
        if not n:
            return  # the world closed the link
        while True:
            try:
                buf += rbuf[:n]
                break
            except MemoryError:
                utime.sleep_ms(2)
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            try:
                line = buf[:i]
                rest = buf[i + 1 :]
            except MemoryError:
                utime.sleep_ms(2)
                continue
            buf = rest
            while True:
                try:
                    micropython.schedule(_dispatch, line)
                    break
                except RuntimeError:  # schedule queue full: wait like a pending IRQ
                    utime.sleep_ms(1)
            while True:
                try:
                    _irq.send(b"a\n")
                    break
                except OSError as e:
                    if e.errno != 11:
                        return
                    utime.sleep_ms(1)


_wake.setblocking(False)
hello = request({"req": "hello"})
_thread.start_new_thread(_reader, ())
