"""Signed records: the payload schema (protocol/record.md) and its COSE_Sign1 wrapping.

A record is a deterministic CBOR map with small integer keys, signed at the
source as COSE_Sign1 / ES256. Code works with a dict of named fields:

    {"v": 1, "hub": "HH1-2026-00042", "seq": 7, "kind": "observations",
     "hub_time": 1767225600, "device_time": 1767225590,
     "peripheral": {"addr": b"\\xa4\\xc1\\x38\\x00\\x00\\x01", "kind": "scale"},
     "observations": [{"mdc": 188736, "value": 72.35, "unit": "kg"}]}

    encode_payload(fields) -> bytes         validated, deterministic CBOR
    sign_record(fields, signer) -> bytes    COSE_Sign1 (signer: p256.Signer)

and, in hemhub.record_verify (not resident on a running hub):

    decode_payload(data) -> fields          strict; CodecError on anything off-schema
    open_record(data, public_key=None) -> (fields, Sign1)

The hub id travels in the payload only (key 1), where the signature covers it;
the protected header is just {1: -7}. A verifier matches it to the CN of the
hub's certificate.

Observation values are exact decimals: an int, a decimal fraction (RFC 8949
section 3.4.4, tag 4 [exponent, mantissa]) or null with a reason. A float given
to encode_payload is converted with "%.15g" (binary64 builds) or "%.6g"
(binary32 builds, e.g. the ESP32), so 72.35 is sent as 4([-2, 7235]) on both;
sensing code that holds the exact (mantissa, exponent) can pass that tuple
instead. decode_payload gives values back as int or float.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.cbor import Tag, encode
from hemhub.codec.cose import sign1
from hemhub.codec.names import word, word_index

VERSION = const(1)
MAX_PAYLOAD = const(1024)
MAX_OBSERVATIONS = const(16)
_MAX_TEXT = const(64)
_TAG_DECIMAL = const(4)
KINDS = "observations event health gap"  # kind number -> name; also the kind's own field
_DOUBLE = (1.0 + 1e-10) != 1.0  # binary64 floats in this build
_FLOAT_FORMAT = "%.15g" if _DOUBLE else "%.6g"

# Schemas: letter -> (field names by key number, one type letter per key, required names).
# Type letters: U uint, I int, T text, Y true (false = absent), A address (6-byte
# bstr or text), V value (int, decimal fraction, null), S scalar (int, text,
# bool), M map text -> scalar, K record kind; an upper-case letter that is a
# schema's own name is a nested map of that schema, "L" a list of observations.
SCHEMAS = {
    "R": (
        "v hub seq kind hub_time unsynced device_time peripheral user observations event health gap",
        "UTUKUYIPULEHG",
        "v hub seq kind hub_time",
    ),
    "P": ("addr addr_type kind info", "AUTD", "addr kind"),
    "D": ("manufacturer model serial firmware hardware software", "TTTTTT", ""),
    "O": ("mdc value unit reason", "UVTT", "mdc value unit"),
    "E": ("type source value", "TTS", "type"),
    "H": ("type uptime_s boot fw reset_cause detail", "TUUTTM", "type"),
    "G": ("first last count what reason", "UUUTT", "count"),
}
# top-level keys the cross-field rules name
_K_VERSION = const(0)
_K_SEQ = const(2)
_K_KIND = const(3)
_K_PERIPHERAL = const(7)
_K_OBSERVATIONS = const(9)  # then event 10, health 11, gap 12: key = 9 + kind
_G_FIRST = const(0)
_G_LAST = const(1)
_O_VALUE = const(1)
_O_REASON = const(3)


# ---- fields -> wire ----


def _decimal(value):
    # (mantissa, exponent) -> int or 4([exponent, mantissa]); float via _FLOAT_FORMAT.
    if type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise CodecError("observation value %r is not a number; send null with a reason" % value)
        text = _FLOAT_FORMAT % value
        exp = 0
        e = text.find("e")
        if e >= 0:
            exp = int(text[e + 1 :])
            text = text[:e]
        dot = text.find(".")
        if dot >= 0:
            exp -= len(text) - dot - 1
            text = text[:dot] + text[dot + 1 :]
        mant = int(text)
        while mant and mant % 10 == 0 and exp < 0:
            mant //= 10
            exp += 1
        value = (mant, exp)
    if type(value) is not tuple or len(value) != 2 or type(value[0]) is not int or type(value[1]) is not int:
        raise CodecError("observation value must be an int, a float or (int mantissa, int exponent), got %r" % (value,))
    mant, exp = value
    if exp >= 0:
        return mant * 10**exp
    return Tag(_TAG_DECIMAL, [exp, mant])


def _to_wire(letter, fields, where):
    if not isinstance(fields, dict):
        raise CodecError("record %s must be a dict, got %r" % (where, fields))
    names, types, _ = SCHEMAS[letter]
    out = {}
    for name in fields:
        v = fields[name]
        k = word_index(names, name)
        if k < 0:
            raise CodecError("record %s has no field %r" % (where, name))
        t = types[k]
        if v is None and t != "V" or v is False and t == "Y":
            continue  # absent
        if t == "V" and v is not None and type(v) is not int:
            v = _decimal(v)
        elif t == "K":
            code = word_index(KINDS, v) if type(v) is str else -1
            if code < 0:
                raise CodecError("record kind must be one of %s, got %r" % (KINDS, v))
            v = code
        elif t == "L":
            if not isinstance(v, (list, tuple)):
                raise CodecError("record observations must be a list")
            v = [_to_wire("O", o, "observation") for o in v]
        elif t in SCHEMAS:
            v = _to_wire(t, v, name)
        elif t == "A" and type(v) is bytearray:
            v = bytes(v)
        out[k] = v
    return out


def encode_payload(fields):
    """Deterministic CBOR payload for a dict of named fields; CodecError if off-schema."""
    wire = _to_wire("R", fields, "payload")
    wire.setdefault(_K_VERSION, VERSION)
    check_record(wire)
    data = encode(wire)
    if len(data) > MAX_PAYLOAD:
        raise CodecError("record payload of %d bytes exceeds %d" % (len(data), MAX_PAYLOAD))
    return data


def sign_record(fields, signer):
    """COSE_Sign1 bytes of the record fields, signed by signer (p256.Signer)."""
    return sign1(encode_payload(fields), signer)


# ---- validation (shared by both directions) ----


def _check_value(t, v, where):
    ty = type(v)
    if t == "U" or t == "K":
        ok = ty is int and v >= 0
    elif t == "I":
        ok = ty is int
    elif t == "T":
        ok = ty is str and 0 < len(v) <= _MAX_TEXT
    elif t == "Y":
        ok = v is True
    elif t == "A":
        ok = (ty is bytes and len(v) == 6) or (ty is str and 0 < len(v) <= _MAX_TEXT)
    elif t == "V":
        ok = v is None or ty is int or (
            ty is Tag
            and v.tag == _TAG_DECIMAL
            and type(v.value) is list
            and len(v.value) == 2
            and type(v.value[0]) is int
            and type(v.value[1]) is int
            and -30 <= v.value[0] < 0
        )
    elif t == "S":
        ok = ty is int or ty is bool or (ty is str and len(v) <= _MAX_TEXT)
    elif t == "M":
        ok = ty is dict and len(v) <= 16
        if ok:
            for mk in v:
                if type(mk) is not str or not _check_value("S", v[mk], where):
                    ok = False
    elif t == "L":
        ok = ty is list and 0 < len(v) <= MAX_OBSERVATIONS
        if ok:
            for o in v:
                _check_map("O", o, "observation")
                if (o[_O_VALUE] is None) != (_O_REASON in o):
                    raise CodecError("record observation needs a reason exactly when its value is null")
    else:  # nested schema
        _check_map(t, v, where)
        ok = True
    return ok


def _check_map(letter, m, where):
    if type(m) is not dict:
        raise CodecError("record %s must be a map" % where)
    names, types, required = SCHEMAS[letter]
    for k in m:
        if type(k) is not int or k < 0 or k >= len(types):
            raise CodecError("record %s has unknown key %r" % (where, k))
        name = word(names, k)
        if not _check_value(types[k], m[k], name):
            raise CodecError("record %s field %s has a bad value: %r" % (where, name, m[k]))
    for name in required.split():
        if word_index(names, name) not in m:
            raise CodecError("record %s lacks required field %s" % (where, name))


def check_record(m):
    # the version first: a later version may have keys this one does not know
    if type(m) is dict and m.get(_K_VERSION, VERSION) != VERSION:
        raise CodecError("record format version %r is not supported (this is version %d)" % (m[_K_VERSION], VERSION))
    _check_map("R", m, "payload")
    kind = m[_K_KIND]
    name = word(KINDS, kind)
    if name is None:
        raise CodecError("record kind %d is unknown" % kind)
    for k in range(_K_OBSERVATIONS, _K_OBSERVATIONS + 4):
        if (k in m) != (k == _K_OBSERVATIONS + kind):
            raise CodecError("record of kind %s must carry its %s field and no other kind's" % (name, name))
    if kind <= 1 and _K_PERIPHERAL not in m:
        raise CodecError("record of kind %s lacks its peripheral" % name)
    if kind == 3:
        gap = m[_K_OBSERVATIONS + 3]
        if (_G_FIRST in gap) != (_G_LAST in gap):
            raise CodecError("record gap must give both first and last or neither")
        if _G_FIRST in gap and not gap[_G_FIRST] <= gap[_G_LAST] < m[_K_SEQ]:
            raise CodecError(
                "record gap range %d..%d must end before the marker's own seq %d"
                % (gap[_G_FIRST], gap[_G_LAST], m[_K_SEQ])
            )


def device_time(date_time):
    """GATT Date Time tuple (year, month, day, h, m, s) -> seconds since 1970 as if UTC.

    None when year, month or day is 0 ("not known"). The device's clock has no
    zone, so the result is its reading, not necessarily UTC (record.md).
    """
    if date_time is None:
        return None
    y, mo, d, h, mi, s = date_time
    if not (y and mo and d):
        return None
    # days from civil (proleptic Gregorian), March-based year
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + s
