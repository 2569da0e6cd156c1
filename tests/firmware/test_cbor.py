# Deterministic CBOR under MicroPython: the shared vectors in protocol/vectors/cbor.json
# (RFC 8949 Appendix A and the rejection list), every binary16 pattern, random
# binary64 patterns, every truncation, and random input.
import os
import struct

from hemhub.codec import CodecError
from hemhub.codec.cbor import Tag, decode, encode, encode_into
from vectors import section


def _value(v):
    # JSON notation of cbor.json ("value_notation") -> Python value
    if isinstance(v, dict):
        if "bytes" in v:
            return bytes.fromhex(v["bytes"])
        if "tag" in v:
            return Tag(v["tag"], _value(v["value"]))
        if "map" in v:
            return {_value(k): _value(x) for k, x in v["map"]}
        return float(v["float"])
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _same(a, b):
    # equality that tells -0.0 from 0.0, NaN equal to NaN, True from 1
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a:
            return b != b
        return a == b and struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(_same(a[i], b[i]) for i in range(len(a)))
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and _same(a[k], b[k]) for k in a)
    if type(a) is Tag:
        return a.tag == b.tag and _same(a.value, b.value)
    return a == b


def _error(data):
    try:
        decode(data)
    except CodecError as e:
        return str(e)
    raise AssertionError("no CodecError for %s" % bytes(data).hex())


def test_deterministic_vectors_decode():
    for v in section("cbor", "deterministic"):
        got = decode(bytes.fromhex(v["hex"]))
        assert _same(got, _value(v["value"])), (v["name"], got)


def test_deterministic_vectors_encode():
    for v in section("cbor", "deterministic"):
        assert encode(_value(v["value"])).hex() == v["hex"], v["name"]


def test_reject_vectors():
    for v in section("cbor", "reject"):
        msg = _error(bytes.fromhex(v["hex"]))
        assert v["error"] in msg, (v["name"], msg)


def test_encode_errors():
    for v in section("cbor", "encode_errors"):
        try:
            encode(v["value"])
        except CodecError as e:
            assert v["error"] in str(e), (v["name"], str(e))
        else:
            raise AssertionError(v["name"])
    for bad in (object(), {1, 2}, Tag(-1, 0), {1.5: 1}, {None: 1}, {(1,): 2}):
        try:
            encode(bad)
        except CodecError:
            pass
        else:
            raise AssertionError(bad)


def test_map_keys_sorted_bytewise():
    # 10 (0a) < 100 (1864) < -1 (20) < "a" (6161) < "aa" (626161) < b"" (40)? no: 40 < 6161
    m = {"aa": 5, -1: 3, 100: 2, 10: 1, "a": 4, b"": 6}
    assert encode(m).hex() == "a6" "0a01" "186402" "2003" "4006" "616104" "62616105"
    assert decode(encode(m)) == m
    # integer keys only take the fast path; same bytes as the general one
    assert encode({23: 0, 24: 0, 0: 0}).hex() == "a3" "0000" "1700" "181800"


def test_binary16_exhaustive():
    # every half-precision pattern either round-trips exactly or is a rejected NaN
    for bits in range(0x10000):
        data = b"\xf9" + bits.to_bytes(2, "big")
        e = (bits >> 10) & 0x1F
        if e == 0x1F and bits & 0x3FF and bits != 0x7E00:
            assert "NaN" in _error(data)
            continue
        assert encode(decode(data)) == data, hex(bits)


def test_random_binary64_patterns():
    for _ in range(400):
        raw = os.urandom(8)
        x = struct.unpack(">d", raw)[0]
        enc = encode(x)
        y = decode(enc)
        if x != x:
            assert enc == b"\xf9\x7e\x00" and y != y
        else:
            assert struct.pack(">d", y) == raw, raw.hex()
            # shortest: never longer than needed, and the head says which width
            assert enc[0] in (0xF9, 0xFA, 0xFB) and len(enc) in (3, 5, 9)


def test_every_truncation_is_rejected():
    value = {1: [1, -300, b"\x00" * 30, "text \u00fc", {"k": None}], 2: Tag(4, [-2, 7235]), 3: 1.1, 4: True}
    data = encode(value)
    assert _same(decode(data), value)
    for n in range(len(data)):
        assert "truncated" in _error(data[:n]), n


def test_encode_into_appends():
    buf = bytearray(b"\xaa")
    encode_into(buf, [1, "a"])
    assert bytes(buf) == b"\xaa\x82\x01\x61a"
    assert encode(bytearray(b"\x01")) == encode(b"\x01") == encode(memoryview(b"\x01"))
    assert encode((1, 2)) == encode([1, 2])


def test_limits():
    deep = 1
    for _ in range(17):
        deep = [deep]
    try:
        encode(deep)
    except CodecError as e:
        assert "nested" in str(e)
    else:
        raise AssertionError("no depth limit on encode")
    assert decode(encode([[[1]]]), max_depth=3) == [[[1]]]
    assert "nesting" in _error_with(encode([[[1]]]), max_depth=2)
    assert "limit" in _error_with(b"\x00" * 10, max_size=5)


def _error_with(data, **kw):
    try:
        decode(data, **kw)
    except CodecError as e:
        return str(e)
    raise AssertionError("no CodecError")


def test_random_input_raises_only_codec_error():
    # Whatever the bytes, the decoder returns a value or raises CodecError.
    seed = os.urandom(4)
    for i in range(1500):
        n = 1 + (i % 24)
        data = os.urandom(n)
        try:
            decode(data)
        except CodecError:
            pass
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError("%s from %s (seed %s)" % (type(e).__name__, data.hex(), seed.hex())) from e
