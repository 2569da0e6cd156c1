"""MQTT 3.1.1 packets (OASIS Standard, 29 October 2014) for the hub's client.

Pure functions of bytes, shared by the hub (MicroPython) and host tests
(CPython); vectors in protocol/vectors/mqtt.json, rules in protocol/uplink.md.
Section numbers below are the OASIS document's.

Encoders write into a caller's preallocated buffer and return the length:

    n = connect_into(buf, client_id, keepalive, clean, will_topic, will_payload, will_qos, will_retain)
    n = publish_header_into(buf, topic, payload_len, qos, pid, dup, retain)   # payload follows
    n = publish_into(buf, topic, payload, qos, pid, dup, retain)
    n = puback_into(buf, pid);  n = subscribe_into(buf, pid, ((filter, qos), ...))
    PINGREQ, DISCONNECT (constant frames)

The parser takes what a *server* sends (CONNACK, PUBLISH, PUBACK, SUBACK,
PINGRESP) and returns a tuple whose first item is the packet type:

    (CONNACK, session_present, return_code)
    (PUBLISH, topic, payload, qos, pid_or_None, dup, retain)
    (PUBACK, pid) / (SUBACK, pid, codes) / (PINGRESP,)

    parse(frame, max_len)                   a whole frame (fixed header included)
    parse_body(first_byte, body)            after the client has read the header
    decode_length(data, off) -> (n, next)   the remaining length (2.2.3)

Anything else, anything malformed, anything longer than max_len raises
MqttError (a CodecError, a ValueError) naming the problem; nothing else
escapes. On any such error the client closes the connection (4.8).
"""
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.cbor import _utf8_valid

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ_TYPE = const(12)
PINGRESP = const(13)
DISCONNECT_TYPE = const(14)

MAX_PACKET = const(1024)  # largest remaining length the hub accepts (protocol/uplink.md 4)
_MAX_LENGTH = const(268435455)  # 2.2.3: four bytes of 7 bits

PINGREQ = b"\xc0\x00"  # 3.12
DISCONNECT = b"\xe0\x00"  # 3.14

# CONNACK return codes (3.2.2.3), index = code
CONNACK_REASONS = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)
SUBACK_FAILURE = const(0x80)


class MqttError(CodecError):
    """A malformed, unexpected or oversized MQTT packet (the connection must close)."""


# ---- encoding ------------------------------------------------------------------


def length_size(n):
    # Bytes the remaining length n takes (2.2.3).
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    return 4


def encode_length_into(buf, off, n):
    # 2.2.3: seven bits per byte, least significant first, bit 7 = more follows.
    if not 0 <= n <= _MAX_LENGTH:
        raise MqttError("remaining length %d is outside 0..268435455 (2.2.3)" % n)
    while True:
        d = n & 0x7F
        n >>= 7
        if n:
            d |= 0x80
        buf[off] = d
        off += 1
        if not n:
            return off


def _str_into(buf, off, s):
    # 1.5.3: two-byte length, then UTF-8 (at most 65535 bytes).
    b = s.encode() if isinstance(s, str) else s
    n = len(b)
    if n > 65535:
        raise MqttError("a string of %d bytes does not fit MQTT's 65535 (1.5.3)" % n)
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    buf[off + 2:off + 2 + n] = b
    return off + 2 + n


def _slen(s):
    return 2 + (len(s.encode()) if isinstance(s, str) else len(s))


def _room(buf, n):
    if len(buf) < n:
        raise MqttError("packet of %d bytes does not fit the %d-byte buffer" % (n, len(buf)))


def _check_pid(pid):
    if not 0 < pid <= 0xFFFF:
        raise MqttError("packet identifier %r is not 1..65535 (2.3.1)" % (pid,))


