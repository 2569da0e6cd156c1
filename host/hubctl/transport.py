"""Talking to a hub over its console, real or virtual, through mpremote's
serial transport (raw REPL). Never a copy of it: only error translation and
the hemhub service-call convention live here.

mpremote TransportError -> hubctl TransportError / HubNotFoundError / HubStateError,
each with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
import threading

from mpremote.transport import TransportError as MpTransportError
from mpremote.transport import TransportExecError
from mpremote.transport_serial import SerialTransport

from .errors import HubNotFoundError, HubStateError, TransportError


def _diagnose_port(port: str) -> None:
    """Raise a precise error for a port that cannot be opened."""
    if not os.path.exists(port):
        raise HubNotFoundError(f"There is no serial port {port}.",
                               hint="Check the cable and the port name (ls /dev/ttyUSB* /dev/ttyACM*), "
                                    "or for a virtual hub use the path in DIR/console.")
    mode = os.stat(port).st_mode
    if not stat.S_ISCHR(mode):
        raise HubNotFoundError(f"{port} is not a serial port (not a character device).")
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise HubNotFoundError(f"No permission to open {port}.",
                               hint="Add yourself to the dialout group, or run as root.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise HubStateError(f"The console {port} is busy: another program (mpremote, a terminal, "
                                f"another hubctl) has it open.", hint="Close that program and try again.") from None
        import termios

        try:
            termios.tcgetattr(fd)
        except termios.error:
            raise HubNotFoundError(f"{port} is not a serial port (not a terminal).") from None
    finally:
        os.close(fd)


class _ThreadQuietStdout:
    """sys.stdout that holds back what one thread prints while that thread is
    inside quiet_mpremote(): mpremote prints progress chatter while connecting,
    and, when it cannot enter the raw REPL, what the board sent instead. The
    last _KEPT characters are kept for the error message. (contextlib's
    redirect_stdout swaps the process-wide stdout, so parallel sessions, as in
    a provisioning batch, would silence or capture each other.)"""

    _KEPT = 600

    def __init__(self, real):
        self._real = real
        self._local = threading.local()

    def quiet(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def kept(self) -> str:
        """What this thread printed while quiet (its last _KEPT characters)."""
        return getattr(self._local, "kept", "")

    def write(self, s):
        if not self.quiet():
            return self._real.write(s)
        self._local.kept = (self.kept() + s)[-self._KEPT:]
        return len(s)

    def __getattr__(self, name):
        return getattr(self._real, name)


_install_lock = threading.Lock()


@contextlib.contextmanager
def quiet_mpremote():
    """Silence mpremote's chatter in this thread only."""
    with _install_lock:
        if not isinstance(sys.stdout, _ThreadQuietStdout):
            sys.stdout = _ThreadQuietStdout(sys.stdout)
        out = sys.stdout
    if not out.quiet():
        out._local.kept = ""
    out._local.depth = getattr(out._local, "depth", 0) + 1
    try:
        yield out
    finally:
        out._local.depth -= 1


class HubConsole:
    """A raw-REPL session with a hub. Use as a context manager.

    On close the hub is soft-reset into its application again (resume=True), so
    a status query does not leave the hub stopped at a prompt.

    soft_reset=False interrupts the application (Ctrl-C) instead of restarting
    the interpreter before the session, so its RAM state (e.g. the recent
    events, service.events_json) can still be read.
    """

    ATTEMPTS = 3
    ATTEMPT_S = 4

    def __init__(self, port: str, *, resume: bool = True, baudrate: int = 115200, soft_reset: bool = True):
        self.port = port
        self.resume = resume
        try:
            with quiet_mpremote():
                # A read timeout, so a hub that never answers ends in an error
                # instead of a hang (mpremote reads a pty without one).
                self.transport = SerialTransport(port, baudrate=baudrate, timeout=1)
        except MpTransportError:
            _diagnose_port(port)
            raise TransportError(f"Could not open {port}.") from None
        try:
            self.enter(soft_reset=soft_reset)
        except TransportError:
            self.transport.close()
            raise

    def enter(self, *, soft_reset: bool, what: str = "") -> None:
        """Enter the raw REPL, after a soft reset of the interpreter if asked.

        A hub that is still starting can swallow the first Ctrl-C in boot.py
        (main.py then runs on): interrupt again, a few times, before giving up.
        The error quotes what the hub sent instead of the prompt."""
        heard = error = ""
        for _attempt in range(self.ATTEMPTS):
            try:
                with quiet_mpremote() as out:
                    self.transport.enter_raw_repl(soft_reset=soft_reset, timeout_overall=self.ATTEMPT_S)
                return
            except (MpTransportError, OSError) as e:
                error = str(e)
                got = out.kept().strip()
                if got and got != "b''":  # mpremote prints the bytes it read, even none
                    heard = got  # the last attempt that heard anything
        said = heard or error
        if what:
            raise TransportError(f"Lost the console on {self.port} {what} (the hub answered {said[-300:]!r}).",
                                 hint="Check the cable, then run the command again.")
        raise TransportError(f"No MicroPython REPL answered on {self.port} (it sent {said[-300:]!r}).",
                             hint="Is this the hub's port and is the hub powered? For a virtual hub, "
                                  "check that hubctl vhub run is running.")

    def __enter__(self) -> HubConsole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exec(self, code: str, timeout: float = 30) -> str:
        try:
            out = self.transport.exec_raw(code, timeout=timeout)
        except MpTransportError as e:
            raise TransportError(f"Lost the console on {self.port} while running a command ({e}).",
                                 hint="Check the cable; if the hub rebooted, run the command again.") from None
        stdout, stderr = out
        if stderr:
            raise TransportExecError(stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        return stdout.decode(errors="replace")

    def call(self, module: str, func: str, *args) -> object:
        """Call hemhub.<module>.<func>(*args) on the hub; it prints one JSON line."""
        arglist = ", ".join(repr(a) for a in args)
        code = f"import hemhub.{module} as _m\n_m.{func}({arglist})\n"
        try:
            out = self.exec(code)
        except TransportExecError as e:
            err = e.error_output.strip().splitlines()
            last = err[-1] if err else "unknown error"
            if "ImportError" in last and "hemhub" in last:
                raise HubStateError(f"The hub on {self.port} answers, but runs no hemhub firmware ({last}).",
                                    hint="Flash or deploy the firmware first (hubctl flash / hubctl deploy).") from None
            raise HubStateError(f"hemhub.{module}.{func} failed on the hub: {last}") from None
        line = out.strip().splitlines()[-1] if out.strip() else ""
        try:
            return json.loads(line)
        except ValueError:
            raise HubStateError(f"The hub's reply to {module}.{func} is not JSON: {out.strip()[:200]!r}") from None

    def close(self) -> None:
        t = self.transport
        try:
            t.exit_raw_repl()
            if self.resume:
                # Soft reset in the friendly REPL: boot.py, then main.py. A Ctrl-D
                # that met no REPL (nothing at all came back) is sent once more,
                # so the session never leaves the hub without its application.
                for _ in range(2):
                    t.serial.write(b"\x04")
                    if t.read_until(1, b"soft reboot\r\n", timeout=2):
                        break
        except (MpTransportError, OSError):
            pass
        finally:
            try:
                t.close()
            except OSError:
                pass
