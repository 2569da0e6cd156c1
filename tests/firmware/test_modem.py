# The modem's AT driver (hemhub.link.modem) under MicroPython, against a scripted
# fake UART that answers like an LTE module: bring-up to CONNECT, SIM and PIN
# states, registration denied, NO CARRIER, URCs mid-command, no answer and
# recovery with PWRKEY pulses.
import sys

# The board emulation's `time` needs a running world; these tests use the
# interpreter's own time and asyncio.
sys.path[:] = [p for p in sys.path if not p.endswith("/vhub/board")]

import asyncio  # noqa: E402

from hemhub.link.modem import Modem, ModemError  # noqa: E402

OK = b"\r\nOK\r\n"


class FakeUart:
    """Answers each command line from `replies` (bytes, or a function returning
    bytes); unknown commands get ERROR; `alive` False answers nothing."""

    def __init__(self, replies, alive=True):
        self.replies = replies
        self.alive = alive
        self.rx = bytearray()
        self.sent = []

    def any(self):
        return len(self.rx)

    def read(self, n=-1):
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d

    def write(self, b):
        line = bytes(b).rstrip(b"\r").decode()
        self.sent.append(line)
        if not self.alive:
            return len(b)
        r = self.replies.get(line, b"\r\nERROR\r\n")
        if callable(r):
            r = r()
        self.rx.extend(r)
        return len(b)


class FakeKey:
    def __init__(self, on_pulse=None):
        self.level = 0
        self.pulses = 0
        self.on_pulse = on_pulse

    def value(self, v=None):
        if v is None:
            return self.level
        if self.level and not v:
            self.pulses += 1
            if self.on_pulse:
                self.on_pulse(self.pulses)
        self.level = v


def _replies(**over):
    r = {
        "AT": OK, "ATE0": OK, "AT+CMEE=1": OK, "AT+CPIN?": b"\r\n+CPIN: READY\r\n" + OK,
        "AT+CEREG=1": OK, "AT+CREG=1": OK, "AT+CEREG?": b"\r\n+CEREG: 1,1\r\n" + OK,
        "AT+CREG?": b"\r\n+CREG: 1,1\r\n" + OK, "AT+CSQ": b"\r\n+CSQ: 17,99\r\n" + OK,
        'AT+CGDCONT=1,"IP","iot.test"': OK, "ATD*99#": b"\r\nCONNECT 150000000\r\n", "ATH": OK,
    }
    r.update(over)
    return r


def _modem(uart, key=None, pin=None):
    return Modem(uart, key, pin, "iot.test", cmd_ms=100, boot_ms=300, reg_ms=300, pwrkey_ms=5,
                 dial_ms=200, guard_ms=5)


def _start(m):
    async def go():
        try:
            await m.start()
            return None
        except ModemError as e:
            return e.state

    return asyncio.run(go())


def test_bring_up_to_data_mode():
    u = FakeUart(_replies())
    m = _modem(u)
    assert _start(m) is None
    assert m.state == "data"
    assert u.sent == ["AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CEREG=1", "AT+CREG=1", "AT+CEREG?",
                      "AT+CSQ", 'AT+CGDCONT=1,"IP","iot.test"', "ATD*99#"]
    assert (m.csq, m.rssi_dbm, m.reg) == (17, -79, 1)


def test_echo_and_urcs_inside_a_response_are_handled():
    # Echo still on for the first AT; a +CEREG URC and RDY arrive in the middle of +CSQ's reply.
    r = _replies(AT=b"AT\r\r\nOK\r\n", **{"AT+CSQ": b"\r\n+CEREG: 5\r\nRDY\r\n+CSQ: 31,0\r\n" + OK})
    m = _modem(FakeUart(r))

    async def go():
        await m.cmd("AT")
        got = await m.cmd("AT+CSQ")
        return got

    got = asyncio.run(go())
    assert got == [("+CSQ", [31, 0])]
    assert m.reg == 5


def test_no_sim():
    m = _modem(FakeUart(_replies(**{"AT+CPIN?": b"\r\n+CME ERROR: 10\r\n"})))
    assert _start(m) == "no_sim"
    assert m.state == "no_sim"


def test_pin_required_without_a_pin_configured():
    m = _modem(FakeUart(_replies(**{"AT+CPIN?": b"\r\n+CPIN: SIM PIN\r\n" + OK})))
    assert _start(m) == "pin_required"


