# GATT characteristic codecs under MicroPython: the shared vectors in
# protocol/vectors/gatt.json and a fuzz corpus (every input yields a dict or a
# CodecError, nothing else).
from hemhub.codec import CodecError, gatt, gatt_racp
from vectors import codec_error as _error
from vectors import load
from vectors import norm as _norm
from vectors import rng as _rng
from vectors import same as _same


def test_decode_vectors():
    for v in load("gatt")["decode"]:
        got = _norm(gatt.decode(int(v["uuid"], 16), bytes.fromhex(v["hex"])))
        assert _same(got, v["expect"]), (v["name"], got)


def test_decode_error_vectors():
    for v in load("gatt")["decode_errors"]:
        msg = _error(gatt.decode, int(v["uuid"], 16), bytes.fromhex(v["hex"]))
        assert v["error"] in msg, (v["name"], msg)


def test_decode_accepts_bytearray_and_memoryview():
    raw = bytes.fromhex("0e9b38e807050e13291101ea00e006")
    a = gatt.decode(0x2A9D, raw)
    assert gatt.decode(0x2A9D, bytearray(raw)) == a
    assert gatt.decode(0x2A9D, memoryview(raw)) == a


def test_time_encoders():
    vec = load("gatt")
    for v in vec["encode_date_time"]:
        assert gatt.encode_date_time(tuple(v["time"])).hex() == v["hex"]
        assert list(gatt.decode_date_time(bytes.fromhex(v["hex"]))) == v["time"]
    for v in vec["encode_date_time_errors"]:
        assert v["error"] in _error(gatt.encode_date_time, tuple(v["time"]))
    for v in vec["encode_current_time"]:
        out = gatt.encode_current_time(tuple(v["time"]), v["day_of_week"], v["fractions256"], v["adjust_reason"])
        assert out.hex() == v["hex"], v


def test_time_iso():
    assert gatt.time_iso((2024, 5, 14, 19, 41, 17)) == "2024-05-14T19:41:17"
    assert gatt.time_iso((0, 5, 14, 19, 41, 17)) is None
    assert gatt.time_iso(None) is None


def test_racp_encoders():
    vec = load("gatt")
    for v in vec["encode_racp"]:
        out = gatt_racp.encode_racp(v["opcode"], v["operator"], bytes.fromhex(v["operand"]))
        assert out.hex() == v["hex"], v
    for v in vec["encode_racp_errors"]:
        msg = _error(gatt_racp.encode_racp, v["opcode"], v["operator"], bytes.fromhex(v["operand"]))
        assert v["error"] in msg, (v, msg)


def _check_all_uuids(data):
    for uuid in gatt.UUIDS:
        try:
            out = gatt.decode(uuid, data)
        except CodecError:
            continue
        assert isinstance(out, dict) and isinstance(out["observations"], list)
        for o in out["observations"]:
            assert (o["value"] is None) == ("reason" in o), o


def test_fuzz_random_corpus():
    # 400 pseudo-random values, lengths 0..31, first byte biased to real flag values
    rng = _rng(0x5EED)
    for i in range(400):
        n = next(rng) % 32
        data = bytearray(next(rng) & 0xFF for _ in range(n))
        if n and i % 2:
            data[0] &= 0x1F
        _check_all_uuids(bytes(data))


def test_fuzz_mutated_vectors():
    # every prefix, one flipped byte and one appended byte of every vector
    rng = _rng(0xFACE)
    for v in load("gatt")["decode"]:
        good = bytes.fromhex(v["hex"])
        for cut in range(len(good)):
            _check_all_uuids(good[:cut])
        if good:
            bad = bytearray(good)
            bad[next(rng) % len(bad)] ^= 1 << (next(rng) % 8)
            _check_all_uuids(bytes(bad))
        _check_all_uuids(good + bytes((next(rng) & 0xFF,)))
