# The board's REPL on the console, with the semantics of MicroPython's
# shared/runtime/pyexec.c (friendly REPL, paste mode, raw REPL, raw-paste mode),
# so stock mpremote drives the virtual hub exactly as it drives an ESP32.
# Protocol reference: MicroPython docs, reference/repl.rst ("Raw mode and
# raw-paste mode").
import sys

import _world
import uselect
from micropython import const

_CTRL_A = const(1)
_CTRL_B = const(2)
_CTRL_C = const(3)
_CTRL_D = const(4)
_CTRL_E = const(5)
_PASTE_WINDOW = const(256)

FRIENDLY = "friendly"
RAW = "raw"


class SoftReset(Exception):
    pass


_out = sys.stdout
_in = sys.stdin.buffer
_poller = uselect.poll()
_poller.register(sys.stdin, uselect.POLLIN)
_poller.register(_world.wake_socket(), uselect.POLLIN)
_state = [None]


def console_state(state):
    # The world turns Ctrl-C into an interrupt only while code runs ("running");
    # while the REPL reads ("reading") it is a character; in between ("busy")
    # it waits in the receive buffer, as with mp_hal_set_interrupt_char.
    if _state[0] != state:
        _state[0] = state
        _world.notify({"req": "console", "state": state})


def _getc():
    console_state("reading")
    while True:
        for obj, _ev in _poller.poll(-1):
            if obj is sys.stdin:
                c = _in.read(1)
                if not c:
                    raise SoftReset(FRIENDLY)  # console closed: behave like Ctrl-D
                return c[0]
            _world.drain_wake(False)  # a scheduled IRQ runs between these bytecodes


def _write(s):
    _out.write(s)


def run_code(src, g, mode="exec"):
    """Compile and run src; return the exception it raised, or None.

    SystemExit means soft reset, as in pyexec."""
    try:
        _world.drain_wake(False)  # an interrupt meant for code that has ended
        console_state("running")
        exec(compile(src, "<stdin>", mode), g)
    except SystemExit:
        raise SoftReset(None) from None
    except BaseException as e:  # any error is the user's program's: report it
        return e
    finally:
        console_state("busy")
    return None


def banner():
    v = sys.implementation.version
    _write('MicroPython v%d.%d.%d on %s; hemhub virtual hub with ESP32\r\nType "help()" for more information.\r\n'
           % (v[0], v[1], v[2], sys.version.split()[-1]))


def raw_repl(g):
    _write("raw REPL; CTRL-B to exit\r\n")
    while True:
        line = bytearray()
        _write(">")
        while True:
            c = _getc()
            if c == _CTRL_A:
                if len(line) == 2 and line[0] == _CTRL_E:
                    if line[1] == ord("A"):
                        _raw_paste(g)
                    else:
                        _out.buffer.write(b"R\x00")
                    break
                _write("raw REPL; CTRL-B to exit\r\n")
                break
            if c == _CTRL_B:
                _write("\r\n")
                return FRIENDLY
            if c == _CTRL_C:
                line = bytearray()
            elif c == _CTRL_D:
                _write("OK")
                if not line:
                    _write("\r\n")
                    raise SoftReset(RAW)
                _run_raw(bytes(line), g)
                break
            else:
                line.append(c)


def _run_raw(src, g):
    err = run_code(src, g)
    _write("\x04")
    if err is not None:
        sys.print_exception(err)
    _write("\x04")


def _raw_paste(g):
    # Flow control: the device grants a window of bytes and sends \x01 for each
    # further window it can take; \x04 from the host ends the data.
    _out.buffer.write(b"R\x01" + bytes((_PASTE_WINDOW & 0xFF, _PASTE_WINDOW >> 8)) + b"\x01")
    src = bytearray()
    remaining = _PASTE_WINDOW
    while True:
        c = _getc()
        if c == _CTRL_D:
            break
        src.append(c)
        remaining -= 1
        if remaining == 0:
            remaining = _PASTE_WINDOW
            _out.buffer.write(b"\x01")
    _out.buffer.write(b"\x04")  # data received and compiled
    _run_raw(bytes(src), g)


def _continues(buf):
    # Same rule of thumb as MicroPython's repl.c: a compound statement, an open
    # bracket or a continuation line asks for more input.
    last = buf.rstrip().split("\n")[-1]
    if last.endswith(":") or last.endswith("\\"):
        return True
    if buf.count("(") > buf.count(")") or buf.count("[") > buf.count("]") or buf.count("{") > buf.count("}"):
        return True
    return "\n" in buf and buf.split("\n")[-1] != ""


def friendly_repl(g):
    banner()
    while True:
        buf = ""
        line = bytearray()
        _write(">>> ")
        while True:
            c = _getc()
            if c == _CTRL_A:
                _write("\r\n")
                return RAW
            if c == _CTRL_B:
                _write("\r\n")
                banner()
                buf = ""
                line = bytearray()
                _write(">>> ")
            elif c == _CTRL_C:
                _write("\r\nKeyboardInterrupt\r\n>>> ")
                buf = ""
                line = bytearray()
            elif c == _CTRL_D:
                if not line and not buf:
                    _write("\r\n")
                    raise SoftReset(FRIENDLY)
            elif c == _CTRL_E:
                _paste_mode(g)
                break
            elif c in (8, 127):
                if line:
                    line = line[:-1]
                    _write("\x08 \x08")
            elif c == 13:
                _write("\r\n")
                buf += line.decode()
                line = bytearray()
                if buf and _continues(buf):
                    buf += "\n"
                    _write("... ")
                    continue
                if buf.strip():
                    err = run_code(buf, g, "single")
                    if err is not None:
                        sys.print_exception(err)
                break
            elif c >= 32 or c == 9:
                line.append(c)
                _out.buffer.write(bytes((c,)))


def _paste_mode(g):
    _write("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    src = bytearray()
    while True:
        c = _getc()
        if c == _CTRL_C:
            _write("\r\n")
            return
        if c == _CTRL_D:
            _write("\r\n")
            err = run_code(bytes(src), g)
            if err is not None:
                sys.print_exception(err)
            return
        src.append(10 if c == 13 else c)
        if c == 13:
            _write("\r\n=== ")
        else:
            _out.buffer.write(bytes((c,)))
