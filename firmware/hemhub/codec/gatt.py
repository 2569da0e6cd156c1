"""GATT characteristic values -> dicts with normalised observations.

    decode(uuid16, data) -> dict

Every result has "characteristic" (a name) and "observations": a list of
    {"mdc": int, "value": int | float | None, "unit": UCUM str}
plus "reason" when value is None (an IEEE 11073 special value or the scale's
"measurement unsuccessful"), and "group": 150020 on the three blood pressure
components. Measurement results also carry "flags", "time" (a Date Time tuple
(year, month, day, hours, minutes, seconds), 0 = unknown date part; None when
the device sent none) and "user_id". Field by field: protocol/gatt.md. Units
are the device's own, as UCUM codes (FHIR PHD IG): a scale in pounds gives
"[lb_av]", a cuff in kPa "kPa", a thermometer in Fahrenheit "[degF]"; nothing
is converted, so nothing is rounded twice.

Bad input raises CodecError (truncated, trailing bytes, reserved values,
unsupported characteristic).

This module is what every GATT link loads: the dispatch, the field reader,
IEEE 11073 SFLOAT/FLOAT, Date Time and the Current Time encoder (the hub sets
a device's clock). The parsers live in modules loaded on the first value
they decode: one per profile (gatt_weight, gatt_plx, gatt_bp, gatt_temp),
gatt_device (Battery Level, Date Time, Current Time) and gatt_racp (the
Record Access Control Point, loaded by a link only for a device that has
one). A link's heap is what is left beside the always-on alarm path, and
each module costs its tables before its first function (decision 0004).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import sys

from hemhub.codec import CodecError
from hemhub.codec.names import word

# The characteristics decode() knows; the parser of UUIDS[i] is word i of
# _PARSERS, "module.function" in hemhub.codec.
UUIDS = (0x2A9D, 0x2A9E, 0x2A5E, 0x2A5F, 0x2A60, 0x2A35, 0x2A1C, 0x2A19, 0x2A08, 0x2A2B, 0x2A52)
_PARSERS = (
    "gatt_weight.weight_measurement gatt_weight.weight_scale_feature gatt_plx.plx_spot_check "
    "gatt_plx.plx_continuous gatt_plx.plx_features gatt_bp.blood_pressure_measurement "
    "gatt_temp.temperature_measurement gatt_device.battery_level gatt_device.date_time "
    "gatt_device.current_time gatt_racp.racp"
)


def decode(uuid16, data):
    """Characteristic value -> dict (see module doc); CodecError on bad input."""
    if not isinstance(uuid16, int) or uuid16 not in UUIDS:
        raise CodecError("unsupported characteristic 0x%04X" % (uuid16,) if isinstance(uuid16, int) else "bad uuid16 %r" % (uuid16,))
    parser = word(_PARSERS, UUIDS.index(uuid16))
    dot = parser.find(".")
    return getattr(profile(parser[:dot]), parser[dot + 1 :])(data)


def profile(name):
    """hemhub.codec.<name>, imported on first use (sense.link_unload drops it)."""
    full = "hemhub.codec." + name
    mod = sys.modules.get(full)
    if mod is None:
        __import__(full)
        mod = sys.modules[full]
    return mod


class Reader:
    """Cursor over one characteristic value; every read checks the length first.
    Multi-octet GATT fields are little-endian (Core Spec Vol 3 Part G 3.3.3;
    GSS section 2, "Data types")."""

    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n):
        i = self.pos
        if i + n > len(self.data):
            raise CodecError(
                "%s truncated at offset %d: need %d more bytes, have %d" % (self.what, i, n, len(self.data) - i)
            )
        self.pos = i + n
        return i

    def uint(self, n):
        i = self.take(n)
        return _uint(self.data, i, n)

    def u8(self):
        return self.data[self.take(1)]

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


def _uint(data, i, n):
    v = 0
    for k in range(n):
        v |= data[i + k] << (8 * k)
    return v


def observation(mdc, pair, unit):
    """Observation dict from an MDC code, a (value, reason) pair and a UCUM unit."""
    value, reason = pair
    obs = {"mdc": mdc, "value": value, "unit": unit}
    if value is None:
        obs["reason"] = reason
    return obs


# ---- IEEE 11073-20601 SFLOAT-Type and FLOAT-Type (Annex F.8), "medfloat16" and
# "medfloat32" in the GSS, little-endian on the air:
#   SFLOAT  bits 15..12 exponent (4-bit two's complement, base 10), 11..0 mantissa (12-bit)
#   FLOAT   bits 31..24 exponent (8-bit two's complement, base 10), 23..0 mantissa (24-bit)
#   value = mantissa * 10 ** exponent
# The special values have exponent 0 and the five mantissas around the top of
# the positive range: 0x7FE (0x7FFFFE) +INFINITY, 0x7FF NaN, 0x800 NRes (not at
# this resolution), 0x801 reserved, 0x802 -INFINITY. A special value is not a
# number: the decoders return (None, reason) for it and (number, None) otherwise
# (an int when the exponent is >= 0, else a float).
SPECIAL_REASONS = "+inf nan nres reserved -inf"  # word k: mantissa half - 2 + k
_SFLOAT_BITS = const(12)  # mantissa bits; the exponent has the rest
_FLOAT_BITS = const(24)


def medfloat_parts(raw, mantissa_bits):
    """A 16-bit SFLOAT (mantissa_bits 12) or 32-bit FLOAT (24) pattern ->
    (mantissa, exponent), both signed; F.8. Special patterns are not told apart."""
    top = 1 << mantissa_bits
    mantissa = raw & (top - 1)
    if mantissa >= top >> 1:
        mantissa -= top
    exponent = raw >> mantissa_bits
    exponent_bits = mantissa_bits // 3  # 4 or 8
    if exponent >= 1 << (exponent_bits - 1):
        exponent -= 1 << exponent_bits
    return mantissa, exponent


def _medfloat(data, offset, n, mantissa_bits, what):
    if offset < 0 or len(data) < offset + n:
        raise CodecError("%s truncated: need %d bytes at offset %d, have %d" % (what, n, offset, max(0, len(data) - offset)))
    raw = _uint(data, offset, n)
    special = raw - (1 << (mantissa_bits - 1)) + 2  # 0..4 for the five special patterns
    if 0 <= special <= 4:
        return None, word(SPECIAL_REASONS, special)
    mantissa, exponent = medfloat_parts(raw, mantissa_bits)
    # Division by an exact power of ten keeps e.g. 366 * 10**-1 at 36.6 exactly
    # as a decimal literal would parse, where 366 * 0.1 would not.
    if exponent >= 0:
        return mantissa * 10**exponent, None
    return mantissa / 10 ** (-exponent), None


def decode_sfloat(data, offset=0):
    """SFLOAT-Type at data[offset:offset+2] -> (value, reason); IEEE 11073-20601 F.8."""
    return _medfloat(data, offset, 2, _SFLOAT_BITS, "SFLOAT")


def decode_float(data, offset=0):
    """FLOAT-Type at data[offset:offset+4] -> (value, reason); IEEE 11073-20601 F.8."""
    return _medfloat(data, offset, 4, _FLOAT_BITS, "FLOAT")


# ---- Date Time (0x2A08), GSS "Date Time": year uint16 (0 = unknown, else
# 1582..9999), month (0 = unknown, 1..12), day (0 = unknown, 1..31), hours
# 0..23, minutes 0..59, seconds 0..59. Word k names field k + 1; its maximum
# is byte k of _DATE_TIME_MAX.
_DATE_TIME_FIELDS = "year month day hours minutes seconds"
_DATE_TIME_MAX = b"\x0c\x1f\x17\x3b\x3b"


def _date_time_field(k, v, error):
    # CodecError for field k + 1 (month .. seconds) outside its range, else v
    if not isinstance(v, int) or not 0 <= v <= _DATE_TIME_MAX[k]:
        raise CodecError(error % (word(_DATE_TIME_FIELDS, k + 1), v, _DATE_TIME_MAX[k]))
    return v


def _check_year(year):
    if not isinstance(year, int) or (year != 0 and not 1582 <= year <= 9999):
        raise CodecError("Date Time year %r out of range (0 or 1582..9999)" % (year,))


def decode_date_time(data, offset=0):
    """7 bytes Date Time -> (year, month, day, hours, minutes, seconds).

    The tuple keeps the wire meaning: 0 in year, month or day means "not known".
    Out-of-range fields (reserved values) raise CodecError.
    """
    if offset < 0 or len(data) < offset + 7:
        raise CodecError("Date Time truncated: need 7 bytes at offset %d, have %d" % (offset, max(0, len(data) - offset)))
    year = _uint(data, offset, 2)
    _check_year(year)
    out = [year]
    for k in range(5):
        out.append(_date_time_field(k, data[offset + 2 + k], "Date Time %s %d out of range (max %d)"))
    return tuple(out)


def encode_date_time(t):
    """(year, month, day, hours, minutes, seconds) -> 7 bytes Date Time."""
    if len(t) != 6:
        raise CodecError("Date Time needs 6 fields (year, month, day, hours, minutes, seconds)")
    _check_year(t[0])
    out = bytearray((t[0] & 0xFF, t[0] >> 8))
    for k in range(5):
        out.append(_date_time_field(k, t[k + 1], "Date Time %s %r out of range (0..%d)"))
    return bytes(out)


def encode_current_time(t, day_of_week=0, fractions256=0, adjust_reason=0):
    """Date Time tuple (+ day of week, fractions, reason bits) -> 10 bytes
    Current Time 0x2A2B (CTS v1.1 3.1): Date Time, Day of Week (0 unknown,
    1 Monday .. 7 Sunday), Fractions256, Adjust Reason bit field."""
    if not 0 <= day_of_week <= 7:
        raise CodecError("day of week %r out of range (0..7)" % (day_of_week,))
    if not 0 <= fractions256 <= 255 or not 0 <= adjust_reason <= 255:
        raise CodecError("fractions256 and adjust_reason are uint8")
    return encode_date_time(t) + bytes((day_of_week, fractions256, adjust_reason))


def time_iso(t):
    """A Date Time tuple as 'YYYY-MM-DDThh:mm:ss' (device local time, no zone),
    or None when year, month or day is unknown (0)."""
    if t is None or not (t[0] and t[1] and t[2]):
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02d" % t

