"""Deterministic CBOR (RFC 8949) for signed records: an encoder and a strict decoder.

Encoding follows the core deterministic encoding requirements (RFC 8949
section 4.2.1):

* integers, lengths and tags in their shortest form (preferred serialization,
  section 4.1); definite lengths only;
* map keys sorted by the bytewise lexicographic order of their encoded form;
* floats in the shortest of binary16, binary32, binary64 that preserves the
  value exactly (section 4.2.1, "preferred serialization"); every NaN is
  written as f97e00 and infinities as binary16 (section 4.2.2 leaves NaN
  payloads to the application; we keep none). Floats are never turned into
  integers (the section 4.2.2 option is not taken): 2.0 stays a float.

The float rules are worked on the IEEE 754 bit patterns with integers, so they
give the same bytes whatever the precision of this build's `float`: the Unix
port uses binary64, the ESP32 port binary32 (a binary32 value always widens to
binary64 exactly). Decoding a binary64 on a binary32 build rounds it to the
nearest binary32; records avoid floats for exactly that reason (record.md).

The decoder accepts only what the encoder would produce: it rejects
non-shortest integers and lengths, indefinite lengths, unsorted or duplicate
map keys, floats not in their shortest form, non-canonical NaNs, simple values
other than false/true/null, invalid UTF-8, truncation and trailing bytes. Map
keys are limited to integers, text and byte strings. Nesting is limited to
MAX_DEPTH and input size to MAX_SIZE. Every failure raises CodecError.

    encode(value) -> bytes
    encode_into(buf, value)          appends to a bytearray
    decode(data, max_depth=MAX_DEPTH, max_size=MAX_SIZE) -> value
    Tag(tag, value)                  a tagged item (e.g. Tag(18, [...]) for COSE_Sign1)

Types: int (-2**64 .. 2**64-1), bytes/bytearray/memoryview (decode: bytes),
str, list/tuple (decode: list), dict, None, True, False, float, Tag.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import struct

from hemhub.codec import CodecError

MAX_DEPTH = const(16)
MAX_SIZE = const(65536)

# Major types (RFC 8949 section 3.1)
_UINT = const(0)
_NINT = const(1)
_BSTR = const(2)
_TSTR = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)

_FALSE = const(0xF4)
_TRUE = const(0xF5)
_NULL = const(0xF6)
_UINT64_LIMIT = 1 << 64

# IEEE 754 binary formats, smallest first: (initial byte, width in bytes,
# significand bits p including the implicit one, emin, emax). Section 3.3.
_FLOATS = (
    (0xF9, 2, 11, -14, 15),
    (0xFA, 4, 24, -126, 127),
    (0xFB, 8, 53, -1022, 1023),
)


class Tag:
    """A tagged data item: tag number and content (RFC 8949 section 3.4)."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# ---- encoder ----


def encode(value):
    """The deterministic encoding of value, as bytes."""
    buf = bytearray()
    _encode(buf, value, 0)
    return bytes(buf)


def encode_into(buf, value):
    """Append the deterministic encoding of value to the bytearray buf."""
    _encode(buf, value, 0)


def _head(buf, major, n):
    # Shortest argument encoding (section 4.2.1): 0..23 in the initial byte,
    # then 1, 2, 4 or 8 bytes big-endian.
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(n.to_bytes(4, "big"))
    elif n < _UINT64_LIMIT:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise CodecError("CBOR cannot encode %d: integers and lengths must fit in 64 bits" % n)


def _encode(buf, v, depth):
    if v is None:
        buf.append(_NULL)
    elif v is True:
        buf.append(_TRUE)
    elif v is False:
        buf.append(_FALSE)
    else:
        t = type(v)
        if t is int:
            if v >= 0:
                _head(buf, _UINT, v)
            else:
                _head(buf, _NINT, -1 - v)
        elif t is str:
            b = v.encode()
            _head(buf, _TSTR, len(b))
            buf.extend(b)
        elif t is bytes or t is bytearray or t is memoryview:
            _head(buf, _BSTR, len(v))
            buf.extend(v)
        elif t is float:
            _encode_float(buf, v)
        elif t is list or t is tuple or t is dict or t is Tag:
            # the same nesting limit the decoder applies
            if depth >= MAX_DEPTH:
                raise CodecError("CBOR encoding nested deeper than %d levels" % MAX_DEPTH)
            if t is dict:
                _encode_map(buf, v, depth)
            elif t is Tag:
                if type(v.tag) is not int or v.tag < 0:
                    raise CodecError("CBOR tag number must be a non-negative integer, not %r" % (v.tag,))
                _head(buf, _TAG, v.tag)
                _encode(buf, v.value, depth + 1)
            else:
                _head(buf, _ARRAY, len(v))
                for x in v:
                    _encode(buf, x, depth + 1)
        else:
            raise CodecError("CBOR cannot encode a value of type %s" % t.__name__)


