"""GATT characteristic values -> dicts with normalised observations.

    decode(uuid16, data) -> dict

Every result has "characteristic" (a name) and "observations": a list of
    {"mdc": int, "value": int | float | None, "unit": UCUM str}
plus "reason" when value is None (an IEEE 11073 special value or the scale's
"measurement unsuccessful"), and "group": 150020 on the three blood pressure
components. Measurement results also carry "flags", "time" (a Date Time tuple
(year, month, day, hours, minutes, seconds), 0 = unknown date part; None when
the device sent none) and "user_id". Field by field: protocol/gatt.md. Units
are the device's own, as UCUM codes (FHIR PHD IG): a scale in pounds gives
"[lb_av]", a cuff in kPa "kPa", a thermometer in Fahrenheit "[degF]"; nothing
is converted, so nothing is rounded twice. The measurement parsers live in one
module per profile (gatt_weight, gatt_plx, gatt_bp, gatt_temp), loaded on
first use.

Bad input raises CodecError (truncated, trailing bytes, reserved values,
unsupported characteristic). This module also holds the small non-measurement
characteristics: Battery Level, Date Time, Current Time and the Record Access
Control Point (request encoders, response decoder).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import sys

from hemhub.codec import CodecError
from hemhub.codec.gatt_fields import Reader, decode_date_time, encode_date_time, time_iso
from hemhub.codec.names import bit_names, word, word_index

__all__ = (
    "decode",
    "decode_date_time",
    "encode_date_time",
    "encode_current_time",
    "encode_racp",
    "time_iso",
    "UUIDS",
)


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


def encode_current_time(t, day_of_week=0, fractions256=0, adjust_reason=0):
    """Date Time tuple (+ day of week, fractions, reason bits) -> 10 bytes Current Time."""
    if not 0 <= day_of_week <= 7:
        raise CodecError("day of week %r out of range (0..7)" % (day_of_week,))
    if not 0 <= fractions256 <= 255 or not 0 <= adjust_reason <= 255:
        raise CodecError("fractions256 and adjust_reason are uint8")
    return encode_date_time(t) + bytes((day_of_week, fractions256, adjust_reason))


# ---- Record Access Control Point 0x2A52 (GSS "Record Access Control Point";
# used by PLXS 3.4 and the Glucose / CGM services) ----

# name tables: a word's position is its code ("-" = RFU)
_RACP_OPCODES = (
    "- report_stored_records delete_stored_records abort_operation "
    "report_number_of_stored_records number_of_stored_records_response response_code"
)
_RACP_OPERATORS = "null all less_or_equal greater_or_equal within_range first last"
_RACP_RESPONSES = (
    "- success op_code_not_supported invalid_operator operator_not_supported invalid_operand "
    "no_records_found abort_unsuccessful procedure_not_completed operand_not_supported"
)
_OP_ABORT = const(3)
_OP_NUMBER_RESPONSE = const(5)
_OP_RESPONSE_CODE = const(6)
_OPERATOR_NULL = const(0)


def _code(table, key, what):
    if isinstance(key, int) and not isinstance(key, bool):
        if word(table, key) is not None:
            return key
    elif isinstance(key, str) and key != "-":
        code = word_index(table, key)
        if code >= 0:
            return code
    raise CodecError("unknown RACP %s %r" % (what, key))


def _name(table, code):
    return word(table, code) or "reserved"


def encode_racp(opcode, operator="all", operand=b""):
    """RACP request -> bytes: op code | operator | operand (filter parameters).

    opcode: "report_stored_records" (1), "delete_stored_records" (2),
    "abort_operation" (3, operator must be "null"),
    "report_number_of_stored_records" (4); names or numbers.
    operator: "all", "first", "last" (no operand) or "less_or_equal",
    "greater_or_equal", "within_range" (operand = filter type + values, as the
    service defines, e.g. b"\\x01" + uint16 sequence number for Glucose).
    """
    op = _code(_RACP_OPCODES, opcode, "op code")
    if op > 4:
        raise CodecError("RACP op code %d is a response, not a request" % op)
    oper = _code(_RACP_OPERATORS, operator, "operator")
    if op == _OP_ABORT:
        if oper != _OPERATOR_NULL or operand:
            raise CodecError("RACP abort takes operator null and no operand")
    elif oper == _OPERATOR_NULL:
        raise CodecError("RACP op code %d needs an operator other than null" % op)
    elif (oper in (2, 3, 4)) != bool(operand):
        raise CodecError("RACP operator %d %s an operand" % (oper, "needs" if oper in (2, 3, 4) else "takes no"))
    return bytes((op, oper)) + bytes(operand)


def racp(data):
    """RACP indication from the server -> response dict.

    Number of Stored Records Response (5): operator null, uint16 count
    (uint32 accepted too) -> {"opcode": "number_of_stored_records_response", "count": n}.
    Response Code (6): operator null, request op code, response code value ->
    {"opcode": "response_code", "request_opcode", "request", "response_code", "response"}.
    """
    r = Reader(data, "Record Access Control Point")
    op = r.u8()
    oper = r.u8()
    if op not in (_OP_NUMBER_RESPONSE, _OP_RESPONSE_CODE):
        raise CodecError("RACP op code %d is not a response (expected 5 or 6)" % op)
    if oper != _OPERATOR_NULL:
        raise CodecError("RACP response operator must be null (0), got %d" % oper)
    out = {"characteristic": "record_access_control_point", "opcode": _name(_RACP_OPCODES, op), "observations": []}
    if op == _OP_NUMBER_RESPONSE:
        size = len(data) - 2
        if size not in (2, 4):
            raise CodecError("RACP number of records needs a 2- or 4-byte operand, got %d bytes" % size)
        out["count"] = r.uint(size)
    else:
        req = r.u8()
        code = r.u8()
        out["request_opcode"] = req
        out["request"] = _name(_RACP_OPCODES, req)
        out["response_code"] = code
        out["response"] = _name(_RACP_RESPONSES, code)
    r.end()
    return out


# uuid16 -> parser: a function of this module, or (profile module, function):
# a profile's parsers are loaded for the first value of that profile, so a
# GATT link holds only its own device's (gatt_weight, gatt_plx, gatt_bp, gatt_temp).
UUIDS = (
    (0x2A9D, ("gatt_weight", "weight_measurement")),
    (0x2A9E, ("gatt_weight", "weight_scale_feature")),
    (0x2A5E, ("gatt_plx", "plx_spot_check")),
    (0x2A5F, ("gatt_plx", "plx_continuous")),
    (0x2A60, ("gatt_plx", "plx_features")),
    (0x2A35, ("gatt_bp", "blood_pressure_measurement")),
    (0x2A1C, ("gatt_temp", "temperature_measurement")),
    (0x2A19, battery_level),
    (0x2A08, date_time),
    (0x2A2B, current_time),
    (0x2A52, racp),
)


def decode(uuid16, data):
    """Characteristic value -> dict (see module doc); CodecError on bad input."""
    for uuid, parser in UUIDS:
        if uuid == uuid16:
            if isinstance(parser, tuple):
                parser = getattr(_profile(parser[0]), parser[1])
            return parser(data)
    raise CodecError("unsupported characteristic 0x%04X" % (uuid16,) if isinstance(uuid16, int) else "bad uuid16 %r" % (uuid16,))


def _profile(name):
    # hemhub.codec.<name>, imported on first use (sense.link_unload drops it)
    full = "hemhub.codec." + name
    mod = sys.modules.get(full)
    if mod is None:
        __import__(full)
        mod = sys.modules[full]
    return mod
