"""Shared field readers for the GATT characteristic codecs (gatt.py and the profile modules gatt_weight, gatt_plx, gatt_bp, gatt_temp).

All multi-octet GATT fields are little-endian (Core Spec Vol 3 Part G, 3.3.3;
GATT Specification Supplement (GSS) section 2, "Data types").
"""

from hemhub.codec import CodecError
from hemhub.codec.ieee11073 import decode_float, decode_sfloat


class Reader:
    """Cursor over one characteristic value; every read checks the length first."""

    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n):
        i = self.pos
        if i + n > len(self.data):
            raise CodecError(
                "%s truncated at offset %d: need %d more bytes, have %d"
                % (self.what, i, n, len(self.data) - i)
            )
        self.pos = i + n
        return i

    def uint(self, n):
        i = self.take(n)
        d = self.data
        v = 0
        for k in range(n):
            v |= d[i + k] << (8 * k)
        return v

    def u8(self):
        return self.data[self.take(1)]

    def u16(self):
        return self.uint(2)

    def sfloat(self):
        return decode_sfloat(self.data, self.take(2))

    def float32(self):
        return decode_float(self.data, self.take(4))

    def date_time(self):
        return decode_date_time(self.data, self.take(7))

    def end(self):
        extra = len(self.data) - self.pos
        if extra:
            raise CodecError("%s has %d unexpected trailing bytes after offset %d" % (self.what, extra, self.pos))


# Date Time (0x2A08), GSS "Date Time": year uint16 (0 = unknown, else 1582..9999),
# month (0 = unknown, 1..12), day (0 = unknown, 1..31), hours 0..23,
# minutes 0..59, seconds 0..59.
_DATE_TIME_LIMITS = (("month", 12), ("day", 31), ("hours", 23), ("minutes", 59), ("seconds", 59))


def decode_date_time(data, offset=0):
    """7 bytes Date Time -> (year, month, day, hours, minutes, seconds).

    The tuple keeps the wire meaning: 0 in year, month or day means "not known".
    Out-of-range fields (reserved values) raise CodecError.
    """
    if offset < 0 or len(data) < offset + 7:
        raise CodecError("Date Time truncated: need 7 bytes at offset %d, have %d" % (offset, max(0, len(data) - offset)))
    year = data[offset] | (data[offset + 1] << 8)
    if year != 0 and not 1582 <= year <= 9999:
        raise CodecError("Date Time year %d out of range (0 or 1582..9999)" % year)
    out = [year]
    for k in range(5):
        v = data[offset + 2 + k]
        name, top = _DATE_TIME_LIMITS[k]
        if v > top:
            raise CodecError("Date Time %s %d out of range (max %d)" % (name, v, top))
        out.append(v)
    return tuple(out)


def encode_date_time(t):
    """(year, month, day, hours, minutes, seconds) -> 7 bytes Date Time."""
    if len(t) != 6:
        raise CodecError("Date Time needs 6 fields (year, month, day, hours, minutes, seconds)")
    year = t[0]
    if year != 0 and not 1582 <= year <= 9999:
        raise CodecError("Date Time year %r out of range (0 or 1582..9999)" % (year,))
    out = bytearray((year & 0xFF, year >> 8))
    for k in range(5):
        name, top = _DATE_TIME_LIMITS[k]
        v = t[k + 1]
        if not 0 <= v <= top:
            raise CodecError("Date Time %s %r out of range (0..%d)" % (name, v, top))
        out.append(v)
    return bytes(out)


def time_iso(t):
    """A Date Time tuple as 'YYYY-MM-DDThh:mm:ss' (device local time, no zone),
    or None when year, month or day is unknown (0)."""
    if t is None or not (t[0] and t[1] and t[2]):
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02d" % t


def observation(mdc, pair, unit):
    """Observation dict from an MDC code, a (value, reason) pair and a UCUM unit."""
    value, reason = pair
    obs = {"mdc": mdc, "value": value, "unit": unit}
    if value is None:
        obs["reason"] = reason
    return obs
