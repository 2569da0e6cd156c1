"""The virtual hub's supervisor: the board around the interpreter.

It owns, for one hub directory:
  * the console: a pseudo-terminal whose slave path is the hub's "USB serial
    port" (printed and written to DIR/console);
  * the interpreter: the real MicroPython Unix port running board/_board.py
    with the hub's 96 KiB heap, restarted on soft reset, hard reset, watchdog
    and power-on, killed with SIGKILL on a power cut;
  * the world: the simulator the emulation modules talk to over DIR/world.sock
    (GPIO lines, power, watchdog, timers, RTC), and that scripts drive
    through the same socket (hubctl vhub world, hubctl.vhub.world.WorldClient).

Console byte rules follow the ESP32 port: while code runs, Ctrl-C interrupts
it (the byte is consumed); while the REPL reads, it is an ordinary byte.
Output is "cooked" (a lone LF becomes CR LF), as MicroPython's stdout is.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from ..errors import HubStateError
from .hubdir import HubDir
from .interp import BOARD_DIR, BOARD_HEAP_RESERVE, ROMFS_WINDOW, VHUB_HEAP_SIZE, micropython_command

EXIT_SOFT_FRIENDLY = 64
EXIT_SOFT_RAW = 65

PWRON_RESET, HARD_RESET, WDT_RESET, SOFT_RESET = 1, 2, 3, 5
RTC_POWER_ON_EPOCH = 946684800  # 2000-01-01T00:00:00Z, where an ESP32 RTC starts


def _probe_timens() -> bool:
    try:
        return subprocess.run(["unshare", "--time", "--monotonic=-1", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_TIMENS_OK: bool | None = None


def compile_board(out: Path) -> Path:
    """Compile the emulation modules to .mpy, as the ESP32 runtime has its modules
    built in: no source compiled on the hub's heap at every start."""
    from ..build import mpy_cross_path

    out.mkdir(parents=True, exist_ok=True)
    (out / "late").mkdir(exist_ok=True)
    mpy_cross = mpy_cross_path()
    # board/late/: network, socket, UART, imported at the end of the start-up.
    for src in sorted(BOARD_DIR.glob("*.py")) + sorted(BOARD_DIR.glob("late/*.py")):
        if src.name == "_imgtool.py":
            continue
        dst = out / src.relative_to(BOARD_DIR).with_suffix(".mpy")
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        subprocess.run([mpy_cross, "-s", src.name, "-o", str(dst), str(src)], check=True,
                       capture_output=True)
    return out


_INTERRUPT_GRACE_S = 1.0  # code that waits sees a Ctrl-C within milliseconds
_libc = None


def _signal_main_thread(pid: int) -> None:
    """SIGINT to the main thread of the interpreter (its thread id is its pid)."""
    global _libc
    try:
        if _libc is None:
            import ctypes
            _libc = ctypes.CDLL(None, use_errno=True)
        tgkill = getattr(_libc, "tgkill", None)  # glibc 2.30+, musl
        if tgkill is None or tgkill(pid, pid, signal.SIGINT) != 0:
            os.kill(pid, signal.SIGINT)
    except OSError:
        pass  # the interpreter is already gone


class _Board:
    """One interpreter instance (one boot) and its connections to the world."""

    def __init__(self, boot_id: int, proc: subprocess.Popen):
        self.boot_id = boot_id
        self.proc = proc
        self.ctl: socket.socket | None = None
        self.irq: socket.socket | None = None
        self.wake: socket.socket | None = None
        self.console = "busy"  # reading (REPL waits) | running (code runs) | busy
        self.resetting = False  # soft reset under way: input waits for the next boot
        self.interrupting = False
        self.interrupts = 0  # Ctrl-Cs delivered to running code (each fallback checks it is still its own)
        self.ready = threading.Event()
        self.send_lock = threading.Lock()