def test_pin_entered_then_registered():
    u = FakeUart(_replies(**{"AT+CPIN?": b"\r\n+CPIN: SIM PIN\r\n" + OK,
                             'AT+CPIN="4321"': OK + b"\r\n+CPIN: READY\r\n"}))
    m = _modem(u, pin="4321")
    assert _start(m) is None
    assert 'AT+CPIN="4321"' in u.sent and m.sim == "READY"


def test_wrong_pin_is_offered_once_only():
    u = FakeUart(_replies(**{"AT+CPIN?": b"\r\n+CPIN: SIM PIN\r\n" + OK,
                             'AT+CPIN="0000"': b"\r\n+CME ERROR: 16\r\n"}))
    m = _modem(u, pin="0000")
    assert _start(m) == "pin_wrong"
    assert _start(m) == "pin_wrong"
    # A SIM locks after three wrong PINs: the driver never tries the same one again.
    assert u.sent.count('AT+CPIN="0000"') == 1


def test_sim_puk():
    m = _modem(FakeUart(_replies(**{"AT+CPIN?": b"\r\n+CPIN: SIM PUK\r\n" + OK})))
    assert _start(m) == "sim_puk"


def test_registration_denied():
    m = _modem(FakeUart(_replies(**{"AT+CEREG?": b"\r\n+CEREG: 1,3\r\n" + OK,
                                    "AT+CREG?": b"\r\n+CREG: 1,3\r\n" + OK})))
    assert _start(m) == "denied"


def test_registration_times_out_searching():
    m = _modem(FakeUart(_replies(**{"AT+CEREG?": b"\r\n+CEREG: 1,2\r\n" + OK,
                                    "AT+CREG?": b"\r\n+CREG: 1,2\r\n" + OK})))
    assert _start(m) == "searching"


def test_registration_by_urc():
    # Searching when asked, but the module announces registration on its own.
    state = {"n": 0}

    def cereg():
        state["n"] += 1
        return b"\r\n+CEREG: 1,2\r\n" + OK + (b"\r\n+CEREG: 1\r\n" if state["n"] == 1 else b"")

    m = _modem(FakeUart(_replies(**{"AT+CEREG?": cereg, "AT+CREG?": b"\r\n+CREG: 1,2\r\n" + OK})))
    assert _start(m) is None


def test_no_carrier_on_dial():
    m = _modem(FakeUart(_replies(**{"ATD*99#": b"\r\nNO CARRIER\r\n"})))
    assert _start(m) == "no_carrier"


def test_carrier_lost_in_data_mode():
    u = FakeUart(_replies())
    m = _modem(u)
    assert _start(m) is None
    u.rx.extend(b"\r\nNO CARRIER\r\n")
    m.poll()
    assert m.carrier_lost and m.state == "no_carrier"


def test_no_answer_then_power_key_brings_it_up():
    u = FakeUart(_replies(), alive=False)

    def pulse(n):
        u.alive = True
        u.rx.extend(b"\r\nRDY\r\n")

    key = FakeKey(pulse)
    m = _modem(u, key)
    assert _start(m) is None
    assert key.pulses == 1 and "+++" in u.sent


def test_hung_module_needs_off_and_on():
    # The module is on but hung: the first pulse switches it off, the second on.
    u = FakeUart(_replies(), alive=False)

    def pulse(n):
        if n == 1:
            u.rx.extend(b"\r\nNORMAL POWER DOWN\r\n")
        else:
            u.alive = True
            u.rx.extend(b"\r\nRDY\r\n")

    key = FakeKey(pulse)
    m = _modem(u, key)
    assert _start(m) is None
    assert key.pulses == 2


def test_dead_module_reports_no_answer():
    key = FakeKey()
    m = _modem(FakeUart(_replies(), alive=False), key)
    assert _start(m) == "no_answer"
    assert key.pulses == 3 and m.state == "no_answer"


def test_garbage_lines_are_counted_not_fatal():
    m = _modem(FakeUart(_replies(**{"AT+CSQ": b"\r\n+CSQ: \"x\r\n\xff\xfe\r\n+CSQ: 9,99\r\n" + OK})))

    async def go():
        return await m.cmd("AT+CSQ")

    assert asyncio.run(go())[-1] == ("+CSQ", [9, 99])
    assert m.garbage == 2


def test_backoff_doubles_with_jitter_and_caps():
    from hemhub.link.manager import backoff_ms

    lo = [backoff_ms(n, 1000, 60000, lambda k: 0) for n in range(8)]
    hi = [backoff_ms(n, 1000, 60000, lambda k: k - 1) for n in range(8)]
    assert lo == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert hi == [999, 1999, 3999, 7999, 15999, 31999, 59999, 59999]
