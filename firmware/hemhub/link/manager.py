"""The link manager: one task that keeps the hub on a network.

WiFi is preferred; 4G (modem + PPP) is the fallback. lwIP sends through the
default interface: the WiFi station while it has an address, else PPP. So:

- WiFi associated and healthy -> link "wifi"; a PPP call still up is hung up
  (failback).
- WiFi lost (the driver keeps re-associating on its own) or unhealthy (the
  probe fails `fail_checks` times, or the uplink reports failures) -> 4G is
  brought up; an unhealthy WiFi is disconnected and retried after a backoff.
- Each link retries with exponential backoff and jitter (`backoff_ms` doubling
  up to `backoff_max_ms`, a random half of it added or not: "equal jitter").

Health: `probe` = "host:port" is opened through the current link every
`probe_ms`; a connection that is refused or reset counts as a failure.
Uplinks call note_failure() / note_ok() for what they see themselves.

Config (/data/config.json): wifi {ssid, psk}, apn, sim_pin, and optional
timings in "link" (see DEFAULTS). docs/link.md has the whole story.
"""
import asyncio
import time

from hemhub.link import ModemError

DEFAULTS = {
    "check_ms": 1000,
    "wifi_connect_ms": 15000,
    "backoff_ms": 2000,
    "backoff_max_ms": 300000,
    "probe": None,
    "probe_ms": 30000,
    "fail_checks": 2,
    "ppp_ms": 30000,
    "modem_cmd_ms": 1000,
    "modem_boot_ms": 10000,
    "modem_reg_ms": 60000,
    "modem_pwrkey_ms": 600,
    "modem_guard_ms": 1000,
}

_STAT_GOT_IP = 1010
_STAT_WRONG_PASSWORD = 202
_STAT_NO_AP_FOUND = 201
_WIFI_ERR = {202: "wrong password", 201: "network not found", 200: "lost", 203: "association failed",
             204: "handshake timeout"}


def backoff_ms(n, base, cap, rnd):
    """The wait before retry n (0, 1, ...): min(cap, base * 2**n), of which the
    upper half is random ("equal jitter"); rnd(k) gives 0 <= r < k."""
    d = min(cap, base << min(n, 20))
    h = d // 2
    return h + (rnd(h) if h > 0 else 0)


def _rnd(k):
    import random

    return random.getrandbits(30) % k


class _Backoff:
    def __init__(self, t):
        self.t = t
        self.n = 0
        self.due = time.ticks_ms()

    def fail(self):
        self.due = time.ticks_add(time.ticks_ms(), backoff_ms(self.n, self.t["backoff_ms"], self.t["backoff_max_ms"], _rnd))
        self.n += 1

    def ok(self):
        self.n = 0
        self.due = time.ticks_ms()

    def ready(self):
        return time.ticks_diff(time.ticks_ms(), self.due) >= 0