def _encode_map(buf, m, depth):
    _head(buf, _MAP, len(m))
    keys = list(m)
    small = True
    for k in keys:
        if type(k) is not int or k < 0:
            small = False
            break
    if small:
        # Non-negative integers: numeric order is the bytewise order of their
        # shortest encodings (a longer head starts with a larger byte).
        keys.sort()
        for k in keys:
            _head(buf, _UINT, k)
            _encode(buf, m[k], depth + 1)
        return
    for k in keys:
        t = type(k)
        if t is not int and t is not str and t is not bytes:
            raise CodecError("CBOR map key must be an integer, text or byte string, not %s" % t.__name__)
    pairs = [(encode(k), k) for k in keys]
    pairs.sort(key=_first)
    prev = None
    for ek, k in pairs:
        if ek == prev:
            raise CodecError("CBOR map has two keys that encode the same: %r" % (k,))
        prev = ek
        buf.extend(ek)
        _encode(buf, m[k], depth + 1)


def _first(pair):
    return pair[0]


def _bit_length(n):
    # int.bit_length is missing on MicroPython; n here has at most 53 bits.
    c = 0
    while n:
        n >>= 1
        c += 1
    return c


def _fits(mant, exp, nbits, fmt):
    # value = mant * 2**exp with mant odd: exactly representable in fmt when the
    # significand fits in p bits, the lowest bit is not below the smallest
    # subnormal and the highest bit is not above emax.
    p = fmt[2]
    return nbits <= p and exp >= fmt[3] - p + 1 and exp + nbits - 1 <= fmt[4]


def _float_pattern(sign, mant, exp, nbits, fmt):
    # IEEE 754 bit pattern of sign * mant * 2**exp in fmt (already known to fit).
    width, p, emin, emax = fmt[1], fmt[2], fmt[3], fmt[4]
    top = exp + nbits - 1
    if top >= emin:  # normal: hide the leading one
        efield = top + emax
        mfield = (mant << (p - nbits)) - (1 << (p - 1))
    else:  # subnormal
        efield = 0
        mfield = mant << (exp - (emin - p + 1))
    return (sign << (width * 8 - 1)) | (efield << (p - 1)) | mfield


def _encode_float(buf, x):
    bits = int.from_bytes(struct.pack(">d", x), "big")
    sign = bits >> 63
    efield = (bits >> 52) & 0x7FF
    mfield = bits & 0xFFFFFFFFFFFFF
    if efield == 0x7FF:
        if mfield:
            buf.extend(b"\xf9\x7e\x00")  # the one NaN
        else:
            buf.extend(b"\xf9\xfc\x00" if sign else b"\xf9\x7c\x00")
        return
    if efield == 0 and mfield == 0:
        buf.extend(b"\xf9\x80\x00" if sign else b"\xf9\x00\x00")
        return
    if efield:
        mant, exp = mfield | (1 << 52), efield - 1075
    else:
        mant, exp = mfield, -1074
    while not mant & 1:
        mant >>= 1
        exp += 1
    nbits = _bit_length(mant)
    for fmt in _FLOATS:
        if _fits(mant, exp, nbits, fmt):
            buf.append(fmt[0])
            buf.extend(_float_pattern(sign, mant, exp, nbits, fmt).to_bytes(fmt[1], "big"))
            return


# ---- decoder ----


def decode(data, max_depth=MAX_DEPTH, max_size=MAX_SIZE):
    """Decode exactly one deterministically encoded item filling all of data."""
    if len(data) > max_size:
        raise CodecError("CBOR input of %d bytes exceeds the %d-byte limit" % (len(data), max_size))
    d = _Decoder(data, max_depth)
    value = d.item(0)
    if d.pos != len(data):
        raise CodecError("CBOR item ends at offset %d but %d bytes follow" % (d.pos, len(data) - d.pos))
    return value


