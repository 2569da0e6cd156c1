# BTHome v2 codec under MicroPython: the shared vectors in
# protocol/vectors/bthome.json, the receiver's replay/duplicate rules, and a
# fuzz corpus (every input yields a result or a CodecError, nothing else).
from hemhub.codec import CodecError, bthome
from hemhub.codec import bthome_encode as enc
from vectors import codec_error as _error
from vectors import load
from vectors import norm as _norm
from vectors import rng as _rng
from vectors import same as _same

_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
_MAC = "A4:C1:38:12:34:56"


def _obj_in(objects):
    # JSON [id, value] pairs -> encoder input; raw values arrive as {"hex": ...}
    out = []
    for oid, value in objects:
        if isinstance(value, dict):
            value = bytes.fromhex(value["hex"])
        out.append((oid, value))
    return out


def test_parse_vectors():
    for v in load("bthome")["parse"]:
        got = _norm(bthome.parse(bytes.fromhex(v["hex"])))
        assert _same(got, v["expect"]), (v["name"], got)


def test_object_vectors_decode_and_encode():
    for v in load("bthome")["objects"]:
        got = _norm(bthome.parse(bytes.fromhex(v["hex"])))["objects"]
        assert _same(got, [v["object"]]), (v, got)
        oid, _, value = v["object"]
        if isinstance(value, str) and value.startswith("event_"):
            value = int(value[6:], 16)
        elif isinstance(value, dict):
            value = bytes.fromhex(value["hex"])
        assert enc.encode([(oid, value)]).hex() == v["hex"], v


def test_parse_error_vectors():
    for v in load("bthome")["parse_errors"]:
        msg = _error(bthome.parse, bytes.fromhex(v["hex"]))
        assert v["error"] in msg, (v["name"], msg)


def test_encrypted_vectors_decrypt_and_encrypt():
    for v in load("bthome")["encrypted"]:
        key = bytes.fromhex(v["key"])
        got = _norm(bthome.decrypt_and_parse(v["mac"], bytes.fromhex(v["hex"]), key))
        assert _same(got, v["expect"]), (v["name"], got)
        sealed = enc.encode_encrypted(v["mac"], _obj_in(v["objects_in"]), key, v["counter"], v["expect"]["trigger_based"])
        assert sealed.hex() == v["hex"], v["name"]


def test_decrypt_error_vectors():
    for v in load("bthome")["decrypt_errors"]:
        msg = _error(bthome.decrypt_and_parse, v["mac"], bytes.fromhex(v["hex"]), bytes.fromhex(v["key"]))
        assert v["error"] in msg, (v["name"], msg)


def test_advertisement_vectors():
    vec = load("bthome")
    for v in vec["advertisements"]:
        sd = bthome.service_data(bytes.fromhex(v["adv"]))
        assert (None if sd is None else sd.hex()) == v["service_data"], v["name"]
        if "encode" in v:
            e = v["encode"]
            assert enc.advertisement(enc.encode(_obj_in(e["objects"])), e["local_name"]).hex() == v["adv"]
    for v in vec["advertisement_errors"]:
        assert v["error"] in _error(bthome.service_data, bytes.fromhex(v["adv"]))


def test_event_vectors():
    for v in load("bthome")["events"]:
        got = _norm(bthome.events(v["kind"], bthome.parse(bytes.fromhex(v["hex"]))))
        assert _same(got, v["events"]), (v, got)


def test_encoder_rejects_bad_values():
    for objects in ([(0x02, 400.0)], [(0x01, -1)], [(0x1A, 2)], [(0x3A, "wiggle")], [(0x3C, 3)], [(0x77, 1)], [(0x53, b"x")]):
        _error(enc.encode, objects)
    _error(enc.encode_encrypted, _MAC, [(1, 50)], _KEY, -1)
    _error(enc.advertisement, bytes(30))


def _sealed(counter, objects, trigger=True):
    return enc.encode_encrypted(_MAC, objects, _KEY, counter, trigger)


