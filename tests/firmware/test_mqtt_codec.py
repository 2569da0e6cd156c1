# MQTT 3.1.1 codec and application-ack payloads under MicroPython: the shared
# vectors in protocol/vectors/mqtt.json and uplink.json (the same files
# tests/host/test_mqtt_codec.py checks under CPython), every truncation of the
# valid frames, and random frames (a value or MqttError, nothing else).

from hemhub.codec.mqtt import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    MqttError,
    connect_into,
    decode_length,
    encode_length_into,
    parse,
    puback_into,
    publish_into,
    subscribe_into,
)
from hemhub.uplink.ack import decode_ack
from vectors import hexstr, rng, section

_BUF = bytearray(2600)


def _payload(p):
    if "payload_text" in p:
        return p["payload_text"].encode()
    return bytes.fromhex(p["payload_hex"])


def _encode(p):
    t = p["type"]
    if t == "connect":
        w = p["will"] or {}
        return connect_into(_BUF, p["client_id"], p["keepalive"], p["clean"], w.get("topic"),
                            _payload(w) if w else b"", w.get("qos", 0), w.get("retain", False),
                            p.get("username"), p["password_text"].encode() if "password_text" in p else None)
    if t == "publish":
        return publish_into(_BUF, p["topic"], _payload(p), p["qos"], p["pid"] or 0, p["dup"], p["retain"])
    if t == "puback":
        return puback_into(_BUF, p["pid"])
    if t == "subscribe":
        return subscribe_into(_BUF, p["pid"], [(f, q) for f, q in p["topics"]])
    if t == "pingreq":
        _BUF[:2] = PINGREQ
        return 2
    if t == "disconnect":
        _BUF[:2] = DISCONNECT
        return 2
    raise AssertionError("unknown packet type in vectors: %s" % t)


def _as_dict(pkt):
    t = pkt[0]
    if t == CONNACK:
        return {"type": "connack", "session_present": pkt[1], "code": pkt[2]}
    if t == PUBLISH:
        return {"type": "publish", "topic": pkt[1], "payload_hex": hexstr(bytes(pkt[2])), "qos": pkt[3],
                "pid": pkt[4], "dup": pkt[5], "retain": pkt[6]}
    if t == PUBACK:
        return {"type": "puback", "pid": pkt[1]}
    if t == SUBACK:
        return {"type": "suback", "pid": pkt[1], "codes": list(pkt[2])}
    if t == PINGRESP:
        return {"type": "pingresp"}
    raise AssertionError("parse returned an unknown packet %r" % (pkt,))


def _error(data):
    try:
        pkt = parse(data)
    except MqttError as e:
        return str(e)
    raise AssertionError("no MqttError for %s: %r" % (bytes(data).hex(), pkt))


def test_encode_vectors():
    count = 0
    for v in section("mqtt", "encode"):
        n = _encode(v["packet"])
        got = bytes(_BUF[:n]).hex()
        assert got == v["hex"], "%s: %s != %s" % (v["name"], got, v["hex"])
        count += 1
    assert count >= 10


def test_remaining_length_vectors():
    buf = bytearray(4)
    for v in section("mqtt", "remaining_length"):
        n = encode_length_into(buf, 0, v["value"])
        assert bytes(buf[:n]).hex() == v["hex"], v
        assert decode_length(bytes.fromhex(v["hex"])) == (v["value"], n), v
    for v in section("mqtt", "remaining_length_nonminimal"):
        data = bytes.fromhex(v["hex"])
        assert decode_length(data) == (v["value"], len(data)), v
    for v in section("mqtt", "remaining_length_errors"):
        try:
            decode_length(bytes.fromhex(v["hex"]))
        except MqttError as e:
            assert v["error"] in str(e), (v, str(e))
        else:
            raise AssertionError("no error for %s" % v["name"])


def test_decode_vectors():
    count = 0
    for v in section("mqtt", "decode"):
        got = _as_dict(parse(bytes.fromhex(v["hex"])))
        assert got == v["expect"], "%s: %r" % (v["name"], got)
        count += 1
    assert count >= 15


def test_decode_error_vectors():
    count = 0
    for v in section("mqtt", "decode_errors"):
        msg = _error(bytes.fromhex(v["hex"]))
        assert v["error"] in msg, "%s: %r lacks %r" % (v["name"], msg, v["error"])
        count += 1
    assert count >= 40


def test_every_truncation_is_an_error():
    # A frame cut anywhere short of its end is refused, never misread.
    for v in section("mqtt", "decode"):
        data = bytes.fromhex(v["hex"])
        for cut in range(len(data)):
            assert "truncated" in _error(data[:cut]), (v["name"], cut)


_FIRST = (0x20, 0x30, 0x31, 0x32, 0x3A, 0x40, 0x90, 0xD0)


def test_random_frames_value_or_error():
    r = rng(0x5EED)
    buf = bytearray(40)
    ok = err = 0
    for _ in range(3000):
        n = next(r) % 40
        for i in range(n):
            buf[i] = next(r) & 0xFF
        if n > 1 and next(r) & 3:
            # mostly server packet types with a consistent length, so bodies get parsed
            buf[0] = _FIRST[next(r) % len(_FIRST)]
            buf[1] = n - 2
        try:
            parse(bytes(buf[:n]))
            ok += 1
        except MqttError:
            err += 1
    assert ok and err


def test_ack_vectors():
    for v in section("uplink", "ack"):
        acks, t = decode_ack(bytes.fromhex(v["hex"]))
        assert [list(a) for a in acks] == v["acks"], v["name"]
        assert t == v["time"], v["name"]
    for v in section("uplink", "ack_invalid"):
        try:
            decode_ack(bytes.fromhex(v["hex"]))
        except ValueError as e:
            assert v["error"] in str(e), (v["name"], str(e))
        else:
            raise AssertionError("no error for ack %s" % v["name"])


def test_topics_vector():
    from hemhub.uplink.ack import topics

    for v in section("uplink", "topics"):
        t = topics(v["hub"])
        for k in ("alarm", "rec", "status", "ack"):
            assert t[k] == v[k], k
