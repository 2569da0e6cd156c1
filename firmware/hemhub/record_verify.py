"""Reading signed records back: the payload schema of hemhub.record
(protocol/record.md), decoded strictly, and the COSE_Sign1 around it verified.

    decode_payload(data) -> fields          strict; CodecError on anything off-schema
    open_record(data, public_key=None) -> (fields, Sign1)

The hub itself only writes records; this side is for host tools and tests (and
any hub code that must read one back), so a running hub does not hold it.
"""
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.cbor import Tag, decode
from hemhub.codec.cose_verify import parse_sign1, verify_sign1
from hemhub.codec.names import word
from hemhub.crypto.p256 import N as _N
from hemhub.record import KINDS, SCHEMAS, MAX_PAYLOAD, check_record

_DEPTH = const(8)  # nesting of the record schema (protocol/record.md)


def _from_wire(letter, m):
    names, types, _ = SCHEMAS[letter]
    out = {}
    for k in m:
        t = types[k]
        v = m[k]
        if t == "V" and type(v) is Tag:
            v = v.value[1] / 10 ** (-v.value[0])
        elif t == "K":
            v = word(KINDS, v)
        elif t == "L":
            v = [_from_wire("O", o) for o in v]
        elif t in SCHEMAS:
            v = _from_wire(t, v)
        out[word(names, k)] = v
    return out


def decode_payload(data):
    """Named fields of a record payload; CodecError unless it is valid, deterministic CBOR."""
    m = decode(data, _DEPTH, MAX_PAYLOAD)
    check_record(m)
    return _from_wire("R", m)


def open_record(data, public_key=None):
    """(fields, Sign1) of COSE_Sign1 record bytes; verifies the signature if public_key is given."""
    msg = parse_sign1(data, MAX_PAYLOAD + 128)
    if msg.unprotected:
        raise CodecError("record unprotected header must be empty")
    fields = decode_payload(msg.payload)
    if public_key is not None:
        if int.from_bytes(msg.signature[32:], "big") > _N >> 1:
            raise CodecError("record signature is not in low-s form (protocol/record.md section 2)")
        if not verify_sign1(msg, public_key):
            raise CodecError("record signature does not verify with the hub's key")
    return fields, msg
