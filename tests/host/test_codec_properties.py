"""Property tests for the shared codecs (hypothesis, CPython).

* totality: any bytes give a value or a CodecError, never another exception;
* round trips: encode(decode(x)) == x for every valid wire value, and
  decode(encode(v)) == v for values the encoders accept;
* agreement: our AES-CCM matches the `cryptography` package's.

Example counts are kept small: the whole file runs in a few seconds.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hemhub.codec import CodecError, aes_ccm, bthome, gatt
from hemhub.codec import bthome_encode as enc
from hemhub.codec.gatt import decode_float, decode_sfloat, medfloat_parts
from hemhub.codec.ieee11073_encode import encode_float, encode_sfloat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIALS = {"nan", "nres", "+inf", "-inf", "reserved"}
UUIDS = list(gatt.UUIDS)
KEY = bytes(range(16))
MAC = "A4:C1:38:12:34:56"


# ---- totality ----


@FAST
@given(uuid=st.sampled_from(UUIDS), data=st.binary(max_size=40))
def test_gatt_any_bytes_decode_or_codec_error(uuid, data):
    try:
        out = gatt.decode(uuid, data)
    except CodecError:
        return
    assert isinstance(out["observations"], list)
    for o in out["observations"]:
        assert set(o) <= {"mdc", "value", "unit", "reason", "group"}
        assert (o["value"] is None) == ("reason" in o)


@FAST
@given(uuid=st.sampled_from(UUIDS), flags=st.integers(0, 255), rest=st.binary(max_size=30))
def test_gatt_real_flags_decode_or_codec_error(uuid, flags, rest):
    try:
        gatt.decode(uuid, bytes([flags]) + rest)
    except CodecError:
        pass


@FAST
@given(data=st.binary(max_size=40))
def test_bthome_any_bytes(data):
    for fn in (bthome.parse, bthome.service_data, lambda d: bthome.decrypt_and_parse(MAC, d, KEY)):
        try:
            fn(data)
        except CodecError:
            pass


@FAST
@given(info=st.sampled_from([0x40, 0x44, 0x41, 0x45]), rest=st.binary(max_size=30))
def test_bthome_v2_info_byte_any_payload(info, rest):
    data = bytes([info]) + rest
    for rx in (bthome.BTHomeReceiver(MAC, KEY, "pendant"), bthome.BTHomeReceiver(MAC, None, "door")):
        try:
            out = rx.receive(data)
        except CodecError:
            continue
        assert out is None or out["version"] == 2


@FAST
@given(key=st.binary(min_size=0, max_size=33), nonce=st.binary(max_size=14), data=st.binary(max_size=40),
       aad=st.binary(max_size=20), mic_len=st.integers(0, 18))
def test_ccm_decrypt_any_input(key, nonce, data, aad, mic_len):
    try:
        out = aes_ccm.decrypt(key, nonce, data, aad, mic_len)
    except CodecError:
        return
    assert len(out) == len(data) - mic_len


# ---- IEEE 11073 round trips ----


@settings(max_examples=300, deadline=None)
@given(raw=st.integers(0, 0xFFFF))
def test_sfloat_pattern_round_trip(raw):
    b = raw.to_bytes(2, "little")
    value, reason = decode_sfloat(b)
    if value is None:
        assert reason in SPECIALS and encode_sfloat(reason) == b
    else:
        assert encode_sfloat(value, medfloat_parts(raw, 12)[1]) == b


@settings(max_examples=300, deadline=None)
@given(mantissa=st.integers(-(2**23), 2**23 - 1), exponent=st.integers(-22, 22))
def test_float_pattern_round_trip(mantissa, exponent):
    raw = ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)
    b = raw.to_bytes(4, "little")
    value, reason = decode_float(b)
    if value is None:
        assert reason in SPECIALS and encode_float(reason) == b
    else:
        assert medfloat_parts(raw, 24) == (mantissa, exponent)
        assert encode_float(value, exponent) == b


@FAST
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**9), 10**9),
       exponent=st.integers(-10, 10))
def test_encoders_value_or_codec_error(value, exponent):
    for encode, decode, step in ((encode_sfloat, decode_sfloat, 2), (encode_float, decode_float, 4)):
        try:
            b = encode(value, exponent)
        except CodecError:
            continue
        assert len(b) == step
        back, reason = decode(b)
        if back is not None and value == value and abs(value) != float("inf"):
            # quantised to the exponent's resolution
            assert abs(back - value) <= 0.5 * 10.0**exponent * (1 + 1e-9)


# ---- GATT time round trips ----

date_times = st.tuples(
    st.one_of(st.just(0), st.integers(1582, 9999)),
    st.integers(0, 12), st.integers(0, 31), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
)


@FAST
@given(t=date_times)
def test_date_time_round_trip(t):
    assert gatt.decode(0x2A08, gatt.encode_date_time(t))["time"] == t


@FAST
@given(t=date_times, dow=st.integers(0, 7), frac=st.integers(0, 255), reason=st.integers(0, 15))
def test_current_time_round_trip(t, dow, frac, reason):
    out = gatt.decode(0x2A2B, gatt.encode_current_time(t, dow, frac, reason))
    assert (out["time"], out["day_of_week"], out["fractions256"]) == (t, dow, frac)
    assert len(out["adjust_reason"]) == bin(reason).count("1")


# ---- BTHome round trips ----


def _object_bytes(oid: int):
    """Strategy: the wire bytes of one valid object with this id."""
    _, _, size, kind, _, _ = bthome._spec(oid)
    if kind == 2:  # binary
        return st.sampled_from([b"\x00", b"\x01"]).map(lambda v: bytes([oid]) + v)
    if kind == 5:  # text: valid UTF-8 with a length byte
        return st.text(max_size=8).map(lambda s: s.encode()).filter(lambda b: len(b) < 256).map(
            lambda b: bytes([oid, len(b)]) + b)
    if kind == 6:  # raw
        return st.binary(max_size=8).map(lambda b: bytes([oid, len(b)]) + b)
    return st.binary(min_size=size, max_size=size).map(lambda b: bytes([oid]) + b)


objects_wire = st.lists(st.sampled_from(list(bthome.object_ids())).flatmap(_object_bytes), max_size=6).map(b"".join)


@FAST
@given(payload=objects_wire, trigger=st.booleans())
def test_bthome_parse_then_encode_is_identity(payload, trigger):
    data = bytes([0x44 if trigger else 0x40]) + payload
    parsed = bthome.parse(data)
    assert parsed["unknown_id"] is None and parsed["trigger_based"] == trigger
    assert enc.encode([(oid, value) for oid, _, value in parsed["objects"]], trigger) == data


@FAST
@given(payload=objects_wire, counter=st.integers(0, 2**32 - 1), key=st.binary(min_size=16, max_size=16),
       mac=st.binary(min_size=6, max_size=6))
def test_bthome_encrypted_round_trip_and_reference(payload, counter, key, mac):
    objects = [(oid, v) for oid, _, v in bthome.parse(b"\x40" + payload)["objects"]]
    sealed = enc.encode_encrypted(mac, objects, key, counter)
    out = bthome.decrypt_and_parse(mac, sealed, key)
    assert out["counter"] == counter and bthome.parse(b"\x40" + payload)["objects"] == out["objects"]
    nonce = mac + b"\xd2\xfc\x41" + counter.to_bytes(4, "little")
    ref = AESCCM(key, tag_length=4).encrypt(nonce, payload, None)
    assert sealed == b"\x41" + ref[:-4] + counter.to_bytes(4, "little") + ref[-4:]


@FAST
@given(counters=st.lists(st.integers(0, 1000), min_size=1, max_size=12))
def test_receiver_accepts_only_increasing_counters(counters):
    rx = bthome.BTHomeReceiver(MAC, KEY, "pendant")
    accepted = []
    for c in counters:
        sealed = enc.encode_encrypted(MAC, [(0x3A, "press")], KEY, c)
        try:
            out = rx.receive(sealed)
        except CodecError:
            assert accepted and c < accepted[-1]
            continue
        if out is None:
            assert accepted and c == accepted[-1]
        else:
            assert not accepted or c > accepted[-1]
            accepted.append(c)
    assert accepted == sorted(set(accepted))


# ---- AES-CCM agreement ----


@FAST
@given(key=st.sampled_from([16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       nonce=st.integers(7, 13).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       msg=st.binary(max_size=70), aad=st.binary(max_size=40), mic_len=st.sampled_from([4, 6, 8, 10, 12, 14, 16]))
def test_ccm_matches_reference_and_round_trips(key, nonce, msg, aad, mic_len):
    sealed = aes_ccm.encrypt(key, nonce, msg, aad, mic_len)
    assert sealed == AESCCM(key, tag_length=mic_len).encrypt(nonce, msg, aad or None)
    assert aes_ccm.decrypt(key, nonce, sealed, aad, mic_len) == msg
