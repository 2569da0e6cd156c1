"""IEEE 11073-20601 SFLOAT-Type (16 bit) and FLOAT-Type (32 bit), little-endian
as Bluetooth carries them (GATT Specification Supplement: medfloat16 / medfloat32).

Wire layout (IEEE 11073-20601 Annex F.8):
  SFLOAT  bits 15..12 exponent (4-bit two's complement, base 10),
          bits 11..0  mantissa (12-bit two's complement)
  FLOAT   bits 31..24 exponent (8-bit two's complement, base 10),
          bits 23..0  mantissa (24-bit two's complement)
  value = mantissa * 10 ** exponent

Special values are defined with exponent 0 only (F.8): NaN, NRes (not at this
resolution), +INFINITY, -INFINITY and one reserved mantissa. A special value is
not a number, so the decoders return an *absent* value:

    decode_sfloat(data) -> (value, reason)

* a number:        (int or float, None)   int when exponent >= 0, else float
* a special value: (None, reason)         reason in "nan", "nres", "+inf",
                                          "-inf", "reserved"

Exponent and mantissa patterns other than the five specials are ordinary
numbers, e.g. 0xF7FF (exponent -1, mantissa 2047) is 204.7.

The encoders (encode_sfloat, encode_float) are in ieee11073_encode: the hub
only decodes, and this module is loaded for every GATT link.
"""

from hemhub.codec import CodecError

# Special values, exponent 0 (IEEE 11073-20601 F.8). (raw pattern, reason)
_SFLOAT_SPECIAL = (
    (0x07FF, "nan"),
    (0x0800, "nres"),
    (0x07FE, "+inf"),
    (0x0802, "-inf"),
    (0x0801, "reserved"),
)
_FLOAT_SPECIAL = (
    (0x007FFFFF, "nan"),
    (0x00800000, "nres"),
    (0x007FFFFE, "+inf"),
    (0x00800002, "-inf"),
    (0x00800001, "reserved"),
)



def _scale(mantissa, exponent):
    # Division by an exact power of ten keeps e.g. 366 * 10**-1 at 36.6 exactly
    # as a decimal literal would parse, where 366 * 0.1 would not.
    if exponent >= 0:
        return mantissa * 10**exponent
    return mantissa / 10 ** (-exponent)


def _need(data, offset, n, what):
    if offset < 0 or len(data) < offset + n:
        raise CodecError(
            "%s truncated: need %d bytes at offset %d, have %d"
            % (what, n, offset, max(0, len(data) - offset))
        )


def sfloat_parts(raw):
    """Split a 16-bit SFLOAT pattern into (mantissa, exponent); F.8."""
    exponent = (raw >> 12) & 0xF
    if exponent >= 8:
        exponent -= 16
    mantissa = raw & 0xFFF
    if mantissa >= 0x800:
        mantissa -= 0x1000
    return mantissa, exponent


def float_parts(raw):
    """Split a 32-bit FLOAT pattern into (mantissa, exponent); F.8."""
    exponent = (raw >> 24) & 0xFF
    if exponent >= 0x80:
        exponent -= 0x100
    mantissa = raw & 0xFFFFFF
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    return mantissa, exponent


def _special_reason(table, raw):
    for pattern, reason in table:
        if pattern == raw:
            return reason
    return None


def decode_sfloat(data, offset=0):
    """SFLOAT-Type at data[offset:offset+2] -> (value, reason); IEEE 11073-20601 F.8.

    value is None exactly when the pattern is a special value; reason then names it.
    """
    _need(data, offset, 2, "SFLOAT")
    raw = data[offset] | (data[offset + 1] << 8)
    reason = _special_reason(_SFLOAT_SPECIAL, raw)
    if reason is not None:
        return None, reason
    mantissa, exponent = sfloat_parts(raw)
    return _scale(mantissa, exponent), None


def decode_float(data, offset=0):
    """FLOAT-Type at data[offset:offset+4] -> (value, reason); IEEE 11073-20601 F.8."""
    _need(data, offset, 4, "FLOAT")
    raw = (
        data[offset]
        | (data[offset + 1] << 8)
        | (data[offset + 2] << 16)
        | (data[offset + 3] << 24)
    )
    reason = _special_reason(_FLOAT_SPECIAL, raw)
    if reason is not None:
        return None, reason
    mantissa, exponent = float_parts(raw)
    return _scale(mantissa, exponent), None
