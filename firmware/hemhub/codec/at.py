"""AT command responses from a cellular modem: pure functions of one line.

Line syntax and result codes: ITU-T V.250 section 5.7 (verbose result codes,
"OK", "CONNECT", "NO CARRIER", "ERROR", ...); information responses and error
reports: 3GPP TS 27.007 section 4.1 ("+NAME: field,field"), 9.2 (+CME ERROR),
8.5 (+CSQ), 7.2 (+CREG), 10.1.22 (+CEREG), 8.3 (+CPIN). A line is given
without its CR LF. Shared by the hub (hemhub.link.modem) and host tools;
vectors in protocol/vectors/at.json.
"""
from hemhub.codec import CodecError

# V.250 5.7.1, Table 1: verbose final result codes
_FINAL = {
    b"OK": "ok",
    b"ERROR": "error",
    b"NO CARRIER": "no_carrier",
    b"BUSY": "busy",
    b"NO ANSWER": "no_answer",
    b"NO DIALTONE": "no_dialtone",
}

# 27.007 7.2 / 10.1.22: <stat>
REG = ("not_registered", "home", "searching", "denied", "unknown", "roaming")

# 27.007 9.2.1: the +CME ERROR codes a hub acts on (numeric form, AT+CMEE=1)
CME = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    30: "no network service",
    100: "unknown",
}


def fields(text):
    """The comma-separated fields of an information response (27.007 4.1):
    "quoted" -> str, digits -> int, empty -> None, anything else -> str."""
    out = []
    i = 0
    n = len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j = text.find('"', i + 1)
            if j < 0:
                raise CodecError("unterminated quoted field in %r" % text)
            out.append(text[i + 1:j])
            i = j + 1
            if i < n and text[i] != ",":
                raise CodecError("text after a quoted field in %r" % text)
        else:
            j = text.find(",", i)
            if j < 0:
                j = n
            f = text[i:j].strip()
            if not f:
                out.append(None)
            elif f.isdigit() or (f[0] == "-" and f[1:].isdigit()):
                out.append(int(f))
            else:
                out.append(f)
            i = j
        i += 1
    return out


def parse_line(line):
    """One response line -> (kind, a, b):

    ("final", "ok"|"error"|"no_carrier"|"busy"|"no_answer"|"no_dialtone", None)
    ("final", "cme", code)     +CME ERROR: <n> (int) or verbose text (str)
    ("connect", rate, None)    CONNECT [<rate>] (int, or None without one)
    ("info", "+NAME", fields)  +NAME: ... (also unsolicited result codes)
    ("text", line, None)       anything else (ATI lines, RDY, an echo)
    ("empty", None, None)      a blank line
    """
    if not isinstance(line, (bytes, bytearray)):
        raise CodecError("an AT line is bytes, not %s" % type(line).__name__)
    line = bytes(line).strip()
    if not line:
        return ("empty", None, None)
    r = _FINAL.get(line)
    if r is not None:
        return ("final", r, None)
    try:
        s = line.decode()
    except UnicodeError:
        raise CodecError("AT line is not text: %r" % line) from None
    if s.startswith("+CME ERROR:") or s.startswith("+CMS ERROR:"):
        arg = s[11:].strip()
        return ("final", "cme", int(arg) if arg.isdigit() else arg)
    if s == "CONNECT" or s.startswith("CONNECT "):
        rate = s[8:].strip()
        return ("connect", int(rate) if rate.isdigit() else None, None)
    if s[0] == "+":
        i = s.find(":")
        if i > 1:
            return ("info", s[:i], fields(s[i + 1:].strip()))
    return ("text", s, None)


def csq(f):
    """+CSQ: <rssi>,<ber> (27.007 8.5) -> (rssi_dbm or None, ber or None).
    rssi 0 = -113 dBm or less, 1 = -111, 2..30 = -109..-53, 31 = -51 or more,
    99 = not known; ber 0..7 (RXQUAL), 99 = not known."""
    if len(f) != 2 or not isinstance(f[0], int) or not isinstance(f[1], int):
        raise CodecError("+CSQ needs two numbers (rssi,ber), got %r" % (f,))
    rssi, ber = f
    if rssi == 99:
        dbm = None
    elif 0 <= rssi <= 31:
        dbm = -113 + 2 * rssi
    else:
        raise CodecError("+CSQ rssi %d is outside 0..31 and 99" % rssi)
    if ber == 99:
        ber = None
    elif not 0 <= ber <= 7:
        raise CodecError("+CSQ ber %d is outside 0..7 and 99" % ber)
    return (dbm, ber)


def reg(f):
    """+CREG/+CEREG fields -> <stat> (0..5; REG[stat] names it).

    The read response is "n,stat[,tac,ci[,AcT]]" (27.007 7.2, 10.1.22); the
    unsolicited code is "stat[,tac,ci[,AcT]]": its second field, if any, is a
    quoted area code, where the read response has a number."""
    if not f or not isinstance(f[0], int):
        raise CodecError("registration status needs a number first, got %r" % (f,))
    stat = f[1] if len(f) >= 2 and isinstance(f[1], int) else f[0]
    if not 0 <= stat < len(REG):
        raise CodecError("registration status %r is outside 0..5" % (stat,))
    return stat


def cpin(f):
    """+CPIN: <code> (27.007 8.3) -> "READY", "SIM PIN", "SIM PUK", ..."""
    if len(f) != 1 or not isinstance(f[0], str):
        raise CodecError("+CPIN needs one code (READY, SIM PIN, ...), got %r" % (f,))
    return f[0]