class _Decoder:
    def __init__(self, data, max_depth):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def _need(self, n):
        have = len(self.data) - self.pos
        if n > have:
            raise CodecError("CBOR truncated: need %d bytes at offset %d, have %d" % (n, self.pos, have))

    def _uint(self, n):
        self._need(n)
        p = self.pos
        self.pos = p + n
        return int.from_bytes(self.data[p : p + n], "big")

    def _argument(self, ai):
        # Section 3 with the shortest-form rule of section 4.2.1.
        if ai < 24:
            return ai
        if ai == 24:
            n = self._uint(1)
            low = 24
        elif ai == 25:
            n = self._uint(2)
            low = 0x100
        elif ai == 26:
            n = self._uint(4)
            low = 0x10000
        elif ai == 27:
            n = self._uint(8)
            low = 0x100000000
        elif ai == 31:
            raise CodecError("CBOR indefinite length at offset %d is not allowed" % (self.pos - 1))
        else:
            raise CodecError("CBOR reserved additional information %d at offset %d" % (ai, self.pos - 1))
        if n < low:
            raise CodecError("CBOR argument %d at offset %d is not in its shortest form" % (n, self.pos))
        return n

    def item(self, depth):
        self._need(1)
        start = self.pos
        ib = self.data[start]
        self.pos = start + 1
        major = ib >> 5
        ai = ib & 31
        if major == _SIMPLE:
            return self._simple(ai, start)
        n = self._argument(ai)
        if major == _UINT:
            return n
        if major == _NINT:
            return -1 - n
        if major == _BSTR or major == _TSTR:
            self._need(n)
            p = self.pos
            self.pos = p + n
            raw = bytes(self.data[p : p + n])
            if major == _BSTR:
                return raw
            if not _utf8_valid(raw):
                raise CodecError("CBOR text string at offset %d is not valid UTF-8" % start)
            return raw.decode()
        if depth >= self.max_depth:
            raise CodecError("CBOR nesting deeper than %d levels at offset %d" % (self.max_depth, start))
        if major == _ARRAY:
            self._need(n)  # every item takes at least one byte
            return [self.item(depth + 1) for _ in range(n)]
        if major == _MAP:
            self._need(2 * n)
            return self._map(n, depth)
        return Tag(n, self.item(depth + 1))

    def _map(self, n, depth):
        out = {}
        prev = None
        for _ in range(n):
            ks = self.pos
            key = self.item(depth + 1)
            ek = bytes(self.data[ks : self.pos])
            if prev is not None and ek <= prev:
                raise CodecError(
                    "CBOR map key at offset %d is %s" % (ks, "a duplicate" if ek == prev else "out of order")
                )
            t = type(key)
            if t is not int and t is not str and t is not bytes:
                raise CodecError("CBOR map key at offset %d must be an integer, text or byte string" % ks)
            prev = ek
            out[key] = self.item(depth + 1)
        return out

    def _simple(self, ai, start):
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if 25 <= ai <= 27:
            fmt = _FLOATS[ai - 25]
            return _decode_float(self._uint(fmt[1]), ai - 25, start)
        if ai == 31:
            raise CodecError("CBOR break at offset %d outside an indefinite-length item" % start)
        raise CodecError("CBOR simple value (additional information %d) at offset %d is not supported" % (ai, start))


def _decode_float(bits, index, start):
    fmt = _FLOATS[index]
    width, p, emin, emax = fmt[1], fmt[2], fmt[3], fmt[4]
    sign = bits >> (width * 8 - 1)
    efield = (bits >> (p - 1)) & ((1 << (width * 8 - p)) - 1)
    mfield = bits & ((1 << (p - 1)) - 1)
    if efield == 2 * emax + 1:  # all ones: infinity or NaN
        if index or (mfield and bits != 0x7E00):
            raise CodecError("CBOR float at offset %d: NaN and infinity must be f97e00, f97c00 or f9fc00" % start)
        if mfield:
            return float("nan")
        return float("-inf") if sign else float("inf")
    if efield:
        mant, exp = mfield | (1 << (p - 1)), efield - emax - (p - 1)
    else:
        mant, exp = mfield, emin - p + 1
    if mant == 0:
        if index:
            raise CodecError("CBOR float at offset %d is not in its shortest form" % start)
        return -0.0 if sign else 0.0
    while not mant & 1:
        mant >>= 1
        exp += 1
    nbits = _bit_length(mant)
    if index and _fits(mant, exp, nbits, _FLOATS[index - 1]):
        raise CodecError("CBOR float at offset %d is not in its shortest form" % start)
    pattern = _float_pattern(sign, mant, exp, nbits, _FLOATS[2])
    return struct.unpack(">d", pattern.to_bytes(8, "big"))[0]


def _utf8_valid(b):
    # Well-formed UTF-8 per RFC 3629 section 4 (no overlongs, no surrogates,
    # nothing above U+10FFFF). MicroPython's own check is more lenient.
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            extra = 1
        elif 0xE0 <= c <= 0xEF:
            extra = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            extra = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + extra >= n:
            return False
        if not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + extra + 1):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += extra + 1
    return True
