"""The virtual hub's cellular modem: an LTE Cat-1/Cat-M module on the hub's UART2.

It answers the 3GPP TS 27.007 / V.250 command set a hub needs, the way common
modules (SIMCom SIM7600, Quectel EG91/BG96) do, including their failures:

  AT, ATE0/ATE1, ATI, AT+CMEE=0|1|2, AT+CPIN? / AT+CPIN="1234", AT+CSQ,
  AT+CREG? / AT+CEREG? (and =0|1|2 for unsolicited +CREG:/+CEREG:),
  AT+COPS?, AT+CGATT?, AT+CGDCONT=1,"IP","apn" / AT+CGDCONT?, AT+CFUN=...,
  ATD*99# / ATD*99***1# -> CONNECT (data mode) or NO CARRIER, +++ (escape),
  ATO, ATH.

Power comes through PWRKEY (hub GPIO 27, active high through a transistor):
holding the line high for at least ``pwrkey_ms`` and releasing it toggles the
module on or off. A module that was switched on prints ``RDY`` (and
``+CPIN: ...`` once its SIM is read) after ``boot_ms``. The fault ``dead``
makes it swallow everything until it is switched off and on again.

Data mode carries PPP; the bytes themselves are not emulated: the hub's
``network.PPP`` object asks the world (net.py) whether the modem is online.
"""

from __future__ import annotations

import threading
import time

# 27.007 section 7.2 / 10.1.22: <stat> of +CREG / +CEREG
REG_STAT = {"none": 0, "registered": 1, "searching": 2, "denied": 3, "unknown": 4, "roaming": 5}
# 27.007 section 9.2.1: +CME ERROR codes used here
CME_TEXT = {3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted",
            11: "SIM PIN required", 12: "SIM PUK required", 13: "SIM failure", 16: "incorrect password",
            30: "no network service", 100: "unknown"}
SIM_STATES = ("ready", "pin", "puk", "absent")