def connect_into(buf, client_id, keepalive, clean=False, will_topic=None, will_payload=b"",
                 will_qos=1, will_retain=True, username=None, password=None):
    # 3.1: CONNECT with protocol name "MQTT", level 4.
    if not 0 <= keepalive <= 0xFFFF:
        raise MqttError("keep alive %r is not 0..65535 s (3.1.2.10)" % (keepalive,))
    if will_qos not in (0, 1, 2):
        raise MqttError("will QoS %r is not 0, 1 or 2 (3.1.2.6)" % (will_qos,))
    flags = 0x02 if clean else 0
    rl = 10 + _slen(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        rl += _slen(will_topic) + _slen(will_payload)
    if username is not None:
        flags |= 0x80
        rl += _slen(username)
    if password is not None:
        if username is None:
            raise MqttError("a password needs a user name (3.1.2.9)")
        flags |= 0x40
        rl += _slen(password)
    _room(buf, 1 + length_size(rl) + rl)
    buf[0] = 0x10
    off = encode_length_into(buf, 1, rl)
    off = _str_into(buf, off, b"MQTT")
    buf[off] = 4  # protocol level 3.1.1 (3.1.2.2)
    buf[off + 1] = flags
    buf[off + 2] = keepalive >> 8
    buf[off + 3] = keepalive & 0xFF
    off = _str_into(buf, off + 4, client_id)
    if will_topic is not None:
        off = _str_into(buf, off, will_topic)
        off = _str_into(buf, off, will_payload)
    if username is not None:
        off = _str_into(buf, off, username)
    if password is not None:
        off = _str_into(buf, off, password)
    return off


def publish_header_into(buf, topic, payload_len, qos=1, pid=0, dup=False, retain=False):
    # 3.3: fixed header, topic name and (QoS > 0) packet identifier; the caller
    # sends the payload's payload_len bytes right after these.
    if qos not in (0, 1, 2):
        raise MqttError("QoS %r is not 0, 1 or 2 (3.3.1.2)" % (qos,))
    if qos:
        _check_pid(pid)
    elif dup:
        raise MqttError("DUP must be 0 at QoS 0 (3.3.1.1)")
    rl = _slen(topic) + (2 if qos else 0) + payload_len
    _room(buf, 1 + length_size(rl) + rl - payload_len)
    buf[0] = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    off = encode_length_into(buf, 1, rl)
    off = _str_into(buf, off, topic)
    if qos:
        buf[off] = pid >> 8
        buf[off + 1] = pid & 0xFF
        off += 2
    return off


def publish_into(buf, topic, payload, qos=1, pid=0, dup=False, retain=False):
    off = publish_header_into(buf, topic, len(payload), qos, pid, dup, retain)
    _room(buf, off + len(payload))
    buf[off:off + len(payload)] = payload
    return off + len(payload)


def puback_into(buf, pid):
    # 3.4
    _check_pid(pid)
    buf[0] = 0x40
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF
    return 4


def subscribe_into(buf, pid, filters):
    # 3.8: fixed header flags 0010; each filter followed by its requested QoS.
    _check_pid(pid)
    if not filters:
        raise MqttError("SUBSCRIBE needs at least one topic filter (3.8.3)")
    rl = 2
    for f, q in filters:
        if q not in (0, 1, 2):
            raise MqttError("requested QoS %r is not 0, 1 or 2 (3.8.3.1)" % (q,))
        rl += _slen(f) + 1
    _room(buf, 1 + length_size(rl) + rl)
    buf[0] = 0x82
    off = encode_length_into(buf, 1, rl)
    buf[off] = pid >> 8
    buf[off + 1] = pid & 0xFF
    off += 2
    for f, q in filters:
        off = _str_into(buf, off, f)
        buf[off] = q
        off += 1
    return off


# ---- parsing ---------------------------------------------------------------------


def decode_length(data, off=0):
    # 2.2.3: (remaining length, offset after it). At most four bytes; the
    # shortest form is not required by 3.1.1 and not enforced.
    n = 0
    shift = 0
    for i in range(4):
        if off + i >= len(data):
            raise MqttError("truncated remaining length")
        b = data[off + i]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, off + i + 1
        shift += 7
    raise MqttError("remaining length takes more than 4 bytes (2.2.3)")


def _u16(body, off):
    return (body[off] << 8) | body[off + 1]


def _pid(body, off, what):
    pid = _u16(body, off)
    if pid == 0:
        raise MqttError("%s with packet identifier 0 (2.3.1: identifiers are non-zero)" % what)
    return pid


def _flags(first, expected, what):
    # 2.2.2: reserved flag bits must be as listed; otherwise close the connection.
    if first & 0x0F != expected:
        raise MqttError("%s with fixed header flags 0x%x, expected 0x%x (2.2.2)"
                        % (what, first & 0x0F, expected))


def _topic(body, off, n):
    # 1.5.3, 3.3.2.1, 4.7.3: a topic name from a server.
    raw = bytes(body[off:off + n])
    if not n:
        raise MqttError("PUBLISH with an empty topic name (4.7.3)")
    if not _utf8_valid(raw):
        raise MqttError("PUBLISH topic is not well-formed UTF-8 (1.5.3)")
    if b"\x00" in raw:
        raise MqttError("PUBLISH topic contains U+0000 (1.5.3)")
    if b"+" in raw or b"#" in raw:
        raise MqttError("PUBLISH topic contains a wildcard character (3.3.2.1)")
    return raw.decode()


def parse_body(first, body):
    # The packet whose fixed header's first byte is `first` and whose
    # variable header and payload are `body` (bytes, bytearray or memoryview).
    t = first >> 4
    n = len(body)
    if t == PUBLISH:
        qos = (first >> 1) & 3
        dup = bool(first & 0x08)
        if qos == 3:
            raise MqttError("PUBLISH with QoS 3 (3.3.1.2: both QoS bits set is malformed)")
        if dup and not qos:
            raise MqttError("PUBLISH with DUP set at QoS 0 (3.3.1.1)")
        if n < 2:
            raise MqttError("PUBLISH too short for its topic length")
        tl = _u16(body, 0)
        end = 2 + tl
        if end > n:
            raise MqttError("PUBLISH topic of %d bytes runs past the %d-byte packet" % (tl, n))
        topic = _topic(body, 2, tl)
        pid = None
        if qos:
            if end + 2 > n:
                raise MqttError("PUBLISH at QoS %d without a packet identifier" % qos)
            pid = _pid(body, end, "PUBLISH")
            end += 2
        return (PUBLISH, topic, bytes(body[end:]), qos, pid, dup, bool(first & 1))
    if t == CONNACK:
        _flags(first, 0, "CONNACK")
        if n != 2:
            raise MqttError("CONNACK with remaining length %d, expected 2 (3.2)" % n)
        ack, code = body[0], body[1]
        if ack & 0xFE:
            raise MqttError("CONNACK with reserved acknowledge flag bits set (3.2.2.1)")
        if code >= len(CONNACK_REASONS):
            raise MqttError("CONNACK with unknown return code %d (3.2.2.3)" % code)
        if code and ack:
            raise MqttError("CONNACK refusal %d with session present set (3.2.2.2)" % code)
        return (CONNACK, bool(ack), code)
    if t == PUBACK:
        _flags(first, 0, "PUBACK")
        if n != 2:
            raise MqttError("PUBACK with remaining length %d, expected 2 (3.4)" % n)
        return (PUBACK, _pid(body, 0, "PUBACK"))
    if t == SUBACK:
        _flags(first, 0, "SUBACK")
        if n < 3:
            raise MqttError("SUBACK with remaining length %d: no return codes (3.9)" % n)
        pid = _pid(body, 0, "SUBACK")
        codes = bytes(body[2:])
        for c in codes:
            if c not in (0, 1, 2, SUBACK_FAILURE):
                raise MqttError("SUBACK return code 0x%02x is not 0, 1, 2 or 0x80 (3.9.3)" % c)
        return (SUBACK, pid, codes)
    if t == PINGRESP:
        _flags(first, 0, "PINGRESP")
        if n:
            raise MqttError("PINGRESP with remaining length %d, expected 0 (3.13)" % n)
        return (PINGRESP,)
    if t == 0 or t == 15:
        raise MqttError("reserved packet type %d (2.2.1)" % t)
    if t in (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ_TYPE, DISCONNECT_TYPE):
        raise MqttError("packet type %d is not sent by a server (2.2.1)" % t)
    if t in (PUBREC, PUBREL, PUBCOMP):
        raise MqttError("packet type %d belongs to QoS 2, which the hub does not use" % t)
    raise MqttError("unexpected packet type %d: the hub never asked for it" % t)


def parse(data, max_len=MAX_PACKET):
    # One whole frame, nothing after it.
    if not len(data):
        raise MqttError("truncated packet: no fixed header")
    n, off = decode_length(data, 1)
    if n > max_len:
        raise MqttError("packet too large: remaining length %d above the limit of %d" % (n, max_len))
    if off + n > len(data):
        raise MqttError("truncated packet: %d of %d body bytes" % (len(data) - off, n))
    if off + n < len(data):
        raise MqttError("trailing bytes after the packet")
    return parse_body(data[0], memoryview(data)[off:])
