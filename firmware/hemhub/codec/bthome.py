"""BTHome v2 service data (16-bit UUID 0xFCD2): parse and decrypt.

Encoders for the simulated devices live in bthome_encode.py (host side).

Format reference: https://bthome.io/format (BTHome v2) and
https://bthome.io/encryption; normative summary in protocol/bthome.md.

Every function here takes the *service data after the UUID*, i.e. starting at
the BTHome Device Information byte:

    plain:      info | objects...
    encrypted:  info | AES-CCM(objects) | counter (uint32 LE) | MIC (4)

MAC addresses are 6 bytes in the order they are written ("54:48:E6:8F:80:A5"
-> b"\\x54\\x48\\xe6\\x8f\\x80\\xa5"), which is the order the encryption nonce uses;
a "AA:BB:CC:DD:EE:FF" string is accepted too.

parse / decrypt_and_parse return

    {"version": 2, "encrypted": bool, "trigger_based": bool,
     "packet_id": int or None, "objects": [(object_id, name, value), ...],
     "unknown_id": None or the first object id this table does not know,
     "counter": int}                      # counter: encrypted adverts only

Objects keep advert order (a device with two buttons sends 0x3A twice). An
unknown object id stops parsing (its length is unknown); the objects before it
are kept and "unknown_id" names it. Stateless: duplicate and replay filtering
live in BTHomeReceiver at the end of this module.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError, aes_ccm
from hemhub.codec.names import word

UUID16 = const(0xFCD2)
_UUID_LE = b"\xd2\xfc"
_AD_SERVICE_DATA16 = const(0x16)

# Device Information byte (bthome.io/format, "BTHome Device Information")
_INFO_ENCRYPTED = const(0x01)  # bit 0
_INFO_TRIGGER = const(0x04)  # bit 2: trigger based device (irregular adverts)
_VERSION = const(2)  # bits 5-7
_COUNTER_LEN = const(4)
_MIC_LEN = const(4)

# Value kinds
_U = const(0)  # unsigned little-endian integer, times mul / div
_S = const(1)  # signed
_B = const(2)  # binary sensor: 0x00 False, 0x01 True
_BTN = const(3)  # button event
_DIM = const(4)  # dimmer event + steps
_TXT = const(5)  # length-prefixed UTF-8
_RAW = const(6)  # length-prefixed bytes

# The object table (bthome.io/format: "Sensor data", "Binary sensor data",
# "Events", "Device information"), packed to save RAM: 3 bytes per object,
# (object id, data length (0 = length-prefixed), kind << 4 | factor code),
# and _NAMES holds the names in the same order, one space apart.
# value = raw * mul / div with (mul, div) = _FACTORS[factor code]; an int
# when the factor is 1.
_OBJ = (
    b"\x00\x01\x00"  # 0x00 packet_id: uint8
    b"\x01\x01\x00"  # 0x01 battery: uint8 %
    b"\x02\x02\x12"  # 0x02 temperature: sint16 /100 Cel
    b"\x03\x02\x02"  # 0x03 humidity: uint16 /100 %
    b"\x04\x03\x02"  # 0x04 pressure: uint24 /100 hPa
    b"\x05\x03\x02"  # 0x05 illuminance: uint24 /100 lx
    b"\x06\x02\x02"  # 0x06 mass_kg: uint16 /100
    b"\x07\x02\x02"  # 0x07 mass_lb: uint16 /100
    b"\x08\x02\x12"  # 0x08 dewpoint: sint16 /100 Cel
    b"\x09\x01\x00"  # 0x09 count: uint8
    b"\x0a\x03\x03"  # 0x0A energy: uint24 /1000 kWh
    b"\x0b\x03\x02"  # 0x0B power: uint24 /100 W
    b"\x0c\x02\x03"  # 0x0C voltage: uint16 /1000 V
    b"\x0d\x02\x00"  # 0x0D pm2_5: uint16 ug/m3
    b"\x0e\x02\x00"  # 0x0E pm10: uint16 ug/m3
    b"\x0f\x01\x20"  # 0x0F generic_boolean: binary
    b"\x10\x01\x20"  # 0x10 power_on: binary
    b"\x11\x01\x20"  # 0x11 opening: binary
    b"\x12\x02\x00"  # 0x12 co2: uint16 ppm
    b"\x13\x02\x00"  # 0x13 tvoc: uint16 ug/m3
    b"\x14\x02\x02"  # 0x14 moisture: uint16 /100 %
    b"\x15\x01\x20"  # 0x15 battery_low: binary
    b"\x16\x01\x20"  # 0x16 battery_charging: binary
    b"\x17\x01\x20"  # 0x17 carbon_monoxide: binary
    b"\x18\x01\x20"  # 0x18 cold: binary
    b"\x19\x01\x20"  # 0x19 connectivity: binary
    b"\x1a\x01\x20"  # 0x1A door: binary
    b"\x1b\x01\x20"  # 0x1B garage_door: binary
    b"\x1c\x01\x20"  # 0x1C gas: binary
    b"\x1d\x01\x20"  # 0x1D heat: binary
    b"\x1e\x01\x20"  # 0x1E light: binary
    b"\x1f\x01\x20"  # 0x1F lock: binary
    b"\x20\x01\x20"  # 0x20 moisture_detected: binary
    b"\x21\x01\x20"  # 0x21 motion: binary
    b"\x22\x01\x20"  # 0x22 moving: binary
    b"\x23\x01\x20"  # 0x23 occupancy: binary
    b"\x24\x01\x20"  # 0x24 plug: binary
    b"\x25\x01\x20"  # 0x25 presence: binary
    b"\x26\x01\x20"  # 0x26 problem: binary
    b"\x27\x01\x20"  # 0x27 running: binary
    b"\x28\x01\x20"  # 0x28 safety: binary
    b"\x29\x01\x20"  # 0x29 smoke: binary
    b"\x2a\x01\x20"  # 0x2A sound: binary
    b"\x2b\x01\x20"  # 0x2B tamper: binary
    b"\x2c\x01\x20"  # 0x2C vibration: binary
    b"\x2d\x01\x20"  # 0x2D window: binary
    b"\x2e\x01\x00"  # 0x2E humidity: uint8
    b"\x2f\x01\x00"  # 0x2F moisture: uint8
    b"\x3a\x01\x30"  # 0x3A button: button event
    b"\x3c\x02\x40"  # 0x3C dimmer: dimmer event, steps
    b"\x3d\x02\x00"  # 0x3D count: uint16
    b"\x3e\x04\x00"  # 0x3E count: uint32
    b"\x3f\x02\x11"  # 0x3F rotation: sint16 /10 deg
    b"\x40\x02\x00"  # 0x40 distance_mm: uint16
    b"\x41\x02\x01"  # 0x41 distance_m: uint16 /10
    b"\x42\x03\x03"  # 0x42 duration: uint24 /1000 s
    b"\x43\x02\x03"  # 0x43 current: uint16 /1000 A
    b"\x44\x02\x02"  # 0x44 speed: uint16 /100 m/s
    b"\x45\x02\x11"  # 0x45 temperature: sint16 /10
    b"\x46\x01\x01"  # 0x46 uv_index: uint8 /10
    b"\x47\x02\x01"  # 0x47 volume_l: uint16 /10
    b"\x48\x02\x00"  # 0x48 volume_ml: uint16
    b"\x49\x02\x03"  # 0x49 volume_flow_rate: uint16 /1000 m3/h
    b"\x4a\x02\x01"  # 0x4A voltage: uint16 /10
    b"\x4b\x03\x03"  # 0x4B gas: uint24 /1000 m3
    b"\x4c\x04\x03"  # 0x4C gas: uint32 /1000
    b"\x4d\x04\x03"  # 0x4D energy: uint32 /1000
    b"\x4e\x04\x03"  # 0x4E volume_l: uint32 /1000
    b"\x4f\x04\x03"  # 0x4F water: uint32 /1000 L
    b"\x50\x04\x00"  # 0x50 timestamp: uint32 s since 1970-01-01 UTC
    b"\x51\x02\x03"  # 0x51 acceleration: uint16 /1000 m/s2
    b"\x52\x02\x03"  # 0x52 gyroscope: uint16 /1000 deg/s
    b"\x53\x00\x50"  # 0x53 text: text
    b"\x54\x00\x60"  # 0x54 raw: raw
    b"\x55\x04\x03"  # 0x55 volume_storage: uint32 /1000 L
    b"\x56\x02\x00"  # 0x56 conductivity: uint16 uS/cm
    b"\x57\x01\x10"  # 0x57 temperature: sint8
    b"\x58\x01\x14"  # 0x58 temperature: sint8 *0.35 factor 0.35
    b"\x59\x01\x10"  # 0x59 count: sint8
    b"\x5a\x02\x10"  # 0x5A count: sint16
    b"\x5b\x04\x10"  # 0x5B count: sint32
    b"\x5c\x04\x12"  # 0x5C power: sint32 /100
    b"\x5d\x02\x13"  # 0x5D current: sint16 /1000
    b"\x5e\x02\x02"  # 0x5E direction: uint16 /100 deg
    b"\x5f\x02\x01"  # 0x5F precipitation: uint16 /10 mm
    b"\x60\x01\x00"  # 0x60 channel: uint8
    b"\x61\x02\x00"  # 0x61 rotational_speed: uint16 rpm
    b"\xf0\x02\x00"  # 0xF0 device_type_id: uint16
    b"\xf1\x04\x00"  # 0xF1 firmware_version: uint32
    b"\xf2\x03\x00"  # 0xF2 firmware_version: uint24
)
_NAMES = (
    "packet_id battery temperature humidity pressure illuminance mass_kg mass_lb dewpoint "
    "count energy power voltage pm2_5 pm10 generic_boolean power_on opening co2 tvoc moisture "
    "battery_low battery_charging carbon_monoxide cold connectivity door garage_door gas heat "
    "light lock moisture_detected motion moving occupancy plug presence problem running safety "
    "smoke sound tamper vibration window humidity moisture button dimmer count count rotation "
    "distance_mm distance_m duration current speed temperature uv_index volume_l volume_ml "
    "volume_flow_rate voltage gas gas energy volume_l water timestamp acceleration gyroscope "
    "text raw volume_storage conductivity temperature temperature count count count power "
    "current direction precipitation channel rotational_speed device_type_id firmware_version "
    "firmware_version"
)
_FACTORS = ((1, 1), (1, 10), (1, 100), (1, 1000), (7, 20))

# Event names (bthome.io/format, "Events"), name tables as in names.py.
# Button: codes 0x00..0x06 by position, and 0x80 hold_press.
_BUTTON_EVENTS = "none press double_press triple_press long_press long_double_press long_triple_press"
_BUTTON_HOLD = const(0x80)
# Dimmer: event by position; the second byte is the number of steps (uint8)
_DIMMER_EVENTS = "none rotate_left rotate_right"


def _spec(object_id):
    """object id -> (id, name, length, kind, mul, div), or None if unknown."""
    obj = _OBJ
    for k in range(0, len(obj), 3):
        if obj[k] == object_id:
            mul, div = _FACTORS[obj[k + 2] & 0x0F]
            return (object_id, word(_NAMES, k // 3), obj[k + 1], obj[k + 2] >> 4, mul, div)
    return None


def object_ids():
    """All object ids this table knows, ascending."""
    return bytes(_OBJ[k] for k in range(0, len(_OBJ), 3))


def _event_name(table, code):
    # An event this table does not know is still an event: keep it, named by
    # its code, so a newer pendant's press is never dropped.
    return word(table, code) or "event_0x%02x" % code


def _uint(p, i, n):
    v = 0
    for k in range(n):
        v |= p[i + k] << (8 * k)
    return v


def _value(entry, p, i, n):
    oid, name, _, kind, mul, div = entry
    if kind == _U or kind == _S:
        v = _uint(p, i, n)
        if kind == _S and v >= 1 << (8 * n - 1):
            v -= 1 << (8 * n)
        if mul == 1 and div == 1:
            return v
        return v * mul / div
    if kind == _B:
        v = p[i]
        if v > 1:
            raise CodecError("object 0x%02x (%s): binary value must be 0 or 1, got %d" % (oid, name, v))
        return v == 1
    if kind == _BTN:
        return "hold_press" if p[i] == _BUTTON_HOLD else _event_name(_BUTTON_EVENTS, p[i])
    if kind == _DIM:
        return (_event_name(_DIMMER_EVENTS, p[i]), p[i + 1])
    if kind == _TXT:
        try:
            return bytes(p[i : i + n]).decode("utf-8")
        except (UnicodeError, ValueError):
            raise CodecError("object 0x%02x (text) is not valid UTF-8" % oid) from None
    return bytes(p[i : i + n])


def parse_objects(payload):
    """Decrypted/plain object bytes -> (objects, packet_id, unknown_id)."""
    objects = []
    packet_id = None
    i = 0
    n = len(payload)
    while i < n:
        oid = payload[i]
        entry = _spec(oid)
        if entry is None:
            return objects, packet_id, oid
        i += 1
        size = entry[2]
        if size == 0:  # text / raw: one length byte first
            if i >= n:
                raise CodecError("object 0x%02x (%s) truncated: length byte missing" % (oid, entry[1]))
            size = payload[i]
            i += 1
        if i + size > n:
            raise CodecError(
                "object 0x%02x (%s) truncated: needs %d bytes, %d left" % (oid, entry[1], size, n - i)
            )
        value = _value(entry, payload, i, size)
        i += size
        if oid == 0x00:
            packet_id = value
        objects.append((oid, entry[1], value))
    return objects, packet_id, None


def _info(service_data):
    if len(service_data) < 1:
        raise CodecError("BTHome service data is empty (no device information byte)")
    info = service_data[0]
    version = info >> 5
    if version != _VERSION:
        raise CodecError("unsupported BTHome version %d in device information 0x%02x" % (version, info))
    return info


def _result(info, payload):
    objects, packet_id, unknown = parse_objects(payload)
    return {
        "version": _VERSION,
        "encrypted": bool(info & _INFO_ENCRYPTED),
        "trigger_based": bool(info & _INFO_TRIGGER),
        "packet_id": packet_id,
        "objects": objects,
        "unknown_id": unknown,
    }


def is_encrypted(service_data):
    """True when the device information byte has the encryption flag (bit 0)."""
    return bool(_info(service_data) & _INFO_ENCRYPTED)


def parse(service_data):
    """Unencrypted BTHome v2 service data -> result dict (see module doc)."""
    info = _info(service_data)
    if info & _INFO_ENCRYPTED:
        raise CodecError("BTHome advert is encrypted: use decrypt_and_parse with the device key")
    return _result(info, memoryview(service_data)[1:])


def mac_bytes(mac):
    """6 address bytes (written order) from bytes or an 'AA:BB:CC:DD:EE:FF' string."""
    if isinstance(mac, str):
        try:
            mac = bytes.fromhex(mac.replace(":", "").replace("-", ""))
        except ValueError:
            raise CodecError("bad MAC address %r" % (mac,)) from None
    if len(mac) != 6:
        raise CodecError("MAC address must be 6 bytes, got %d" % len(mac))
    return bytes(mac)


def _nonce(mac, info, counter_bytes):
    # bthome.io/encryption: MAC (6) | UUID 0xFCD2 little-endian | info | counter (4)
    return mac + _UUID_LE + bytes((info,)) + bytes(counter_bytes)


def _key(key):
    if len(key) != 16:
        raise CodecError("BTHome key must be 16 bytes, got %d" % len(key))
    return key


def decrypt_and_parse(mac, service_data, key):
    """Encrypted BTHome v2 service data -> result dict with "counter" (uint32).

    Raises CodecError when the advert is not encrypted, too short, or its MIC
    does not verify with this key and MAC.
    """
    mac = mac_bytes(mac)
    key = _key(key)
    info = _info(service_data)
    if not info & _INFO_ENCRYPTED:
        raise CodecError("BTHome advert is not encrypted")
    n = len(service_data)
    if n < 1 + _COUNTER_LEN + _MIC_LEN:
        raise CodecError("encrypted BTHome advert truncated: %d bytes, need at least 9" % n)
    mv = memoryview(service_data)
    counter_bytes = mv[n - 8 : n - 4]
    payload = aes_ccm.decrypt(
        key, _nonce(mac, info, counter_bytes), bytes(mv[1 : n - 8]) + bytes(mv[n - 4 :]), b"", _MIC_LEN
    )
    result = _result(info, payload)
    result["counter"] = _uint(counter_bytes, 0, 4)
    return result


def service_data(adv):
    """BTHome service data (after the UUID) from an advertising payload, or None.

    Walks the AD structures (Core Supplement Part A, section 1): length, type, data.
    """
    i = 0
    n = len(adv)
    while i < n:
        length = adv[i]
        if length == 0:  # early end of significant data
            return None
        if i + 1 + length > n:
            raise CodecError("AD structure at offset %d truncated: length %d, %d bytes left" % (i, length, n - i - 1))
        if adv[i + 1] == _AD_SERVICE_DATA16 and length >= 3 and adv[i + 2] == 0xD2 and adv[i + 3] == 0xFC:
            return bytes(adv[i + 4 : i + 1 + length])
        i += 1 + length
    return None


# ---- alarms: device kind -> which objects raise which event (protocol/bthome.md) ----

# (kind, ((object id, event), ...)); "*" applies to every kind.
_KIND_EVENTS = (
    ("pendant", ((0x3A, "sos"), (0x0F, "sos"))),
    ("fall", ((0x0F, "fall"), (0x3A, "fall"))),
    ("door", ((0x1A, "door"), (0x11, "opening"), (0x2D, "window"))),
    ("motion", ((0x21, "motion"), (0x23, "occupancy"))),
    ("*", ((0x2B, "tamper"), (0x15, "battery_low"), (0x29, "smoke"), (0x17, "carbon_monoxide"), (0x1C, "gas"))),
)
_STATE_EVENTS = ("door", "opening", "window")  # reported open (True) and closed (False)


def events(kind, result):
    """Alarm-class events in a parsed advert for an enrolled device kind.

    Returns [(event, object_name, value), ...]: triggers ("sos", "fall",
    "tamper", ...) only when active (boolean True, button event other than
    "none"); door/opening/window states both ways (True = open).
    """
    out = []
    for k, table in _KIND_EVENTS:
        if k != kind and k != "*":
            continue
        for oid, name, value in result["objects"]:
            for t_oid, event in table:
                if t_oid != oid:
                    continue
                if event in _STATE_EVENTS or (value is not False and value != "none"):
                    out.append((event, name, value))
    return out


class BTHomeReceiver:
    """Per enrolled device: rejects replays and downgrades, drops duplicates.

    receive(service_data) returns the parsed result for a fresh advert, None for
    a duplicate (same counter, or same packet id as the last accepted advert),
    and raises CodecError when the advert must be rejected: MIC failure, counter
    lower than the last accepted one (replay, or a device reset that needs
    re-enrolment), an unencrypted advert from a device enrolled with a key, or an
    encrypted one from a device enrolled without. State changes only on accept.
    """

    def __init__(self, mac, key=None, kind=None):
        self.mac = mac_bytes(mac)
        self.key = None if key is None else _key(bytes(key))
        self.kind = kind
        self.last_counter = None
        self.last_packet_id = None

    def receive(self, service_data):
        encrypted = is_encrypted(service_data)
        if self.key is not None:
            if not encrypted:
                raise CodecError("unencrypted BTHome advert from a device enrolled with a key (downgrade)")
            result = decrypt_and_parse(self.mac, service_data, self.key)
            counter = result["counter"]
            if self.last_counter is not None:
                if counter == self.last_counter:
                    return None
                if counter < self.last_counter:
                    raise CodecError(
                        "BTHome counter %d is below the last accepted %d: replay, or the device "
                        "was reset and must be re-enrolled" % (counter, self.last_counter)
                    )
        else:
            if encrypted:
                raise CodecError("encrypted BTHome advert from a device enrolled without a key")
            result = parse(service_data)
            counter = None
        pid = result["packet_id"]
        if pid is not None and pid == self.last_packet_id:
            if counter is not None:
                self.last_counter = counter
            return None
        self.last_counter = counter
        self.last_packet_id = pid
        return result
