"""Application acknowledgements and topic names (protocol/uplink.md section 3).

    acks, fleet_time = decode_ack(payload)   # [(first, last), ...], int or None

Pure; raises CodecError (a ValueError) naming the problem. Vectors:
protocol/vectors/uplink.json.
"""
from hemhub.codec import CodecError

MAX_ACK_BYTES = 512
MAX_RANGES = 16
SEQ_MAX = 0x3FFFFFFF  # journal seqs stay below 2**30


def topics(hub_id):
    base = "hemhub/" + hub_id + "/"
    return {"alarm": base + "alarm", "rec": base + "rec", "status": base + "status",
            "ack": base + "ack"}


def decode_ack(payload):
    if len(payload) > MAX_ACK_BYTES:
        raise CodecError("ack payload of %d bytes is over the 512-byte limit" % len(payload))
    from hemhub.codec.cbor import decode

    try:
        m = decode(payload)
    except CodecError as e:
        raise CodecError("ack payload is not deterministic CBOR: %s" % e)  # noqa: B904
    if not isinstance(m, dict):
        raise CodecError("ack payload is not a map")
    acks = m.get("acks")
    if not isinstance(acks, list):
        raise CodecError("ack payload has no \"acks\" list")
    if not 1 <= len(acks) <= MAX_RANGES:
        raise CodecError("ack payload must list 1 to 16 ranges, not %d" % len(acks))
    out = []
    for r in acks:
        if not (isinstance(r, list) and len(r) == 2):
            raise CodecError("ack range %r is not a [first, last] pair" % (r,))
        a, b = r
        if not (type(a) is int and type(b) is int and 1 <= a <= b <= SEQ_MAX):
            raise CodecError("ack range %r is not 1 <= first <= last < 2**30" % (r,))
        out.append((a, b))
    t = m.get("time")
    if t is not None and not (type(t) is int and t >= 0):
        raise CodecError("ack time %r is not a non-negative integer" % (t,))
    return out, t
