"""The shared codec vectors (protocol/vectors/) under CPython: the same files the
firmware tests run under MicroPython, so hub and host stay byte-compatible.

AES-CCM and BTHome encryption vectors are also checked against an independent
implementation (the `cryptography` package's AESCCM).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hemhub.codec import CodecError, aes_ccm, bthome, gatt, gatt_racp
from hemhub.codec import bthome_encode as enc
from hemhub.codec.gatt import decode_float, decode_sfloat
from hemhub.codec.ieee11073_encode import encode_float, encode_sfloat
from vectors import norm, same

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


IEEE = load("ieee11073.json")
GATT = load("gatt.json")
BTHOME = load("bthome.json")
CCM = load("aes_ccm.json")


def ids(vectors, key="name"):
    return [str(v.get(key, v.get("hex"))) for v in vectors]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# ---- IEEE 11073 ----


@pytest.mark.parametrize("v", IEEE["sfloat"], ids=ids(IEEE["sfloat"], "hex"))
def test_sfloat(v):
    value, reason = decode_sfloat(h(v["hex"]))
    assert reason == v["reason"]
    assert (value is None and v["value"] is None) or same(value, v["value"])


@pytest.mark.parametrize("v", IEEE["float"], ids=ids(IEEE["float"], "hex"))
def test_float(v):
    value, reason = decode_float(h(v["hex"]))
    assert reason == v["reason"]
    assert (value is None and v["value"] is None) or same(value, v["value"])


@pytest.mark.parametrize("v", IEEE["encode_sfloat"], ids=ids(IEEE["encode_sfloat"], "hex"))
def test_encode_sfloat(v):
    assert encode_sfloat(v["value"], v["exponent"]).hex() == v["hex"]


@pytest.mark.parametrize("v", IEEE["encode_float"], ids=ids(IEEE["encode_float"], "hex"))
def test_encode_float(v):
    assert encode_float(v["value"], v["exponent"]).hex() == v["hex"]


@pytest.mark.parametrize("v", IEEE["decode_errors"], ids=ids(IEEE["decode_errors"], "hex"))
def test_ieee_decode_errors(v):
    fn = decode_sfloat if v["codec"] == "sfloat" else decode_float
    with pytest.raises(CodecError, match=v["error"]):
        fn(h(v["hex"]))


@pytest.mark.parametrize("v", IEEE["encode_errors"], ids=ids(IEEE["encode_errors"], "value"))
def test_ieee_encode_errors(v):
    fn = encode_sfloat if v["codec"] == "sfloat" else encode_float
    with pytest.raises(CodecError, match=v["error"]):
        fn(v["value"], v["exponent"])


# ---- GATT ----


@pytest.mark.parametrize("v", GATT["decode"], ids=ids(GATT["decode"]))
def test_gatt_decode(v):
    got = norm(gatt.decode(int(v["uuid"], 16), h(v["hex"])))
    assert same(got, v["expect"]), got


@pytest.mark.parametrize("v", GATT["decode_errors"], ids=ids(GATT["decode_errors"]))
def test_gatt_decode_errors(v):
    with pytest.raises(CodecError, match=v["error"]):
        gatt.decode(int(v["uuid"], 16), h(v["hex"]))


def test_gatt_encoders():
    for v in GATT["encode_date_time"]:
        assert gatt.encode_date_time(tuple(v["time"])).hex() == v["hex"]
    for v in GATT["encode_date_time_errors"]:
        with pytest.raises(CodecError, match=v["error"]):
            gatt.encode_date_time(tuple(v["time"]))
    for v in GATT["encode_current_time"]:
        out = gatt.encode_current_time(tuple(v["time"]), v["day_of_week"], v["fractions256"], v["adjust_reason"])
        assert out.hex() == v["hex"]
    for v in GATT["encode_racp"]:
        assert gatt_racp.encode_racp(v["opcode"], v["operator"], h(v["operand"])).hex() == v["hex"]
    for v in GATT["encode_racp_errors"]:
        with pytest.raises(CodecError, match=v["error"]):
            gatt_racp.encode_racp(v["opcode"], v["operator"], h(v["operand"]))


# ---- BTHome ----


def obj_in(objects):
    return [(oid, h(val["hex"]) if isinstance(val, dict) else val) for oid, val in objects]


@pytest.mark.parametrize("v", BTHOME["parse"], ids=ids(BTHOME["parse"]))
def test_bthome_parse(v):
    assert same(norm(bthome.parse(h(v["hex"]))), v["expect"])


@pytest.mark.parametrize("v", BTHOME["objects"], ids=ids(BTHOME["objects"], "hex"))
def test_bthome_object(v):
    got = norm(bthome.parse(h(v["hex"])))["objects"]
    assert same(got, [v["object"]]), got
    oid, _, value = v["object"]
    assert enc.encode(obj_in([(oid, value)])).hex() == v["hex"]


@pytest.mark.parametrize("v", BTHOME["parse_errors"], ids=ids(BTHOME["parse_errors"]))
def test_bthome_parse_errors(v):
    with pytest.raises(CodecError, match=v["error"]):
        bthome.parse(h(v["hex"]))


def _reference_seal(mac: str, key: bytes, info: int, counter: int, payload: bytes) -> str:
    nonce = bthome.mac_bytes(mac) + b"\xd2\xfc" + bytes([info]) + counter.to_bytes(4, "little")
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, payload, None)
    return (bytes([info]) + sealed[:-4] + counter.to_bytes(4, "little") + sealed[-4:]).hex()


@pytest.mark.parametrize("v", BTHOME["encrypted"], ids=ids(BTHOME["encrypted"]))
def test_bthome_encrypted(v):
    key = h(v["key"])
    assert same(norm(bthome.decrypt_and_parse(v["mac"], h(v["hex"]), key)), v["expect"])
    objects = obj_in(v["objects_in"])
    trigger = v["expect"]["trigger_based"]
    assert enc.encode_encrypted(v["mac"], objects, key, v["counter"], trigger).hex() == v["hex"]
    info = h(v["hex"])[0]
    assert _reference_seal(v["mac"], key, info, v["counter"], enc.encode_objects(objects)) == v["hex"]


@pytest.mark.parametrize("v", BTHOME["decrypt_errors"], ids=ids(BTHOME["decrypt_errors"]))
def test_bthome_decrypt_errors(v):
    with pytest.raises(CodecError, match=v["error"]):
        bthome.decrypt_and_parse(v["mac"], h(v["hex"]), h(v["key"]))


@pytest.mark.parametrize("v", BTHOME["advertisements"], ids=ids(BTHOME["advertisements"]))
def test_bthome_advertisements(v):
    sd = bthome.service_data(h(v["adv"]))
    assert (None if sd is None else sd.hex()) == v["service_data"]
    if "encode" in v:
        e = v["encode"]
        assert enc.advertisement(enc.encode(obj_in(e["objects"])), e["local_name"]).hex() == v["adv"]


def test_bthome_advertisement_errors():
    for v in BTHOME["advertisement_errors"]:
        with pytest.raises(CodecError, match=v["error"]):
            bthome.service_data(h(v["adv"]))


@pytest.mark.parametrize("v", BTHOME["events"], ids=[f"{v['kind']}-{v['hex']}" for v in BTHOME["events"]])
def test_bthome_events(v):
    assert same(norm(bthome.events(v["kind"], bthome.parse(h(v["hex"])))), v["events"])


# ---- AES-CCM ----


@pytest.mark.parametrize("v", CCM["vectors"], ids=ids(CCM["vectors"]))
def test_ccm_vector(v):
    key, nonce, aad, pt = h(v["key"]), h(v["nonce"]), h(v["aad"]), h(v["plaintext"])
    assert aes_ccm.encrypt(key, nonce, pt, aad, v["mic_len"]).hex() == v["ciphertext"]
    assert aes_ccm.decrypt(key, nonce, h(v["ciphertext"]), aad, v["mic_len"]) == pt
    # the vector itself, by an independent implementation
    assert AESCCM(key, tag_length=v["mic_len"]).encrypt(nonce, pt, aad or None).hex() == v["ciphertext"]


@pytest.mark.parametrize("v", CCM["decrypt_errors"], ids=ids(CCM["decrypt_errors"]))
def test_ccm_decrypt_errors(v):
    with pytest.raises(CodecError, match=v["error"]):
        aes_ccm.decrypt(h(v["key"]), h(v["nonce"]), h(v["ciphertext"]), h(v["aad"]), v["mic_len"])
