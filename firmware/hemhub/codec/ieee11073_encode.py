"""IEEE 11073-20601 SFLOAT-Type and FLOAT-Type encoders (Annex F.8), the
inverse of the decoders in hemhub.codec.gatt (decode_sfloat, decode_float):
for the virtual hub's simulated devices and the tests. Kept apart so that a hub, which only decodes, does not
load them with every GATT link.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.gatt import SPECIAL_REASONS
from hemhub.codec.names import word_index

_SFLOAT_MANT_MAX = const(2047)  # 12-bit two's complement range -2048..2047
_FLOAT_MANT_MAX = const(8388607)  # 24-bit two's complement range
_SFLOAT_EXP_MIN = const(-8)
_SFLOAT_EXP_MAX = const(7)
_FLOAT_EXP_MIN = const(-128)
_FLOAT_EXP_MAX = const(127)


def _round_half_away(x):
    # round() differs between CPython (half to even) and ports; be explicit.
    if x >= 0:
        return int(x + 0.5)
    return -int(-x + 0.5)


def _special_pattern(mantissa_bits, value):
    # The pattern of a special value (exponent 0, F.8; gatt.SPECIAL_REASONS word
    # k has mantissa half - 2 + k), or None for an ordinary number.
    if value is None:
        value = "nan"
    elif isinstance(value, float):
        if value != value:
            value = "nan"
        elif value == float("inf"):
            value = "+inf"
        elif value == -float("inf"):
            value = "-inf"
        else:
            return None
    elif not isinstance(value, str):
        return None
    k = word_index(SPECIAL_REASONS, value)
    if k >= 0:
        return (1 << (mantissa_bits - 1)) - 2 + k
    raise CodecError("unknown special value %r (use nan, nres, +inf, -inf, reserved)" % (value,))


def _mantissa(value, exponent, limit, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError("%s value must be a number, not %r" % (what, value))
    try:
        if exponent <= 0:
            m = value * 10 ** (-exponent)
        else:
            m = value / 10**exponent
        m = _round_half_away(m)
    except (OverflowError, ValueError):  # inf or nan after scaling
        raise CodecError("%s cannot hold %r with exponent %d" % (what, value, exponent)) from None
    # Exponent 0 reserves the top/bottom mantissas for the special values.
    lo, hi = -limit - 1, limit
    if exponent == 0:
        lo, hi = lo + 3, hi - 2
    if m < lo or m > hi:
        raise CodecError(
            "%s cannot hold %r with exponent %d (mantissa %d outside %d..%d)"
            % (what, value, exponent, m, lo, hi)
        )
    return m


def encode_sfloat(value, exponent=0):
    """value (number, None or a special-value reason) -> 2 bytes SFLOAT; F.8.

    The mantissa is value * 10**-exponent rounded half away from zero, so the
    exponent sets the resolution: encode_sfloat(36.6, -1) == b'\\x6e\\xf1'.
    None and float NaN encode NaN; float infinities encode +INF / -INF.
    """
    pattern = _special_pattern(12, value)
    if pattern is None:
        if not (_SFLOAT_EXP_MIN <= exponent <= _SFLOAT_EXP_MAX):
            raise CodecError("SFLOAT exponent %d outside -8..7" % exponent)
        m = _mantissa(value, exponent, _SFLOAT_MANT_MAX, "SFLOAT")
        pattern = ((exponent & 0xF) << 12) | (m & 0xFFF)
    return bytes((pattern & 0xFF, pattern >> 8))


def encode_float(value, exponent=0):
    """value (number, None or a special-value reason) -> 4 bytes FLOAT; F.8."""
    pattern = _special_pattern(24, value)
    if pattern is None:
        if not (_FLOAT_EXP_MIN <= exponent <= _FLOAT_EXP_MAX):
            raise CodecError("FLOAT exponent %d outside -128..127" % exponent)
        m = _mantissa(value, exponent, _FLOAT_MANT_MAX, "FLOAT")
        pattern = ((exponent & 0xFF) << 24) | (m & 0xFFFFFF)
    return bytes((pattern & 0xFF, (pattern >> 8) & 0xFF, (pattern >> 16) & 0xFF, pattern >> 24))
