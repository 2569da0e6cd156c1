"""The MQTT 3.1.1 codec and ack payloads under CPython: the same vectors the
firmware tests check under MicroPython (protocol/vectors/mqtt.json, uplink.json),
plus properties (hypothesis): any bytes parse to a packet or MqttError, never
another exception; encoded PUBLISH frames parse back to what was encoded; the
fleet's encoding of an ack (cbor2, canonical) is what the hub decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from hemhub.codec import CodecError
from hemhub.codec import mqtt as m
from hemhub.uplink.ack import decode_ack, topics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocol/vectors/mqtt.json").read_text())
UPLINK = json.loads((Path(__file__).resolve().parents[2] / "protocol/vectors/uplink.json").read_text())
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload(p: dict) -> bytes:
    return p["payload_text"].encode() if "payload_text" in p else bytes.fromhex(p["payload_hex"])


def encode(p: dict) -> bytes:
    buf = bytearray(2600)
    t = p["type"]
    if t == "connect":
        w = p["will"] or {}
        n = m.connect_into(buf, p["client_id"], p["keepalive"], p["clean"], w.get("topic"),
                           payload(w) if w else b"", w.get("qos", 0), w.get("retain", False),
                           p.get("username"),
                           p["password_text"].encode() if "password_text" in p else None)
    elif t == "publish":
        n = m.publish_into(buf, p["topic"], payload(p), p["qos"], p["pid"] or 0, p["dup"], p["retain"])
    elif t == "puback":
        n = m.puback_into(buf, p["pid"])
    elif t == "subscribe":
        n = m.subscribe_into(buf, p["pid"], [tuple(x) for x in p["topics"]])
    elif t == "pingreq":
        return m.PINGREQ
    elif t == "disconnect":
        return m.DISCONNECT
    else:
        raise AssertionError(t)
    return bytes(buf[:n])


def as_dict(pkt) -> dict:
    t = pkt[0]
    if t == m.CONNACK:
        return {"type": "connack", "session_present": pkt[1], "code": pkt[2]}
    if t == m.PUBLISH:
        return {"type": "publish", "topic": pkt[1], "payload_hex": bytes(pkt[2]).hex(), "qos": pkt[3],
                "pid": pkt[4], "dup": pkt[5], "retain": pkt[6]}
    if t == m.PUBACK:
        return {"type": "puback", "pid": pkt[1]}
    if t == m.SUBACK:
        return {"type": "suback", "pid": pkt[1], "codes": list(pkt[2])}
    if t == m.PINGRESP:
        return {"type": "pingresp"}
    raise AssertionError(pkt)


@pytest.mark.parametrize("v", VECTORS["encode"], ids=[v["name"] for v in VECTORS["encode"]])
def test_encode(v):
    assert encode(v["packet"]).hex() == v["hex"]


@pytest.mark.parametrize("v", VECTORS["remaining_length"], ids=[str(v["value"]) for v in VECTORS["remaining_length"]])
def test_remaining_length(v):
    buf = bytearray(4)
    n = m.encode_length_into(buf, 0, v["value"])
    assert buf[:n].hex() == v["hex"]
    assert m.decode_length(bytes.fromhex(v["hex"])) == (v["value"], n)


@pytest.mark.parametrize("v", VECTORS["remaining_length_errors"], ids=[v["name"] for v in VECTORS["remaining_length_errors"]])
def test_remaining_length_errors(v):
    with pytest.raises(m.MqttError, match=v["error"]):
        m.decode_length(bytes.fromhex(v["hex"]))


@pytest.mark.parametrize("v", VECTORS["decode"], ids=[v["name"] for v in VECTORS["decode"]])
def test_decode(v):
    assert as_dict(m.parse(bytes.fromhex(v["hex"]))) == v["expect"]


@pytest.mark.parametrize("v", VECTORS["decode_errors"], ids=[v["name"] for v in VECTORS["decode_errors"]])
def test_decode_errors(v):
    with pytest.raises(m.MqttError) as e:
        m.parse(bytes.fromhex(v["hex"]))
    assert v["error"] in str(e.value)


@FAST
@given(st.binary(max_size=64))
def test_any_bytes_give_a_packet_or_mqtt_error(data):
    try:
        m.parse(data)
    except m.MqttError:
        pass


@FAST
@given(st.sampled_from([0x20, 0x30, 0x31, 0x32, 0x34, 0x3A, 0x40, 0x90, 0xD0, 0xB0, 0x36]),
       st.binary(max_size=80))
def test_any_body_gives_a_packet_or_mqtt_error(first, body):
    buf = bytearray(8)
    n = m.encode_length_into(buf, 1, len(body))
    buf[0] = first
    try:
        m.parse(bytes(buf[:n]) + body)
    except m.MqttError:
        pass


TOPIC = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"),
                min_size=1, max_size=40)


@FAST
@given(TOPIC, st.binary(max_size=300), st.sampled_from([0, 1, 2]), st.integers(1, 65535),
       st.booleans(), st.booleans())
def test_publish_round_trip(topic, data, qos, pid, dup, retain):
    dup = dup and qos > 0
    buf = bytearray(2600)
    n = m.publish_into(buf, topic, data, qos, pid, dup, retain)
    pkt = m.parse(bytes(buf[:n]))
    assert pkt == (m.PUBLISH, topic, data, qos, pid if qos else None, dup, retain)


@pytest.mark.parametrize("v", UPLINK["ack"], ids=[v["name"] for v in UPLINK["ack"]])
def test_ack(v):
    acks, t = decode_ack(bytes.fromhex(v["hex"]))
    assert [list(a) for a in acks] == v["acks"] and t == v["time"]


@pytest.mark.parametrize("v", UPLINK["ack_invalid"], ids=[v["name"] for v in UPLINK["ack_invalid"]])
def test_ack_invalid(v):
    with pytest.raises(CodecError) as e:
        decode_ack(bytes.fromhex(v["hex"]))
    assert v["error"] in str(e.value)


@FAST
@given(st.lists(st.tuples(st.integers(1, 2**30 - 1), st.integers(0, 1000)), min_size=1, max_size=16),
       st.none() | st.integers(0, 2**32))
def test_fleet_encoded_ack_decodes(ranges, t):
    # The fleet encodes with cbor2 (canonical); the hub decodes the same ranges.
    acks = [[a, min(a + d, 2**30 - 1)] for a, d in ranges]
    msg = {"acks": acks} if t is None else {"acks": acks, "time": t}
    got, gt = decode_ack(cbor2.dumps(msg, canonical=True))
    assert [list(x) for x in got] == acks and gt == t


@FAST
@given(st.binary(max_size=600))
def test_any_ack_payload_gives_ranges_or_codec_error(data):
    try:
        decode_ack(data)
    except CodecError:
        pass


def test_topics():
    v = UPLINK["topics"][0]
    t = topics(v["hub"])
    assert all(t[k] == v[k] for k in ("alarm", "rec", "status", "ack"))