def test_receiver_encrypted_counter_rules():
    rx = bthome.BTHomeReceiver(_MAC, _KEY, "pendant")
    first = _sealed(10, [(0x00, 1), (0x3A, "press")])
    r = rx.receive(first)
    assert r["counter"] == 10 and bthome.events("pendant", r) == [("sos", "button", "press")]
    assert rx.receive(first) is None  # the same advert again: duplicate, dropped
    # same packet id, newer counter (a re-broadcast of one event): duplicate
    assert rx.receive(_sealed(11, [(0x00, 1), (0x3A, "press")])) is None
    assert rx.last_counter == 11
    assert "below the last accepted" in _error(rx.receive, _sealed(9, [(0x00, 2), (0x3A, "press")]))
    assert rx.receive(_sealed(12, [(0x00, 2), (0x3A, "long_press")]))["packet_id"] == 2
    # a forged advert (wrong key) is rejected and changes nothing
    forged = enc.encode_encrypted(_MAC, [(0x00, 3)], bytes(16), 99, True)
    assert "MIC mismatch" in _error(rx.receive, forged)
    assert rx.last_counter == 12 and rx.last_packet_id == 2
    # downgrade: plaintext from a keyed device
    assert "downgrade" in _error(rx.receive, enc.encode([(0x00, 4), (0x3A, "press")]))


def test_receiver_plain_device():
    rx = bthome.BTHomeReceiver("54:48:E6:8F:80:A5", None, "door")
    a = enc.encode([(0x00, 1), (0x1A, True)])
    assert bthome.events("door", rx.receive(a)) == [("door", "door", True)]
    assert rx.receive(a) is None
    assert rx.receive(enc.encode([(0x00, 2), (0x1A, False)]))["objects"][1] == (0x1A, "door", False)
    # without a packet id every advert is new
    b = enc.encode([(0x1A, True)])
    assert rx.receive(b) is not None and rx.receive(b) is not None
    assert "without a key" in _error(rx.receive, _sealed(1, [(0x1A, True)]))


def _check(data):
    for fn in (bthome.parse, bthome.service_data):
        try:
            out = fn(data)
        except CodecError:
            continue
        assert out is None or isinstance(out, (dict, bytes))
    try:
        bthome.decrypt_and_parse(_MAC, data, _KEY)
    except CodecError:
        pass


def test_fuzz_random_corpus():
    # 400 pseudo-random service data, half of them with a valid v2 info byte
    rng = _rng(0xB7B7)
    for i in range(400):
        n = next(rng) % 24
        data = bytearray(next(rng) & 0xFF for _ in range(n))
        if n and i % 2:
            data[0] = 0x40 | (data[0] & 0x05)
        _check(bytes(data))


def test_fuzz_mutated_vectors():
    rng = _rng(0x1D1D)
    vec = load("bthome")
    corpus = [v["hex"] for v in vec["parse"]] + [v["hex"] for v in vec["objects"]] + [v["hex"] for v in vec["encrypted"]]
    for hx in corpus:
        good = bytes.fromhex(hx)
        for cut in range(len(good)):
            _check(good[:cut])
        bad = bytearray(good)
        bad[next(rng) % len(bad)] ^= 1 << (next(rng) % 8)
        _check(bytes(bad))
        _check(good + bytes((next(rng) & 0xFF,)))


def test_fuzz_receiver_never_raises_anything_else():
    rng = _rng(0x7777)
    rx_keyed = bthome.BTHomeReceiver(_MAC, _KEY, "fall")
    rx_plain = bthome.BTHomeReceiver(_MAC, None, "door")
    for i in range(200):
        if i % 3 == 0:
            data = _sealed(next(rng) % 50, [(0x00, next(rng) & 0xFF), (0x0F, bool(i & 1))])
        else:
            data = bytes(next(rng) & 0xFF for _ in range(next(rng) % 16))
        for rx in (rx_keyed, rx_plain):
            try:
                out = rx.receive(data)
            except CodecError:
                continue
            assert out is None or isinstance(out, dict)
