"""Health Thermometer measurement characteristics (HTS v1.0 section 3.1; field
layouts from the GATT Specification Supplement) -> the dicts hemhub.codec.gatt
describes. Loaded by gatt.decode for the first value of this profile, so a GATT
link holds only its own device's parsers. Units are the device's own (UCUM)."""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec.gatt import Reader, observation
from hemhub.codec.names import word

# IEEE 11073-10101 nomenclature codes (MDC), as in SYSTEM.md section 7
_MDC_TEMP_BODY = const(150364)

# Temperature Type (GSS "Temperature Type" 0x2A1D), codes 1..9; others RFU
_TEMP_TYPES = "- armpit body ear finger gastrointestinal_tract mouth rectum toe tympanum"


def temperature_measurement(data):
    """Temperature Measurement 0x2A1C (HTS v1.0 3.1; GSS).

    flags bit 0 units (0 Celsius, 1 Fahrenheit), bit 1 Time Stamp, bit 2
    Temperature Type; value FLOAT (medfloat32); Temperature Type uint8 as a
    name, "reserved" for RFU codes.
    """
    r = Reader(data, "Temperature Measurement")
    flags = r.u8()
    obs = [observation(_MDC_TEMP_BODY, r.float32(), "[degF]" if flags & 0x01 else "Cel")]
    time = r.date_time() if flags & 0x02 else None
    ttype = None
    if flags & 0x04:
        code = r.u8()
        ttype = word(_TEMP_TYPES, code) or "reserved"
    r.end()
    return {
        "characteristic": "temperature_measurement",
        "flags": flags,
        "time": time,
        "user_id": None,
        "temperature_type": ttype,
        "observations": obs,
    }
