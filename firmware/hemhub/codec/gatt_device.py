"""Characteristics about the device rather than the patient -> the dicts
hemhub.codec.gatt describes: Battery Level, Date Time and Current Time.
Loaded by gatt.decode for the first value of one of them: a link reads the
battery level as one byte and sets the clock with gatt.encode_current_time,
so a hub seldom decodes these; the host tools (hubctl ble) do."""

from hemhub.codec import CodecError
from hemhub.codec.gatt import Reader
from hemhub.codec.names import bit_names


def battery_level(data):
    """Battery Level 0x2A19 (BAS v1.1 3.1; GSS): uint8 percent 0..100."""
    r = Reader(data, "Battery Level")
    level = r.u8()
    r.end()
    if level > 100:
        raise CodecError("Battery Level %d out of range (0..100)" % level)
    return {"characteristic": "battery_level", "battery_level": level, "observations": []}


def date_time(data):
    """Date Time 0x2A08 (GSS "Date Time"), 7 bytes."""
    r = Reader(data, "Date Time")
    t = r.date_time()
    r.end()
    return {"characteristic": "date_time", "time": t, "observations": []}


_ADJUST_REASONS = "manual_time_update external_reference_time_update change_of_time_zone change_of_dst"


def current_time(data):
    """Current Time 0x2A2B (CTS v1.1 3.1; GSS "Current Time"), 10 bytes:
    Date Time (7), Day of Week (0 unknown, 1 Monday .. 7 Sunday),
    Fractions256, Adjust Reason bit field."""
    r = Reader(data, "Current Time")
    t = r.date_time()
    dow = r.u8()
    frac = r.u8()
    reason = r.u8()
    r.end()
    if dow > 7:
        raise CodecError("Current Time day of week %d out of range (0..7)" % dow)
    return {
        "characteristic": "current_time",
        "time": t,
        "day_of_week": dow,
        "fractions256": frac,
        "adjust_reason": bit_names(reason, _ADJUST_REASONS),
        "observations": [],
    }
