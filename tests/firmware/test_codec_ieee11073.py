# IEEE 11073-20601 SFLOAT / FLOAT codec under MicroPython: the shared vectors in
# protocol/vectors/ieee11073.json, every 16-bit pattern, and a fuzz corpus.
import json

from hemhub.codec import CodecError
from hemhub.codec.gatt import decode_float, decode_sfloat, medfloat_parts
from hemhub.codec.ieee11073_encode import encode_float, encode_sfloat

_SPECIAL = ("nan", "nres", "+inf", "-inf", "reserved")


def _vectors():
    with open("protocol/vectors/ieee11073.json") as f:
        return json.load(f)


def _close(a, b):
    # int stays int; floats within 1e-9 relative (parsers may differ by an ulp)
    if b is None or a is None:
        return a is b
    if type(b) is int:
        return type(a) is int and a == b
    return type(a) is float and (a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b)))


def _raises(fn, *args):
    try:
        fn(*args)
    except CodecError as e:
        return str(e)
    raise AssertionError("no CodecError from %r%r" % (fn, args))


def test_sfloat_vectors():
    for v in _vectors()["sfloat"]:
        value, reason = decode_sfloat(bytes.fromhex(v["hex"]))
        assert _close(value, v["value"]) and reason == v["reason"], (v, value, reason)


def test_float_vectors():
    for v in _vectors()["float"]:
        value, reason = decode_float(bytes.fromhex(v["hex"]))
        assert _close(value, v["value"]) and reason == v["reason"], (v, value, reason)


def test_encode_vectors():
    vec = _vectors()
    for v in vec["encode_sfloat"]:
        assert encode_sfloat(v["value"], v["exponent"]).hex() == v["hex"], v
    for v in vec["encode_float"]:
        assert encode_float(v["value"], v["exponent"]).hex() == v["hex"], v


def test_error_vectors():
    vec = _vectors()
    dec = {"sfloat": decode_sfloat, "float": decode_float}
    enc = {"sfloat": encode_sfloat, "float": encode_float}
    for v in vec["decode_errors"]:
        msg = _raises(dec[v["codec"]], bytes.fromhex(v["hex"]))
        assert v["error"] in msg, (v, msg)
    for v in vec["encode_errors"]:
        msg = _raises(enc[v["codec"]], v["value"], v["exponent"])
        assert v["error"] in msg, (v, msg)


def test_offset_reads_inside_a_buffer():
    buf = b"\x00\x6e\xf1\x6e\x01\x00\xff"
    assert decode_sfloat(buf, 1) == (36.6, None)
    assert decode_float(buf, 3) == (36.6, None)
    assert "truncated" in _raises(decode_sfloat, buf, 6)
    assert "truncated" in _raises(decode_float, buf, 4)
    assert "truncated" in _raises(decode_sfloat, buf, -1)


def test_every_sfloat_pattern_decodes_and_round_trips():
    # All 65536 patterns: a number that re-encodes to itself, or a named special.
    specials = 0
    for raw in range(0x10000):
        b = bytes((raw & 0xFF, raw >> 8))
        value, reason = decode_sfloat(b)
        if value is None:
            assert reason in _SPECIAL, raw
            specials += 1
            assert encode_sfloat(reason) == b
            continue
        _, exponent = medfloat_parts(raw, 12)
        assert encode_sfloat(value, exponent) == b, (raw, value)
    assert specials == 5


def test_float_patterns_sampled_round_trip():
    seed = 0x1234567
    for _ in range(3000):
        seed ^= (seed << 13) & 0xFFFFFFFF
        seed ^= seed >> 17
        seed ^= (seed << 5) & 0xFFFFFFFF
        # keep exponents moderate so 10**-e stays exact on both interpreters
        raw = (seed & 0x00FFFFFF) | (((seed >> 24) % 21 - 10) & 0xFF) << 24
        b = bytes((raw & 0xFF, (raw >> 8) & 0xFF, (raw >> 16) & 0xFF, raw >> 24))
        value, reason = decode_float(b)
        if value is None:
            assert encode_float(reason) == b
            continue
        _, exponent = medfloat_parts(raw, 24)
        assert encode_float(value, exponent) == b, (hex(raw), value)


def test_fuzz_encoders_raise_only_codec_error():
    values = (0, 1, -1, 0.5, 1e300, -1e300, float("inf"), float("nan"), 2047, -2048, 8388607, "x", None, True, [1])
    for value in values:
        for exponent in (-129, -128, -8, -1, 0, 1, 7, 8, 127):
            for enc in (encode_sfloat, encode_float):
                try:
                    out = enc(value, exponent)
                except CodecError:
                    continue
                assert len(out) in (2, 4)