class ModemSim:
    """One modem. ``send(bytes)`` delivers bytes to the hub's UART RX; ``on_carrier(bool)``
    tells the network when the data call starts or ends."""

    def __init__(self, send, on_carrier, lock=None):
        self._send = send
        self._on_carrier = on_carrier
        self.lock = lock or threading.RLock()  # the network's lock: one order, no deadlock
        # What the world sets (hubctl vhub world DIR net modem k=v)
        self.sim = "ready"
        self.pin = "1234"
        self.reg = "registered"
        self.csq = 20
        self.apn: str | None = None  # the network's APN; None accepts any
        self.fault: str | None = None  # dead | no_carrier
        self.pwrkey_ms = 500
        self.boot_ms = 300
        self.reg_ms = 200
        self.baud = 115200
        # The module's own state
        self.powered = False
        self.gen = 0  # power cycles; stale timers check it
        self.ready_at = 0.0
        self.key_down: float | None = None
        self.counters = {"power_on": 0, "power_off": 0, "commands": 0, "dials": 0, "ignored_bytes": 0,
                         "sim_queries": 0}
        self._reset_state()

    def _reset_state(self) -> None:
        self.echo = True
        self.cmee = 0
        self.creg_n = 0
        self.cereg_n = 0
        self.cfun = 1
        self.pdp: dict[int, tuple[str, str]] = {}
        self.pin_entered = False
        self.pin_tries = 3
        self.sim_ready_at: float | None = None
        self.data_mode = False
        self.online = False
        self.line = bytearray()
        self.last_reg = 0
        self.esc_count = 0
        self.last_rx = 0.0

    # -- power --------------------------------------------------------------------
    def pwrkey(self, level: int) -> None:
        now = time.monotonic()
        with self.lock:
            if level:
                if self.key_down is None:
                    self.key_down = now
                return
            if self.key_down is None:
                return
            held = (now - self.key_down) * 1000
            self.key_down = None
            if held >= self.pwrkey_ms:
                self.power(not self.powered)

    def power(self, on: bool) -> None:
        with self.lock:
            if on == self.powered:
                return
            self.gen += 1
            if not on:
                if self.fault != "dead":
                    self._emit(b"\r\nNORMAL POWER DOWN\r\n")
                self._drop_call(announce=False)
                self.powered = False
                self.counters["power_off"] += 1
                if self.fault == "dead":
                    self.fault = None  # a hung module comes back from a power cycle
                return
            self.powered = True
            self.counters["power_on"] += 1
            self._reset_state()
            self.ready_at = time.monotonic() + self.boot_ms / 1000
            self._later(self.boot_ms, self._booted)

    def _later(self, ms: float, fn, *args) -> None:
        gen = self.gen

        def run():
            with self.lock:
                if self.gen == gen and self.powered:
                    fn(*args)
        t = threading.Timer(ms / 1000, run)
        t.daemon = True
        t.start()

    def _booted(self) -> None:
        self._emit(b"\r\nRDY\r\n")
        if self.sim != "absent":
            self._sim_read()
            self._emit(b"\r\n+CPIN: %s\r\n" % self._cpin_text().encode())

    def _sim_read(self) -> None:
        if self.sim == "ready" and self.sim_ready_at is None:
            self.sim_ready_at = time.monotonic()
            self._later(self.reg_ms + 1, self._check_reg)

    def alive(self) -> bool:
        return self.powered and self.fault != "dead" and time.monotonic() >= self.ready_at

    # -- state the world changes ---------------------------------------------------
    def configure(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                if k == "sim":
                    if v not in SIM_STATES:
                        raise ValueError(f"sim takes {', '.join(SIM_STATES)}, not {v!r}")
                    self.sim = v
                    self.pin_entered = False
                    self.sim_ready_at = None
                    if v == "ready" and self.alive():
                        self._sim_read()
                elif k == "reg":
                    if v not in REG_STAT:
                        raise ValueError(f"reg takes {', '.join(REG_STAT)}, not {v!r}")
                    self.reg = v
                elif k == "fault":
                    if v not in (None, "none", "dead", "no_carrier"):
                        raise ValueError(f"fault takes none, dead or no_carrier, not {v!r}")
                    self.fault = None if v in (None, "none") else v
                elif k in ("csq", "pwrkey_ms", "boot_ms", "reg_ms", "baud"):
                    setattr(self, k, int(v))
                elif k in ("pin", "apn"):
                    setattr(self, k, None if v is None else str(v))
                elif k == "power":
                    self.power(bool(v))
                else:
                    raise ValueError(f"unknown modem setting {k!r}: sim, pin, reg, csq, apn, fault, "
                                     "pwrkey_ms, boot_ms, reg_ms, power")
            self._check_reg()

    def drop_carrier(self) -> bool:
        """The network ends the data call (coverage lost, PDP deactivated)."""
        with self.lock:
            return self._drop_call(announce=True)

    def _drop_call(self, announce: bool) -> bool:
        was = self.online
        self.online = False
        self.data_mode = False
        if was:
            if announce:
                self._emit(b"\r\nNO CARRIER\r\n")
            self._on_carrier(False)
        return was

    # -- registration --------------------------------------------------------------
    def sim_state(self) -> str:
        if self.sim == "pin" and self.pin_entered:
            return "ready"
        return self.sim

    def reg_stat(self) -> int:
        if not self.powered or self.cfun != 1 or self.sim_state() != "ready":
            return 0
        if self.sim_ready_at is None:
            return 2
        if time.monotonic() < self.sim_ready_at + self.reg_ms / 1000:
            return 2
        return REG_STAT[self.reg]

    def _check_reg(self) -> None:
        if not self.alive():
            return
        stat = self.reg_stat()
        if stat == self.last_reg:
            return
        self.last_reg = stat
        for name, n in (("+CREG", self.creg_n), ("+CEREG", self.cereg_n)):
            if n == 1:
                self._emit(b"\r\n%s: %d\r\n" % (name.encode(), stat))
            elif n >= 2:
                self._emit(b'\r\n%s: %d,"1A2B","01C3D4E5",7\r\n' % (name.encode(), stat))
        if stat not in (1, 5) and self.online:
            self._drop_call(announce=True)

    # -- the UART --------------------------------------------------------------------
    def rx(self, data: bytes, baud: int | None = None) -> None:
        """Bytes the hub sent on its TX line."""
        with self.lock:
            if not self.alive() or (baud and baud != self.baud):
                self.counters["ignored_bytes"] += len(data)
                return
            now = time.monotonic()
            if self.data_mode:
                self._data_bytes(data, now)
                return
            for c in data:
                if c == 13:
                    line = bytes(self.line)
                    self.line = bytearray()
                    if self.echo:
                        self._emit(line + b"\r")
                    self._command(line.strip())
                elif c == 10:
                    continue
                elif c == 8:
                    del self.line[-1:]
                elif len(self.line) < 560:
                    self.line.append(c)

    def _data_bytes(self, data: bytes, now: float) -> None:
        # V.250 6.3 escape: "+++" with a guard time of silence around it (here 200 ms).
        if data == b"+++" and now - self.last_rx >= 0.2:
            gen = self.gen

            def escape():
                with self.lock:
                    if self.gen == gen and self.data_mode and time.monotonic() - self.last_rx >= 0.2:
                        self.data_mode = False
                        self._emit(b"\r\nOK\r\n")
            t = threading.Timer(0.25, escape)
            t.daemon = True
            t.start()
        self.last_rx = now

    def _emit(self, data: bytes) -> None:
        if self.powered and self.fault != "dead":
            self._send(data)

    def _ok(self, *info: bytes) -> None:
        for i in info:
            self._emit(b"\r\n" + i + b"\r\n")
        self._emit(b"\r\nOK\r\n")

    def _error(self, code: int | None = None) -> None:
        if code is None or self.cmee == 0:
            self._emit(b"\r\nERROR\r\n")
        elif self.cmee == 1:
            self._emit(b"\r\n+CME ERROR: %d\r\n" % code)
        else:
            self._emit(b"\r\n+CME ERROR: %s\r\n" % CME_TEXT.get(code, "unknown").encode())

    def _cpin_text(self) -> str:
        return {"ready": "READY", "pin": "SIM PIN", "puk": "SIM PUK"}.get(self.sim_state(), "")

    def _sim_error(self) -> int | None:
        """The +CME ERROR a SIM-dependent command gets, or None when the SIM is usable."""
        st = self.sim_state()
        return {"absent": 10, "pin": 11, "puk": 12}.get(st)

    def _command(self, line: bytes) -> None:
        if not line:
            return
        self.counters["commands"] += 1
        up = line.upper()
        if not up.startswith(b"AT"):
            self._error()
            return
        cmd = up[2:]
        raw = line[2:]
        if cmd == b"":
            self._ok()
        elif cmd in (b"E0", b"E1", b"E"):
            self.echo = cmd == b"E1"
            self._ok()
        elif cmd == b"I":
            self._ok(b"hemhub-sim", b"LTE-CAT1-SIM", b"Revision: vhub-1.0")
        elif cmd.startswith(b"+CMEE="):
            self._set_int(cmd[6:], (0, 1, 2), "cmee")
        elif cmd == b"+CPIN?":
            self.counters["sim_queries"] += 1
            err = 10 if self.sim_state() == "absent" else None
            if err:
                self._error(err)
            else:
                self._ok(b"+CPIN: " + self._cpin_text().encode())
        elif cmd.startswith(b"+CPIN="):
            self._enter_pin(raw[6:].strip().strip(b'"').decode(errors="replace"))
        elif cmd == b"+CSQ":
            self._ok(b"+CSQ: %d,99" % self.csq)
        elif cmd in (b"+CREG?", b"+CEREG?"):
            name = cmd[:-1]
            n = self.creg_n if name == b"+CREG" else self.cereg_n
            stat = self.reg_stat()
            if n >= 2 and stat in (1, 5):
                self._ok(b'%s: %d,%d,"1A2B","01C3D4E5",7' % (name, n, stat))
            else:
                self._ok(b"%s: %d,%d" % (name, n, stat))
        elif cmd.startswith(b"+CREG="):
            self._set_int(cmd[6:], (0, 1, 2), "creg_n")
        elif cmd.startswith(b"+CEREG="):
            self._set_int(cmd[7:], (0, 1, 2), "cereg_n")
        elif cmd == b"+COPS?":
            if self.reg_stat() in (1, 5):
                self._ok(b'+COPS: 0,0,"hemhub-sim",7')
            else:
                self._ok(b"+COPS: 0")
        elif cmd == b"+CGATT?":
            self._ok(b"+CGATT: %d" % (1 if self.reg_stat() in (1, 5) else 0))
        elif cmd.startswith(b"+CGDCONT="):
            self._cgdcont(raw[9:])
        elif cmd == b"+CGDCONT?":
            self._ok(*[b'+CGDCONT: %d,"%s","%s"' % (cid, t.encode(), a.encode())
                       for cid, (t, a) in sorted(self.pdp.items())])
        elif cmd.startswith(b"+CFUN="):
            self._cfun(cmd[6:])
        elif cmd == b"+CFUN?":
            self._ok(b"+CFUN: %d" % self.cfun)
        elif cmd.startswith(b"D*99"):
            self._dial(cmd)
        elif cmd in (b"H", b"H0"):
            self._drop_call(announce=False)
            self._ok()
        elif cmd in (b"O", b"O0"):
            if self.online:
                self.data_mode = True
                self._emit(b"\r\nCONNECT 150000000\r\n")
            else:
                self._emit(b"\r\nNO CARRIER\r\n")
        elif cmd in (b"&F", b"Z", b"&W", b"V1"):
            self._ok()
        else:
            self._error(4 if cmd.startswith(b"+") else None)

    def _set_int(self, arg: bytes, allowed, attr: str) -> None:
        try:
            v = int(arg)
        except ValueError:
            v = -1
        if v not in allowed:
            self._error(4)
            return
        setattr(self, attr, v)
        self._ok()

    def _enter_pin(self, pin: str) -> None:
        st = self.sim_state()
        if st == "absent":
            self._error(10)
        elif st != "pin":
            self._error(3)  # no PIN wanted (27.007 9.2.1: operation not allowed)
        elif pin == self.pin:
            self.pin_entered = True
            self.pin_tries = 3
            self._ok()
            self._emit(b"\r\n+CPIN: READY\r\n")
            self.sim_ready_at = time.monotonic()
            self._later(self.reg_ms + 1, self._check_reg)
        else:
            self.pin_tries -= 1
            if self.pin_tries <= 0:
                self.sim = "puk"
            self._error(16)

    def _cgdcont(self, args: bytes) -> None:
        parts = [p.strip().strip(b'"').decode(errors="replace") for p in args.split(b",")]
        try:
            cid = int(parts[0])
        except (ValueError, IndexError):
            self._error(4)
            return
        if len(parts) == 1:
            self.pdp.pop(cid, None)
        elif len(parts) >= 3 and parts[1].upper() in ("IP", "IPV6", "IPV4V6"):
            self.pdp[cid] = (parts[1].upper(), parts[2])
        else:
            self._error(4)
            return
        self._ok()

    def _cfun(self, arg: bytes) -> None:
        if arg in (b"1,1", b"1,1\r"):
            self._ok()
            # full functionality with reset: the module restarts
            self.gen += 1
            self._drop_call(announce=False)
            self._reset_state()
            self.ready_at = time.monotonic() + self.boot_ms / 1000
            self._later(self.boot_ms, self._booted)
            return
        try:
            v = int(arg)
        except ValueError:
            v = -1
        if v not in (0, 1, 4):
            self._error(4)
            return
        self.cfun = v
        if v != 1:
            self._drop_call(announce=True)
        self._ok()
        self._check_reg()

    def _dial(self, cmd: bytes) -> None:
        self.counters["dials"] += 1
        # ATD*99# uses cid 1; ATD*99***<cid># names it (27.007 10.2.1.1)
        cid = 1
        if cmd.startswith(b"D*99***"):
            try:
                cid = int(cmd[7:].rstrip(b"#"))
            except ValueError:
                self._error(4)
                return
        err = self._sim_error()
        if err:
            self._error(err)
            return
        ctx = self.pdp.get(cid)
        if (self.reg_stat() not in (1, 5) or ctx is None or self.fault == "no_carrier"
                or (self.apn is not None and ctx[1] != self.apn)):
            # PDP activation refused or no network: V.250 result code NO CARRIER
            self._emit(b"\r\nNO CARRIER\r\n")
            return
        self.online = True
        self.data_mode = True
        self.last_rx = time.monotonic()
        self._emit(b"\r\nCONNECT 150000000\r\n")
        self._on_carrier(True)

    def summary(self) -> dict:
        with self.lock:
            return {"powered": self.powered, "alive": self.alive(), "sim": self.sim, "sim_state": self.sim_state(),
                    "reg": self.reg, "reg_stat": self.reg_stat(), "csq": self.csq, "apn": self.apn,
                    "fault": self.fault, "echo": self.echo, "pdp": {str(k): v for k, v in self.pdp.items()},
                    "data_mode": self.data_mode, "online": self.online, "pin_tries": self.pin_tries,
                    "pwrkey_ms": self.pwrkey_ms, "boot_ms": self.boot_ms, "reg_ms": self.reg_ms,
                    "counters": dict(self.counters)}