class LinkManager:
    def __init__(self, cfg, wlan=None, modem=None, ppp=None, cell=None):
        w = cfg.get("wifi") or {}
        self.ssid = w.get("ssid")
        self.psk = w.get("psk") or ""
        self.apn = cfg.get("apn")
        t = dict(DEFAULTS)
        t.update(cfg.get("link") or {})
        self.t = t
        self.wlan = wlan
        self.modem = modem
        self.ppp = ppp
        # cell() -> (modem, ppp), called when 4G is needed: until then, and again
        # after each failback, the AT driver and codec take no heap (docs/link.md).
        self._cell = cell
        self._idle = "off"  # what the modem does while its driver is not loaded
        # Outlives the driver: a PIN the SIM rejected is never offered again
        # (three would lock the SIM), by this driver or the next one loaded.
        self._pin_rejected = False
        # () -> bool: True while a GATT link holds the heap the modem driver
        # would load into (app.py wires it); a 4G try waits its turn.
        self.heap_busy = None
        self.dialling = False  # from loading the driver to the end of a try
        self.link = "none"
        self.quality = None
        self.wifi = "off" if self.ssid else "not configured"
        self.cellular = "off" if self.apn else "not configured"
        self.changes = 0
        self.failovers = 0
        self.since = time.ticks_ms()
        self._up = asyncio.Event()
        self._wb = _Backoff(t)
        self._cb = _Backoff(t)
        self._wifi_req = None  # ticks when connect() was asked, None when not trying
        self._wifi_had_ip = False
        self._bad = 0  # consecutive health failures of the current link
        self._probed = None
        self._last = None  # the last link that was up

    # -- what others read ------------------------------------------------------------
    def state(self):
        return {"link": self.link, "quality": self.quality, "wifi": self.wifi, "cellular": self.cellular,
                "modem": self.modem.state if self.modem else (self._idle if self._cell else None),
                "since_s": time.ticks_diff(time.ticks_ms(), self.since) // 1000,
                "changes": self.changes, "failovers": self.failovers}

    async def wait_up(self, timeout_ms=None):
        """Wait until some link is up; returns its type ("wifi" or "cellular").
        Raises asyncio.TimeoutError after timeout_ms."""
        if timeout_ms is None:
            await self._up.wait()
        else:
            await asyncio.wait_for_ms(self._up.wait(), timeout_ms)
        return self.link

    def note_failure(self):
        """The uplink could not use the link (connect refused, reset, timeout)."""
        self._bad += 1

    def note_ok(self):
        self._bad = 0

    def _cst(self, which, v):
        """A link's own state changes: say it on the console (a technician reads it there)."""
        if getattr(self, which) != v:
            print("hemhub link: %s %s" % (which, v))
            setattr(self, which, v)

    def _set(self, link, quality=None):
        if link != self.link:
            if link == "cellular" and self._last == "wifi":
                self.failovers += 1
            if link != "none":
                self._last = link
            print("hemhub link: %s -> %s (wifi %s, cellular %s)" % (self.link, link, self.wifi, self.cellular))
            self.link = link
            self.changes += 1
            self.since = time.ticks_ms()
            self._bad = 0
            self._probed = None
        self.quality = quality
        if link == "none":
            self._up.clear()
        else:
            self._up.set()

    # -- health -------------------------------------------------------------------------
    async def _healthy(self):
        """Probe the current link every probe_ms; False after fail_checks failures in a row."""
        probe = self.t["probe"]
        if probe and (self._probed is None or time.ticks_diff(time.ticks_ms(), self._probed) >= self.t["probe_ms"]):
            self._probed = time.ticks_ms()
            if await _probe(probe):
                self._bad = 0
            else:
                self._bad += 1
        return self._bad < self.t["fail_checks"]

    # -- WiFi ---------------------------------------------------------------------------
    def _wifi_start(self):
        w = self.wlan
        w.active(True)
        try:
            if not any(n[0] == self.ssid.encode() for n in w.scan()):
                self._cst("wifi", "network not found")
                self._wb.fail()
                return
        except OSError:
            pass  # scanning is refused while the driver is associating: just connect
        w.connect(self.ssid, self.psk)
        self._wifi_req = time.ticks_ms()
        self._wifi_had_ip = False
        self._cst("wifi", "connecting")

    def _wifi_stop(self, why):
        try:
            self.wlan.disconnect()
        except OSError:
            pass
        self._wifi_req = None
        self._cst("wifi", why)
        self._wb.fail()

    async def _wifi_step(self):
        """True while WiFi carries traffic."""
        if not self.ssid or self.wlan is None:
            return False
        if self._wifi_req is None:
            if self._wb.ready():
                self._wifi_start()
            return False
        st = self.wlan.status()
        if st == _STAT_GOT_IP:
            self._wifi_had_ip = True
            self._cst("wifi", "connected")
            if self.link != "wifi":
                self._bad = 0
                self._probed = None
                self._set("wifi", self._wifi_quality())
            if not await self._healthy():
                self._set("none")
                self._wifi_stop("unhealthy")
                return False
            self._wb.ok()
            self.quality = self._wifi_quality()
            return True
        if st == _STAT_WRONG_PASSWORD:
            self._wifi_stop("wrong password")
            return False
        if self._wifi_had_ip:
            self._cst("wifi", "reconnecting")  # the driver re-associates on its own
            return False
        if time.ticks_diff(time.ticks_ms(), self._wifi_req) > self.t["wifi_connect_ms"]:
            self._wifi_stop(_WIFI_ERR.get(st, "no connection"))
        return False

    def _wifi_quality(self):
        try:
            return {"rssi": self.wlan.status("rssi")}
        except OSError:
            return None

    # -- cellular -------------------------------------------------------------------------
    def _cell_quality(self):
        m = self.modem
        return {"csq": m.csq, "rssi_dbm": m.rssi_dbm}

    async def _cell_up(self):
        self.dialling = True
        try:
            return await self._cell_try()
        finally:
            self.dialling = False

    async def _cell_try(self):
        if self.modem is None:
            try:
                self.modem, self.ppp = self._cell()
            except MemoryError:
                self._drop_driver()  # a half-made import holds its heap until dropped
                self._cst("cellular", "no memory")
                self._cb.fail()
                return False
            self.modem.pin_rejected = self._pin_rejected
        m = self.modem
        try:
            await m.start()
            self._cst("cellular", "dialled")
            self.ppp.active(True)
            self.ppp.connect()
            deadline = time.ticks_add(time.ticks_ms(), self.t["ppp_ms"])
            while not self.ppp.isconnected():
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    raise ModemError("ppp_timeout")
                await asyncio.sleep_ms(20)
        except ModemError as e:
            self._cst("cellular", e.state)
            await self._cell_down()
            self._cb.fail()
            if self._cb.n >= 3 and e.state in ("no_carrier", "searching", "not_registered", "ppp_timeout"):
                await m.power_cycle()  # third failure in a row: start from a fresh module
            self._unload(e.state, say=e.state != self._idle)  # the heap is the GATT links' till the next try
            return False
        self._cst("cellular", "up")
        self._cb.ok()
        return True

    async def _cell_down(self):
        try:
            self.ppp.active(False)
        except OSError:
            pass
        if self.cellular == "up":
            self._cst("cellular", "standby")
        if self.modem.state in ("data", "no_carrier"):
            await self.modem.hangup()

    async def _cell_release(self):
        # Failback: hang up, then drop the driver (the modem module, the AT codec
        # and the Modem: ~8 KiB of a heap that the uplink's next TLS connection
        # and the next GATT link need). The modem stays powered and registered:
        # the next failover's driver finds it answering, so it costs a few AT
        # commands, not a boot. A modem given by the caller (tests) is kept.
        await self._cell_down()
        st = self.modem.state
        self._unload("standby" if st == "registered" else st)

    def _unload(self, idle, say=True):
        """Drop the modem driver and remember what the modem does meanwhile. A
        modem given by the caller (tests) is kept. say: print it on the console
        (each failback; a failed try only when the modem's state changed)."""
        if self._cell is None:
            return
        self._pin_rejected = self._pin_rejected or self.modem.pin_rejected
        self._idle = idle
        self.modem = self.ppp = None
        self._drop_driver()
        if say:
            print("hemhub link: modem %s, driver unloaded" % idle)

    @staticmethod
    def _drop_driver():
        from hemhub import unload

        unload("hemhub.link", "modem")
        unload("hemhub.codec", "at")

    async def _cell_step(self):
        if not self.apn or (self.modem is None and self._cell is None):
            return False
        if self.modem is not None and self.ppp.active() and self.ppp.isconnected():
            if self.link != "cellular":
                self._set("cellular", self._cell_quality())
            if not await self._healthy():
                self._set("none")
                await self._cell_down()
                self._cst("cellular", "unhealthy")
                self._cb.fail()
                return False
            return True
        if self.cellular == "up":  # the call dropped under us
            self.modem.poll()
            await self._cell_down()
            self._cst("cellular", "lost")
            self._cb.fail()
        if self._cb.ready() and not (self.heap_busy is not None and self.heap_busy()):
            return await self._cell_up()
        return False

    # -- the task ---------------------------------------------------------------------------
    async def step(self):
        if await self._wifi_step():
            if self.apn and self.modem is not None:
                await self._cell_release()  # failback: WiFi carries traffic again
            return
        if self.link == "wifi":
            self._set("none")  # lost: say so before 4G takes its time to come up
        if self.wifi == "connecting" and self.cellular != "up":
            return  # give WiFi its connect window before dialling 4G
        if await self._cell_step():
            return
        if self.link != "none":
            self._set("none")

    async def run(self):
        while True:
            try:
                await self.step()
            except Exception as e:  # a driver fault must not end the link task
                import sys

                sys.print_exception(e)
                self._set("none")
                await asyncio.sleep_ms(self.t["backoff_ms"])
            await asyncio.sleep_ms(self.t["check_ms"])