class Supervisor:
    def __init__(self, hub: HubDir, *, allow_damaged: bool = False, echo=None):
        self.hub = hub
        self.allow_damaged = allow_damaged
        self.echo = echo  # callable(bytes) to mirror console output, or None
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.board: _Board | None = None
        self.boot_seq = 0
        self.powered = False
        self.power_cuts = 0
        self.boots = []  # (boot id, reset cause) for every start, newest last
        self.pins: dict[int, int] = {}
        self.pin_modes: dict[int, int] = {}
        self.outputs_log: list[tuple[float, int, int]] = []
        self.wdt_timeout_ms: int | None = None
        self.wdt_deadline: float | None = None
        self.rtc_offset = 0
        self.timers: list = []  # heap of (due, generation, id, period_ms or None)
        self.timer_gen: dict[int, int] = {}
        self.pending_input = bytearray()
        self.out_dropped = 0
        self.heap_baseline: int | None = None
        # World parts beyond the board's core (radio, network, modem) plug in here:
        # name -> object with board_request(board, msg) -> dict and
        # command(msg) -> dict; board requests "<name>_..." and client commands
        # "<name>" are routed to it, and it sends events with send_event().
        self.parts: dict[str, object] = {}
        from .radio import Radio

        self.parts["ble"] = Radio(self)
        from .net import Net

        self.parts["net"] = Net(self)
        self.ticks0 = 0
        self._next_mode = "friendly"
        self._next_cause = PWRON_RESET
        self._cooked_cr = False
        for role in hub.board.pins.values():
            gpio = role.get("gpio")
            if role.get("mode") == "in":
                # An idle input line sits at its pull: pull-up reads 1.
                self.pins[gpio] = 1 if role.get("pull") == "up" else 0
        # Door reed: a closed door keeps the magnet on the switch, pulling low.
        door = hub.board.pins.get("door_reed")
        if door:
            self.pins[door["gpio"]] = 0

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> str:
        """Check the images, open the console and world, power on. Returns the pty path."""
        self._lock_dir()
        try:
            self.hub.check_images(allow_damaged=self.allow_damaged)
        except HubStateError:
            self._unlock_dir()
            raise
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        fl = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.pty_path = os.ttyname(self.slave)
        sock_path = self.hub.world_socket
        if sock_path.exists() or sock_path.is_symlink():
            sock_path.unlink()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(sock_path))
        self.server.listen(16)
        self._log = open(self.hub.console_log, "ab", buffering=0)
        global _TIMENS_OK
        if _TIMENS_OK is None:
            _TIMENS_OK = _probe_timens()
        self.runtime_dir = compile_board(self.hub.path / ".runtime")
        for fn in (self._accept_loop, self._console_in_loop, self._clock_loop):
            threading.Thread(target=fn, daemon=True).start()
        self.power_on()
        self.hub.console_file.write_text(self.pty_path + "\n")
        return self.pty_path

    def _lock_dir(self) -> None:
        self._pidf = open(self.hub.pid_file, "a+")
        try:
            fcntl.flock(self._pidf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._pidf.seek(0)
            pid = self._pidf.read().strip() or "?"
            self._pidf.close()
            raise HubStateError(f"The hub in {self.hub.path} is already running (supervisor pid {pid}).",
                                hint=f"Use its console ({self.hub.console_file.read_text().strip() if self.hub.console_file.exists() else '?'}), "
                                     f"or stop it first: hubctl vhub stop {self.hub.path}") from None
        self._pidf.seek(0)
        self._pidf.truncate()
        self._pidf.write(f"{os.getpid()}\n")
        self._pidf.flush()

    def _unlock_dir(self) -> None:
        try:
            self._pidf.seek(0)
            self._pidf.truncate()
            fcntl.flock(self._pidf, fcntl.LOCK_UN)
            self._pidf.close()
        except (OSError, ValueError):
            pass

    def wait(self) -> None:
        self.stopping.wait()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            self._kill_board()
            for part in self.parts.values():
                getattr(part, "close", lambda: None)()
        for p in (self.hub.console_file, self.hub.world_socket):
            try:
                p.unlink()
            except OSError:
                pass
        self._unlock_dir()

    # -- power and resets -----------------------------------------------------------
    def power_on(self) -> None:
        with self.lock:
            if self.powered:
                return
            self.powered = True
            self.rtc_offset = RTC_POWER_ON_EPOCH - int(time.time())
            self.ticks0 = int(time.monotonic() * 1000)
            self.wdt_timeout_ms = self.wdt_deadline = None
            self._start_board(PWRON_RESET, "friendly")

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL at once, nothing is flushed or cleaned up."""
        with self.lock:
            self.powered = False
            self.power_cuts += 1
            self._kill_board()
            self.timers.clear()
            self.wdt_timeout_ms = self.wdt_deadline = None

    def hard_reset(self, cause: int = HARD_RESET) -> None:
        with self.lock:
            if not self.powered:
                return
            self._kill_board()
            self.wdt_timeout_ms = self.wdt_deadline = None
            self.ticks0 = int(time.monotonic() * 1000)
            self._start_board(cause, "friendly")

    def _kill_board(self) -> None:
        b = self.board
        self.board = None
        if b is None:
            return
        try:
            os.killpg(b.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for s in (b.ctl, b.irq, b.wake):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        b.proc.wait()

    def _start_board(self, cause: int, mode: str) -> None:
        self.boot_seq += 1
        self.timers.clear()
        env = dict(os.environ)
        env.update({
            "HEMHUB_WORLD": str(self.hub.world_socket),
            "HEMHUB_BOOT_ID": str(self.boot_seq),
            "HEMHUB_HUB_DIR": str(self.hub.path.resolve()),
            "HEMHUB_PARTS": self.hub.board.env_table(),
            "HEMHUB_BOARD_DIR": str(self.runtime_dir),
            "HEMHUB_RESET_CAUSE": str(cause),
            "HEMHUB_HEAP_RESERVE": str(BOARD_HEAP_RESERVE),
            "HEMHUB_ROMFS_WINDOW": str(ROMFS_WINDOW),
            "HEMHUB_REPL_MODE": mode,
            "HEMHUB_MAC": self.hub.info["mac"],
            "HEMHUB_RTC_OFFSET": str(self.rtc_offset),
        })
        cmd = self._clock_prefix() + micropython_command(heapsize=VHUB_HEAP_SIZE) + [
            "-c", f"import sys\nsys.path.insert(0, {str(self.runtime_dir)!r})\nimport _board"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, cwd=str(BOARD_DIR),
                                start_new_session=True, bufsize=0)
        b = _Board(self.boot_seq, proc)
        self.board = b
        self.boots.append((b.boot_id, cause))
        for part in self.parts.values():  # parts that live on the board (WiFi, PPP) restart with it
            getattr(part, "board_reset", lambda cause: None)(cause)
        threading.Thread(target=self._console_out_loop, args=(b,), daemon=True).start()
        threading.Thread(target=self._reap, args=(b,), daemon=True).start()

    def _clock_prefix(self) -> list[str]:
        """Start the interpreter in a time namespace whose monotonic clock reads 0
        at the last hardware reset (ticks_ms since reset, as on the chip). Without
        permission for time namespaces, ticks count from the host's boot instead."""
        if _TIMENS_OK is False:
            return []
        origin = int(self.ticks0 // 1000)
        return ["unshare", "--time", f"--monotonic=-{origin}"]

    def _reap(self, b: _Board) -> None:
        code = b.proc.wait()
        with self.lock:
            if self.board is not b or self.stopping.is_set():
                return  # killed on purpose (power cut, reset, stop)
            self.board = None
            if code == EXIT_SOFT_FRIENDLY or code == EXIT_SOFT_RAW:
                # Soft reset: same power cycle, so the RTC, ticks and watchdog carry on.
                self._start_board(SOFT_RESET, "raw" if code == EXIT_SOFT_RAW else "friendly")
                return
            # Anything else is a crash of the runtime: the chip would panic and reset.
            self._console_write(f"\r\nhemhub vhub: runtime exited with code {code}; resetting\r\n".encode())
            if len(self.boots) >= 5 and all(c == HARD_RESET for _, c in self.boots[-5:]):
                time.sleep(1.0)  # crash loop: do not spin the host CPU
            self.wdt_timeout_ms = self.wdt_deadline = None
            self._start_board(HARD_RESET, "friendly")

    # -- console ----------------------------------------------------------------------
    def _console_write(self, data: bytes) -> None:
        self._log.write(data)
        if self.echo:
            self.echo(data)
        view = memoryview(data)
        deadline = time.monotonic() + 0.5
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                # Nobody reads the port: like a UART with no listener, output is
                # lost once the buffer is full, but the hub is never stalled.
                if time.monotonic() > deadline:
                    self.out_dropped += len(view)
                    return
                select.select([], [self.master], [], 0.05)
            except OSError:
                return

    def _cook(self, data: bytes) -> bytes:
        out = bytearray()
        prev_cr = self._cooked_cr
        for c in data:
            if c == 10 and not prev_cr:
                out += b"\r\n"
            else:
                out.append(c)
            prev_cr = c == 13
        self._cooked_cr = prev_cr
        return bytes(out)

    def _console_out_loop(self, b: _Board) -> None:
        fd = b.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            self._console_write(self._cook(data))

    def _console_in_loop(self) -> None:
        while not self.stopping.is_set():
            r, _, _ = select.select([self.master], [], [], 0.2)
            if not r:
                self._flush_pending_input()
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                time.sleep(0.05)
                continue
            with self.lock:
                self.pending_input += data
            self._flush_pending_input()

    def _flush_pending_input(self) -> None:
        """Hand console input to the interpreter once it is up. A Ctrl-C while code
        runs (not while the REPL reads) becomes an interrupt and is consumed;
        input typed during a reboot waits, as in a UART's receive buffer."""
        with self.lock:
            b = self.board
            if b is None or not self.pending_input or not b.ready.is_set() or b.resetting:
                return
            out = bytearray()
            i = 0
            data = self.pending_input
            while i < len(data):
                c = data[i]
                if c == 3 and b.console != "reading":
                    if b.console == "busy":
                        break  # held until code runs (interrupt) or the REPL reads
                    if not b.interrupting:
                        self._interrupt(b)
                    i += 1
                    continue
                out.append(c)
                i += 1
            del data[:i]
        if out:
            try:
                b.proc.stdin.write(bytes(out))
            except (OSError, ValueError):
                pass

    def _interrupt(self, b: _Board) -> None:
        """Deliver a Ctrl-C to running code, as the ESP32's UART interrupt does:
        the KeyboardInterrupt is raised in the main thread at a point where the
        interpreter is consistent. The world writes b"i" on the board's wake
        socket, and the board raises it where it waits (sleep, poll; see
        board/_world.py). Code that does not wait within _INTERRUPT_GRACE_S is
        interrupted by a SIGINT sent to the interpreter's main thread, as
        MicroPython's Unix port expects.

        Never a SIGINT to the whole process: Linux may hand it to the board's
        event reader thread, and the Unix port raises KeyboardInterrupt
        asynchronously in whichever thread the signal lands on (in the reader,
        possibly inside a garbage collection, which leaves the heap locked). The
        reader then dies, and the REPL never answers again."""
        b.interrupting = True
        b.interrupts += 1
        this = b.interrupts
        if b.wake is None:
            _signal_main_thread(b.proc.pid)
            return
        try:
            b.wake.send(b"i")
        except OSError:
            pass

        def fallback() -> None:
            with self.lock:
                if self.board is b and b.interrupts == this and b.interrupting and b.console == "running":
                    _signal_main_thread(b.proc.pid)

        t = threading.Timer(_INTERRUPT_GRACE_S, fallback)
        t.daemon = True
        t.start()

    # -- world: board side ------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            hello = json.loads(f.readline() or b"{}")
        except ValueError:
            conn.close()
            return
        role = hello.get("hello")
        if role == "client":
            self._serve_client(conn, f)
            return
        with self.lock:
            b = self.board
            if b is None or str(b.boot_id) != str(hello.get("boot")):
                conn.close()  # a connection from a boot that is already gone
                return
            setattr(b, role, conn)
        if role == "ctl":
            self._serve_ctl(b, conn, f)
        elif role == "irq":
            try:
                for _ack in f:  # the board acknowledges each scheduled event
                    with self.lock:
                        if b.wake is not None:
                            try:
                                b.wake.send(b"!")
                            except OSError:
                                pass
            except OSError:
                pass  # the interpreter was killed (power cut, reset): its link is gone

    def _serve_ctl(self, b: _Board, conn: socket.socket, f) -> None:
        try:
            for line in f:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                try:
                    reply = self._board_request(b, msg)
                except Exception as e:  # report, keep serving the board
                    reply = {"error": str(e)}
                if not msg.get("noreply"):
                    conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass  # the interpreter was killed (power cut, reset): its link is gone

    def _board_request(self, b: _Board, msg: dict) -> dict:
        req = msg.get("req")
        part = self.parts.get(str(req).split("_", 1)[0])
        if part is not None:
            return part.board_request(b, msg)
        with self.lock:
            if req == "hello":
                return {"pins": {str(k): v for k, v in self.pins.items()}}
            if req == "console":
                b.console = msg["state"]
                b.resetting = bool(msg.get("resetting"))
                if b.console != "running":
                    b.interrupting = False
                threading.Thread(target=self._flush_pending_input, daemon=True).start()
                return {}
            if req == "pin_out":
                self.pins[msg["gpio"]] = msg["level"]
                self.outputs_log.append((time.time(), msg["gpio"], msg["level"]))
                del self.outputs_log[:-1000]
                for part in self.parts.values():  # lines wired to a part (the modem's PWRKEY)
                    getattr(part, "pin_out", lambda gpio, level: None)(msg["gpio"], msg["level"])
                return {}
            if req == "pin_mode":
                self.pin_modes[msg["gpio"]] = msg["mode"]
                return {}
            if req == "wdt_start":
                self.wdt_timeout_ms = int(msg["timeout_ms"])
                self.wdt_deadline = time.monotonic() + self.wdt_timeout_ms / 1000
                return {}
            if req == "wdt_feed":
                if self.wdt_timeout_ms:
                    self.wdt_deadline = time.monotonic() + self.wdt_timeout_ms / 1000
                return {}
            if req == "timer":
                tid = msg["id"]
                gen = self.timer_gen.get(tid, 0) + 1
                self.timer_gen[tid] = gen
                period = msg["period_ms"]
                if period >= 0:
                    heapq.heappush(self.timers, (time.monotonic() + period / 1000, gen, tid,
                                                 period if msg.get("periodic") else None))
                return {}
            if req == "heap_baseline":
                # The board has done what the chip does in C and what only the
                # emulation does (its qstr filler, its ballast): boot.py comes
                # next. Ready from here, not from its hello: console input
                # (a Ctrl-C) that came during that work was held and handed to
                # boot.py, which dropped it (decision 0005, session-11 addendum).
                self.heap_baseline = int(msg["bytes"])
                b.ready.set()
                return {}
            if req == "rtc_set":
                self.rtc_offset = int(msg["offset"])
                return {}
            if req == "reset":
                threading.Thread(target=self.hard_reset, daemon=True).start()
                return {}
        raise ValueError(f"unknown request {req!r}")

    def send_event(self, b: _Board, ev: dict) -> bool:
        with b.send_lock:
            if b.irq is None:
                return False
            try:
                b.irq.sendall(json.dumps(ev).encode() + b"\n")
                return True
            except OSError:
                return False

    def _clock_loop(self) -> None:
        while not self.stopping.is_set():
            time.sleep(0.005)
            now = time.monotonic()
            fire = []
            with self.lock:
                b = self.board
                if self.wdt_deadline is not None and now > self.wdt_deadline and b is not None:
                    self._console_write(b"\r\nhemhub vhub: watchdog reset\r\n")
                    self.hard_reset(WDT_RESET)
                    continue
                while self.timers and self.timers[0][0] <= now:
                    due, gen, tid, period = heapq.heappop(self.timers)
                    if self.timer_gen.get(tid) != gen:
                        continue
                    fire.append(tid)
                    if period:
                        heapq.heappush(self.timers, (due + period / 1000, gen, tid, period))
            if b is not None:
                for tid in fire:
                    self.send_event(b, {"ev": "timer", "id": tid})

    # -- world: scripting side --------------------------------------------------------
    def _serve_client(self, conn: socket.socket, f) -> None:
        for line in f:
            try:
                msg = json.loads(line)
                reply = self.command(msg)
            except Exception as e:  # a bad command is the caller's problem; keep serving
                reply = {"ok": False, "error": str(e)}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                return
            if msg.get("cmd") == "stop":
                threading.Thread(target=self._stop_soon, daemon=True).start()
                return

    def _stop_soon(self) -> None:
        time.sleep(0.05)
        self.stop()

    def current_board(self) -> _Board | None:
        with self.lock:
            return self.board

    def command(self, msg: dict) -> dict:
        cmd = msg.get("cmd")
        if cmd in self.parts:
            return self.parts[cmd].command(msg)
        if cmd == "pin":
            gpio, level = int(msg["gpio"]), 1 if int(msg["level"]) else 0
            with self.lock:
                self.pins[gpio] = level
                b = self.board
            if b is not None:
                self.send_event(b, {"ev": "pin", "gpio": gpio, "level": level})
            return {"ok": True}
        if cmd == "power":
            state = msg.get("state")
            if state == "cut":
                self.power_cut()
                if msg.get("off_ms") is not None:
                    time.sleep(int(msg["off_ms"]) / 1000)
                    self.power_on()
            elif state == "off":
                self.power_cut()
            elif state == "on":
                self.power_on()
            else:
                raise ValueError("power takes on, off or cut")
            return {"ok": True}
        if cmd == "reset":
            self.hard_reset()
            return {"ok": True}
        if cmd == "clock":
            with self.lock:
                if msg.get("set") is not None:
                    self.rtc_offset = int(msg["set"]) - int(time.time())
                return {"ok": True, "rtc": int(time.time()) + self.rtc_offset}
        if cmd == "state":
            with self.lock:
                b = self.board
                return {
                    "ok": True,
                    "console": self.pty_path,
                    "powered": self.powered,
                    "running": b is not None and b.proc.poll() is None,
                    "ready": b is not None and b.ready.is_set(),
                    "boot_id": b.boot_id if b else None,
                    "boots": self.boots[-20:],
                    "boot_count": len(self.boots),
                    "power_cuts": self.power_cuts,
                    "pins": {str(k): v for k, v in self.pins.items()},
                    "wdt_timeout_ms": self.wdt_timeout_ms,
                    "rtc": int(time.time()) + self.rtc_offset,
                    "console_dropped": self.out_dropped,
                    "emulation_heap": self.heap_baseline,
                    "console_state": b.console if b else None,
                    "console_pending": len(self.pending_input),
                    "supervisor_pid": os.getpid(),
                }
        if cmd == "stop":
            return {"ok": True}
        raise ValueError(f"unknown world command {cmd!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for a detached supervisor: python -m hubctl.vhub.supervisor DIR [--allow-damaged]."""
    argv = sys.argv[1:] if argv is None else argv
    hub = HubDir.open(argv[0])
    sup = Supervisor(hub, allow_damaged="--allow-damaged" in argv)
    signal.signal(signal.SIGTERM, lambda *a: sup.stopping.set())
    try:
        path = sup.start()
    except HubStateError as e:
        print(f"hubctl: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"console: {path}", flush=True)
    try:
        sup.wait()
    except KeyboardInterrupt:
        pass
    sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
