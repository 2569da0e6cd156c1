"""The cellular modem's AT driver (LTE Cat-1/Cat-M module on UART2).

Command/response with timeouts over a UART polled from asyncio; unsolicited
result codes (+CEREG/+CREG, +CPIN, RDY, NO CARRIER, NORMAL POWER DOWN) are
taken wherever they arrive. Bring-up: power (PWRKEY on hemhub.board.MODEM_POWER),
SIM and PIN, registration, signal quality, APN (PDP context 1), then dial
*99# into data mode for network.PPP. Lines are parsed by hemhub.codec.at.

`state` says where it stopped, for the link manager and health telemetry:
off, no_answer, no_sim, pin_required, pin_wrong, sim_puk, searching,
not_registered, denied, no_carrier, registered, data.
"""
import asyncio
import time

from hemhub.codec import CodecError, at
from hemhub.link import ModemError

_POLL_MS = 10
_URC = ("+CEREG", "+CREG", "+CPIN")


class Modem:
    def __init__(self, uart, pwrkey=None, pin=None, apn="", cmd_ms=1000, boot_ms=10000,
                 reg_ms=60000, pwrkey_ms=600, dial_ms=10000, guard_ms=1000):
        self.uart = uart
        self.pwrkey = pwrkey
        self.pin = pin
        self.apn = apn or ""
        self.cmd_ms = cmd_ms
        self.boot_ms = boot_ms
        self.reg_ms = reg_ms
        self.pwrkey_ms = pwrkey_ms
        self.dial_ms = dial_ms
        self.guard_ms = guard_ms  # V.250 6.3 escape guard time around "+++"
        self.state = "off"
        self.reg = 0  # 27.007 <stat>, hemhub.codec.at.REG names it
        self.csq = None  # raw +CSQ rssi (0..31, 99)
        self.rssi_dbm = None
        self.sim = None
        self.pin_rejected = False  # never offer a rejected PIN again: the SIM would lock (PUK)
        self.power_pulses = 0
        self.carrier_lost = False
        self.garbage = 0
        self._buf = bytearray()
        self._booted = False

    # -- lines ------------------------------------------------------------------------
    def _fill(self):
        n = self.uart.any()
        if n:
            d = self.uart.read(n)
            if d:
                self._buf.extend(d)
                if len(self._buf) > 1024:  # a runaway line: keep the tail only
                    self.garbage += len(self._buf) - 512
                    self._buf = self._buf[-512:]
        return n

    def _take_line(self):
        i = self._buf.find(b"\n")
        if i < 0:
            return None
        line = bytes(self._buf[:i])
        self._buf = self._buf[i + 1:]
        return line

    async def _readline(self, deadline):
        while True:
            line = self._take_line()
            if line is not None:
                return line
            if not self._fill():
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    return None
                await asyncio.sleep_ms(_POLL_MS)

    def _parse(self, line):
        try:
            return at.parse_line(line)
        except CodecError:
            self.garbage += 1
            return ("empty", None, None)

    def _urc(self, kind, a, b):
        """An unsolicited result code; True when it was one."""
        if kind == "info" and a in _URC:
            try:
                if a == "+CPIN":
                    self.sim = at.cpin(b)
                else:
                    self.reg = at.reg(b)
            except CodecError:
                self.garbage += 1
            return True
        if kind == "text":
            if a == "RDY":
                self._booted = True
                return True
            if a == "NORMAL POWER DOWN":
                self.state = "off"
                return True
        if kind == "final" and a == "no_carrier":
            if self.state == "data":
                self.carrier_lost = True
                self.state = "no_carrier"
            return True
        return False

    def poll(self):
        """Take whatever the modem said on its own (URCs) without waiting."""
        self._fill()
        while True:
            line = self._take_line()
            if line is None:
                return
            kind, a, b = self._parse(line)
            if kind != "empty":
                self._urc(kind, a, b)

    async def cmd(self, command, timeout_ms=None):
        """Send one command; return its information lines as (prefix, fields) or
        ("", text), or ("connect", rate) for a dial. Raises ModemError("error"),
        ModemError("cme", code), ModemError("no_carrier") or ModemError("timeout")."""
        self.poll()
        self.uart.write(command.encode() + b"\r")
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms or self.cmd_ms)
        mine = command[2:].split("=")[0].rstrip("?") if command.startswith("AT+") else None
        info = []
        while True:
            line = await self._readline(deadline)
            if line is None:
                raise ModemError("timeout", command)
            kind, a, b = self._parse(line)
            if kind == "empty" or (kind == "text" and a == command):
                continue  # blank, or the echo (before ATE0)
            if kind == "final":
                if a == "ok":
                    return info
                raise ModemError(a, b)
            if kind == "connect":
                return [("connect", a)]
            if kind == "info" and a == mine:
                info.append((a, b))
            elif not self._urc(kind, a, b):
                info.append((a if kind == "info" else "", b if kind == "info" else a))

    # -- power ------------------------------------------------------------------------
    async def _pulse(self):
        if self.pwrkey is None:
            return
        self.power_pulses += 1
        self.pwrkey.value(1)
        await asyncio.sleep_ms(self.pwrkey_ms)
        self.pwrkey.value(0)

    async def _escape(self):
        await asyncio.sleep_ms(self.guard_ms)
        self.uart.write(b"+++")
        await asyncio.sleep_ms(self.guard_ms)

    async def probe(self, tries=2):
        for _ in range(tries):
            try:
                await self.cmd("AT", min(self.cmd_ms, 500))
                return True
            except ModemError:
                pass
        return False

    async def _wait_ready(self):
        """After a PWRKEY pulse: True once it answers; False when it went off or stayed silent."""
        self._booted = False
        deadline = time.ticks_add(time.ticks_ms(), self.boot_ms)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            self.poll()
            if self.state == "off" and not self._booted:
                return False  # NORMAL POWER DOWN: that pulse switched it off
            if self._booted or time.ticks_diff(deadline, time.ticks_ms()) < self.boot_ms // 2:
                if await self.probe(1):
                    return True
            await asyncio.sleep_ms(50)
        return False

    async def power_on(self):
        """Make sure the modem answers: AT, then the +++ escape (it may still be in
        data mode from before a hub reset), then up to three PWRKEY pulses: the
        first switches on a modem that is off, or off one that hangs; the next
        switch it on again."""
        self.state = "starting"
        if await self.probe():
            return True
        await self._escape()
        if await self.probe(1):
            try:
                await self.cmd("ATH")
            except ModemError:
                pass
            return True
        for _ in range(3):
            self.state = "starting"
            await self._pulse()
            if await self._wait_ready():
                return True
            await asyncio.sleep_ms(100)
        self.state = "no_answer"
        return False

    async def power_cycle(self):
        """Switch the modem off and on with PWRKEY (recovery from a hung module)."""
        await self._pulse()
        await asyncio.sleep_ms(200)
        self.state = "off"
        return await self.power_on()

    # -- bring-up ---------------------------------------------------------------------
    async def _sim(self):
        try:
            lines = await self.cmd("AT+CPIN?")
        except ModemError as e:
            if e.args[0] == "cme" and e.args[1] == 10:
                raise ModemError("no_sim") from None
            raise
        for p, f in lines:
            if p == "+CPIN":
                self.sim = at.cpin(f)
        if self.sim == "SIM PIN":
            if not self.pin:
                raise ModemError("pin_required")
            if self.pin_rejected:
                raise ModemError("pin_wrong")
            try:
                await self.cmd('AT+CPIN="%s"' % self.pin, 5000)
            except ModemError as e:
                if e.args[0] == "cme" and e.args[1] == 16:
                    self.pin_rejected = True
                    raise ModemError("pin_wrong") from None
                raise
            self.sim = "READY"
        elif self.sim == "SIM PUK":
            raise ModemError("sim_puk")
        elif self.sim != "READY":
            raise ModemError("no_sim", self.sim)

    async def _register(self):
        for c in ("AT+CEREG=1", "AT+CREG=1"):  # URCs on every change
            try:
                await self.cmd(c)
            except ModemError:
                pass
        deadline = time.ticks_add(time.ticks_ms(), self.reg_ms)
        while True:
            for c in ("AT+CEREG?", "AT+CREG?"):
                self.poll()  # a URC may have said so already (LTE on CEREG, 2G/3G on CREG)
                if self.reg in (1, 5):
                    return
                try:
                    for p, f in await self.cmd(c):
                        if p in ("+CEREG", "+CREG"):
                            self.reg = at.reg(f)
                except (ModemError, CodecError):
                    continue
                if self.reg in (1, 5):
                    return
            if self.reg == 3:
                raise ModemError("denied")
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise ModemError("searching" if self.reg == 2 else "not_registered")
            await asyncio.sleep_ms(min(1000, max(50, self.reg_ms // 10)))

    async def signal(self):
        """+CSQ now: (raw, dBm or None). Not while in data mode (the UART carries PPP)."""
        for p, f in await self.cmd("AT+CSQ"):
            if p == "+CSQ":
                self.rssi_dbm = at.csq(f)[0]
                self.csq = f[0]
        return self.csq, self.rssi_dbm

    async def start(self):
        """From whatever state to data mode (CONNECT); raises ModemError(state)."""
        self.carrier_lost = False
        if not await self.power_on():
            raise ModemError("no_answer")
        try:
            await self.cmd("ATE0")
            await self.cmd("AT+CMEE=1")
            await self._sim()
            self.state = "searching"
            await self._register()
            self.state = "registered"
            try:
                await self.signal()
            except (ModemError, CodecError):
                pass
            await self.cmd('AT+CGDCONT=1,"IP","%s"' % self.apn)
            r = await self.cmd("ATD*99#", self.dial_ms)
            if not r or r[0][0] != "connect":
                raise ModemError("no_carrier")
            self.state = "data"
        except ModemError as e:
            st = e.state
            if st == "timeout":
                st = "no_answer"
            self.state = st
            raise ModemError(st, e.args[1] if len(e.args) > 1 else "") from None

    async def hangup(self):
        """Leave data mode (after PPP went down) and end the call."""
        self.poll()
        if not await self.probe(1):
            await self._escape()
        try:
            await self.cmd("ATH")
        except ModemError:
            pass
        if self.state == "data" or self.state == "no_carrier":
            self.state = "registered"
