"""BTHome v2 encoders: spec-exact service data and advertisements for the
simulated BTHome devices on the host (door sensor, pendant, fall detector) and
for tests. Kept out of bthome.py so the hub, which only receives, does not
spend RAM on them. Same object table as bthome.py (bthome.io/format).

    encode([(object_id, value), ...], trigger_based=False) -> service data
    encode_encrypted(mac, objects, key, counter, trigger_based=False) -> service data
    advertisement(service_data, name=None) -> legacy advertising payload

Values are given the way bthome.parse returns them: numbers in the object's
unit (encoded as round(value / factor)), booleans for binary sensors, event
names (or codes) for buttons, (event, steps) for dimmers, str for text, bytes
for raw.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError, aes_ccm
from hemhub.codec.bthome import _BUTTON_EVENTS, _DIMMER_EVENTS, _key, _nonce, _spec, mac_bytes
from hemhub.codec.names import word_index

# Value kinds, as in bthome.py
_U = const(0)
_S = const(1)
_B = const(2)
_BTN = const(3)
_DIM = const(4)
_TXT = const(5)
_BUTTON_HOLD = const(0x80)  # hold_press, the one button code not in sequence

_INFO_ENCRYPTED = const(0x01)
_INFO_TRIGGER = const(0x04)
_VERSION = const(2)
_MIC_LEN = const(4)
_AD_FLAGS = b"\x02\x01\x06"  # Flags: LE General Discoverable, BR/EDR not supported
_AD_SERVICE_DATA16 = const(0x16)
_AD_COMPLETE_NAME = const(0x09)
_ADV_MAX = const(31)  # legacy advertising payload
_UUID_LE = b"\xd2\xfc"


def _event_code(table, value, what):
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
        return value
    if isinstance(value, str):
        code = word_index(table, value)
        if code >= 0:
            return code
        if value.startswith("event_0x") and len(value) == 10:
            try:  # the name bthome.parse gives an event code it does not know
                return int(value[8:], 16)
            except ValueError:
                pass
    raise CodecError("unknown %s event %r" % (what, value))


def _put_uint(out, v, n):
    for _ in range(n):
        out.append(v & 0xFF)
        v >>= 8


def _round_half_away(x):
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def _number(oid, name, size, kind, mul, div, value, out):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError("object 0x%02x (%s) needs a number, not %r" % (oid, name, value))
    if mul == 1 and div == 1 and isinstance(value, int):
        raw = value
    else:
        try:
            raw = _round_half_away(value * div / mul)
        except (OverflowError, ValueError):
            raise CodecError("object 0x%02x (%s): %r is not a finite number" % (oid, name, value)) from None
    bits = 8 * size
    lo, hi = (0, (1 << bits) - 1) if kind == _U else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not lo <= raw <= hi:
        raise CodecError("object 0x%02x (%s): %r out of range" % (oid, name, value))
    _put_uint(out, raw & ((1 << bits) - 1), size)


def encode_objects(objects):
    """[(object_id, value), ...] -> object bytes, in the order given."""
    out = bytearray()
    for oid, value in objects:
        entry = _spec(oid)
        if entry is None:
            raise CodecError("unknown BTHome object id 0x%02x" % oid)
        _, name, size, kind, mul, div = entry
        out.append(oid)
        if kind == _U or kind == _S:
            _number(oid, name, size, kind, mul, div, value, out)
        elif kind == _B:
            if value not in (0, 1):  # True/False compare equal to 1/0
                raise CodecError("object 0x%02x (%s) needs a boolean, not %r" % (oid, name, value))
            out.append(1 if value else 0)
        elif kind == _BTN:
            out.append(_BUTTON_HOLD if value == "hold_press" else _event_code(_BUTTON_EVENTS, value, "button"))
        elif kind == _DIM:
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise CodecError("dimmer value must be (event, steps), not %r" % (value,))
            out.append(_event_code(_DIMMER_EVENTS, value[0], "dimmer"))
            steps = value[1]
            if not isinstance(steps, int) or not 0 <= steps <= 0xFF:
                raise CodecError("dimmer steps %r outside 0..255" % (steps,))
            out.append(steps)
        else:
            if kind == _TXT:
                if not isinstance(value, str):
                    raise CodecError("object 0x%02x (text) needs a str, not %r" % (oid, value))
                data = value.encode("utf-8")
            else:
                if not isinstance(value, (bytes, bytearray)):
                    raise CodecError("object 0x%02x (raw) needs bytes, not %r" % (oid, value))
                data = bytes(value)
            if len(data) > 0xFF:
                raise CodecError("object 0x%02x (%s) longer than 255 bytes" % (oid, name))
            out.append(len(data))
            out.extend(data)
    return bytes(out)


def _info_byte(encrypted, trigger_based):
    return (_VERSION << 5) | (_INFO_TRIGGER if trigger_based else 0) | (_INFO_ENCRYPTED if encrypted else 0)


def encode(objects, trigger_based=False):
    """Objects -> unencrypted service data (after the UUID): info | objects."""
    return bytes((_info_byte(False, trigger_based),)) + encode_objects(objects)


def encode_encrypted(mac, objects, key, counter, trigger_based=False):
    """Objects -> encrypted service data: info | ciphertext | counter (uint32 LE) | MIC.

    bthome.io/encryption: AES-CCM, nonce = MAC | UUID 0xFCD2 LE | info | counter,
    4-byte MIC, no associated data.
    """
    if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter <= 0xFFFFFFFF:
        raise CodecError("BTHome counter %r outside uint32" % (counter,))
    info = _info_byte(True, trigger_based)
    counter_bytes = bytearray()
    _put_uint(counter_bytes, counter, 4)
    sealed = aes_ccm.encrypt(_key(key), _nonce(mac_bytes(mac), info, counter_bytes), encode_objects(objects), b"", _MIC_LEN)
    return bytes((info,)) + sealed[:-_MIC_LEN] + bytes(counter_bytes) + sealed[-_MIC_LEN:]


def advertisement(service_data, name=None):
    """Legacy advertising payload: Flags, optional Complete Local Name, Service
    Data 0xFCD2, in the order of the bthome.io/format example."""
    out = bytearray(_AD_FLAGS)
    if name:
        raw = name.encode("utf-8")
        out.append(1 + len(raw))
        out.append(_AD_COMPLETE_NAME)
        out.extend(raw)
    out.append(3 + len(service_data))
    out.append(_AD_SERVICE_DATA16)
    out.extend(_UUID_LE)
    out.extend(service_data)
    if len(out) > _ADV_MAX:
        raise CodecError("advertisement of %d bytes exceeds the 31-byte legacy limit" % len(out))
    return bytes(out)