async def _probe(hostport):
    """A TCP connection to host:port through the current link that is neither
    refused nor reset within 200 ms."""
    import socket

    s = None
    try:
        host, port = hostport.rsplit(":", 1)
        ai = socket.getaddrinfo(host, int(port))[0][-1]
        s = socket.socket()
        s.connect(ai)
        s.setblocking(False)
        await asyncio.sleep_ms(200)
        try:
            d = s.recv(1)
        except OSError as e:
            return e.args[0] == 11  # EAGAIN: open and quiet
        return bool(d)  # b"" = closed at once
    except (OSError, ValueError):
        return False
    finally:
        if s is not None:
            s.close()


current = None


def start(cfg):
    """The link task for this config, or None when neither WiFi nor a modem is configured."""
    global current
    wifi = cfg.get("wifi") or {}
    if not wifi.get("ssid") and not cfg.get("apn"):
        return None
    import network

    wlan = network.WLAN(network.STA_IF) if wifi.get("ssid") else None
    cell = None
    if cfg.get("apn"):
        from machine import Pin

        from hemhub import board

        pwrkey = Pin(board.MODEM_POWER, Pin.OUT, value=0)  # the modem stays off until needed

        def cell():
            from machine import UART

            from hemhub.link.modem import Modem

            t = current.t
            uart = UART(2, 115200, tx=board.MODEM_TX, rx=board.MODEM_RX, timeout=0, rxbuf=512)
            return (Modem(uart, pwrkey, cfg.get("sim_pin"), cfg["apn"], t["modem_cmd_ms"],
                          t["modem_boot_ms"], t["modem_reg_ms"], t["modem_pwrkey_ms"],
                          guard_ms=t["modem_guard_ms"]), network.PPP(uart))

    current = LinkManager(cfg, wlan, cell=cell)
    return current.run()
