# COSE_Sign1 and signed records under MicroPython: the shared vectors in
# protocol/vectors/cose.json and records.json reproduced byte for byte from a
# fixed key and nonce, every tampered variant rejected with its reason, the
# size budget, and bad fields refused at the source.
import hashlib

from hemhub import record, record_verify
from hemhub.codec import CodecError, cose, cose_verify
from hemhub.codec.cbor import Tag, decode
from hemhub.crypto import p256
from vectors import section


def _keys(name):
    for keys in section(name, "keys"):
        return keys


def _signer(keys, key, k):
    s = p256.Signer(int(keys[key]["d"], 16))
    s.add_nonce(p256.precompute_fixed_k(int(k, 16)))
    return s


def _fields(v):
    # records.json "fields_notation" -> the dict record.encode_payload takes
    if isinstance(v, dict):
        if len(v) == 1 and "bytes" in v:
            return bytes.fromhex(v["bytes"])
        if len(v) == 1 and "decimal" in v:
            return tuple(v["decimal"])
        return {k: _fields(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_fields(x) for x in v]
    return v


def _close(got, want):
    # decoded fields against the vector's: decimals come back as floats
    if isinstance(want, dict):
        return all(_close(got.get(k), want[k]) for k in want) and all(k in want or k == "v" for k in got)
    if isinstance(want, (list,)):
        return len(got) == len(want) and all(_close(got[i], want[i]) for i in range(len(want)))
    if isinstance(want, tuple):
        want = want[0] / 10 ** (-want[1])
    if isinstance(want, float):
        return abs(got - want) <= 1e-9 * abs(want)
    return got == want


def _codec_error(fn, *args):
    try:
        fn(*args)
    except CodecError as e:
        return str(e)
    raise AssertionError("no CodecError")


def test_cose_sign1_vectors():
    keys = _keys("cose")
    for v in section("cose", "sign1"):
        payload = bytes.fromhex(v["payload"])
        aad = bytes.fromhex(v["external_aad"])
        assert bytes(cose.sig_structure(cose.PROTECTED_ES256, payload, aad)).hex() == v["sig_structure"]
        msg = cose.sign1(payload, _signer(keys, v["key"], v["k"]), aad)
        assert msg.hex() == v["cose"], v["name"]
        parsed = cose_verify.parse_sign1(msg)
        assert parsed.payload == payload and parsed.signature.hex() == v["signature"]
        pub = bytes.fromhex(keys[v["key"]]["public_key"])
        assert cose_verify.verify_sign1(parsed, pub, aad)
        assert not cose_verify.verify_sign1(parsed, pub, aad + b"x")


def test_cose_reject_vectors():
    for v in section("cose", "reject"):
        msg = _codec_error(cose_verify.parse_sign1, bytes.fromhex(v["hex"]))
        assert v["error"] in msg, (v["name"], msg)


def test_record_vectors_reproduce():
    keys = _keys("records")
    for v in section("records", "records"):
        fields = _fields(v["fields"])
        assert record.encode_payload(fields).hex() == v["payload"], v["name"]
        data = record.sign_record(fields, _signer(keys, v["key"], v["k"]))
        assert data.hex() == v["cose"], v["name"]
        assert len(data) == v["size"]


def test_record_vectors_open():
    keys = _keys("records")
    for v in section("records", "records"):
        pub = bytes.fromhex(keys[v["key"]]["public_key"])
        got, msg = record_verify.open_record(bytes.fromhex(v["cose"]), pub)
        want = _fields(v["fields"])
        assert got["v"] == 1
        for k in want:
            assert _close(got[k], want[k]), (v["name"], k, got[k])
        assert msg.payload.hex() == v["payload"]


def test_tampered_vectors_rejected():
    keys = _keys("records")
    for v in section("records", "tampered"):
        pub = bytes.fromhex(keys[v["verify_with"]]["public_key"])
        msg = _codec_error(record_verify.open_record, bytes.fromhex(v["cose"]), pub)
        assert v["error"] in msg, (v["name"], msg)


def test_flipped_bits_sample_rejected():
    # The host test flips every bit; here a spread sample, each a full verify.
    keys = _keys("records")
    v = next(section("records", "records"))
    data = bytes.fromhex(v["cose"])
    pub = bytes.fromhex(keys[v["key"]]["public_key"])
    for bit in range(3, len(data) * 8, 29):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        _codec_error(record_verify.open_record, bytes(bad), pub)


def test_typical_weight_reading_fits_256_bytes():
    s = p256.Signer(p256.generate_private_key())
    fields = {
        "hub": "HH1-2026-00042", "seq": 4000000000, "kind": "observations",
        "hub_time": 1767225605, "device_time": 1767225600,
        "peripheral": {"addr": b"\xa4\xc1\x38\x00\x00\x01", "addr_type": 1, "kind": "scale"},
        "observations": [{"mdc": 188736, "value": 72.35, "unit": "kg"}],
    }
    data = record.sign_record(fields, s)
    assert len(data) <= 256, len(data)
    got, _ = record_verify.open_record(data, s.public_key)
    assert got["seq"] == 4000000000 and got["peripheral"]["addr_type"] == 1


def test_float_values_become_decimals():
    def value(x):
        obs = {"mdc": 1, "value": x, "unit": "kg"}
        p = record.encode_payload({"hub": "h", "seq": 0, "kind": "observations", "hub_time": 0,
                                   "peripheral": {"addr": "gpio:1", "kind": "k"}, "observations": [obs]})
        return decode(p)[9][0][1]

    assert value(72.35) == Tag(4, [-2, 7235])
    assert value(14470 / 200) == Tag(4, [-2, 7235])
    assert value(36.6) == Tag(4, [-1, 366])
    assert value(98.0) == 98 and value(1500.0) == 1500 and value(-40) == -40
    assert value(0.00001) == Tag(4, [-5, 1])
    assert value(-0.5) == Tag(4, [-1, -5])
    assert value((3660, -2)) == Tag(4, [-2, 3660])  # an exact decimal keeps its zero
    assert value((12, 3)) == 12000


def _refused(fields, words):
    msg = _codec_error(record.encode_payload, fields)
    assert words in msg, (words, msg)


def test_bad_fields_are_refused():
    base = {"hub": "HH1-1", "seq": 1, "kind": "event", "hub_time": 5,
            "peripheral": {"addr": b"\x01\x02\x03\x04\x05\x06", "kind": "door"},
            "event": {"type": "door_open", "source": "door"}}
    assert decode(record.encode_payload(base))[3] == 1
    _refused(dict(base, colour="red"), "no field 'colour'")
    _refused(dict(base, kind="weather"), "kind must be one of")
    _refused({k: base[k] for k in base if k != "hub"}, "lacks required field hub")
    _refused(dict(base, seq=-1), "bad value")
    _refused(dict(base, hub=""), "bad value")
    _refused(dict(base, hub="x" * 65), "bad value")
    _refused(dict(base, peripheral={"addr": b"\x01\x02", "kind": "door"}), "bad value")
    _refused({k: base[k] for k in base if k != "peripheral"}, "lacks its peripheral")
    _refused(dict(base, kind="observations"), "must carry its observations field")
    _refused(dict(base, v=2), "version")
    obs = dict(base, kind="observations", event=None)
    _refused(dict(obs, observations=[]), "bad value")
    _refused(dict(obs, observations=[{"mdc": 1, "value": None, "unit": "%"}]), "reason exactly when")
    _refused(dict(obs, observations=[{"mdc": 1, "value": 5, "unit": "%", "reason": "nan"}]), "reason exactly when")
    _refused(dict(obs, observations=[{"mdc": 1, "value": float("nan"), "unit": "%"}]), "not a number")
    _refused(dict(obs, observations=[{"mdc": 1, "value": "72", "unit": "%"}]), "must be an int, a float")
    _refused(dict(obs, observations=[{"mdc": 1, "value": (1, 2, 3), "unit": "%"}]), "must be an int, a float")
    _refused(dict(obs, observations=[{"mdc": 1, "value": 1}] * 17), "bad value")
    gap = {"hub": "HH1-1", "seq": 9, "kind": "gap", "hub_time": 5}
    _refused(dict(gap, gap={"first": 3, "count": 1}), "both first and last")
    _refused(dict(gap, gap={"first": 3, "last": 9, "count": 7}), "must end before")
    assert decode(record.encode_payload(dict(gap, gap={"first": 3, "last": 8, "count": 6})))[12][1] == 8


def test_unsynced_flag_and_optional_fields():
    f = {"hub": "HH1-1", "seq": 3, "kind": "health", "hub_time": 40, "unsynced": False, "device_time": None,
         "health": {"type": "heartbeat", "uptime_s": 40}}
    wire = decode(record.encode_payload(f))
    assert 5 not in wire and 6 not in wire  # false and None mean absent
    f["unsynced"] = True
    got = record_verify.decode_payload(record.encode_payload(f))
    assert got["unsynced"] is True and got["health"] == {"type": "heartbeat", "uptime_s": 40}


def test_device_time_from_gatt_date_time():
    assert record.device_time((2026, 1, 1, 0, 0, 0)) == 1767225600
    assert record.device_time((1970, 1, 1, 0, 0, 1)) == 1
    assert record.device_time((2024, 2, 29, 23, 59, 59)) == 1709251199
    assert record.device_time((2000, 3, 1, 12, 0, 0)) == 951912000
    assert record.device_time((0, 5, 6, 1, 2, 3)) is None
    assert record.device_time((2026, 0, 6, 1, 2, 3)) is None
    assert record.device_time(None) is None


def test_record_digest_is_over_sig_structure():
    v = next(section("records", "records"))
    msg = cose_verify.parse_sign1(bytes.fromhex(v["cose"]))
    tbs = cose.sig_structure(msg.protected, msg.payload)
    assert msg.digest() == hashlib.sha256(tbs).digest()
    assert bytes(tbs[:12]).hex() == "846a5369676e617475726531"  # ["Signature1", ...
