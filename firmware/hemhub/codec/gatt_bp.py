"""Blood Pressure measurement characteristics (BLS v1.1.1 section 3.1; field
layouts from the GATT Specification Supplement) -> the dicts hemhub.codec.gatt
describes. Loaded by gatt.decode for the first value of this profile, so a GATT
link holds only its own device's parsers. Units are the device's own (UCUM)."""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec.gatt import Reader, observation
from hemhub.codec.names import bit_names, word

# IEEE 11073-10101 nomenclature codes (MDC), as in SYSTEM.md section 7
_MDC_PRESS_BLD_NONINV = const(150020)
_MDC_PRESS_BLD_NONINV_SYS = const(150021)
_MDC_PRESS_BLD_NONINV_DIA = const(150022)
_MDC_PRESS_BLD_NONINV_MEAN = const(150023)
_MDC_PULS_RATE_NON_INV = const(149546)  # pulse rate from a BP cuff

_BP_STATUS = "body_movement cuff_too_loose irregular_pulse"  # bits 0-2
_BP_PULSE_RANGE = "- pulse_rate_exceeds_upper_limit pulse_rate_below_lower_limit -"  # bits 3-4
_BP_IMPROPER_POSITION = const(0x20)  # bit 5


def blood_pressure_measurement(data):
    """Blood Pressure Measurement 0x2A35 (BLS v1.1.1 3.1; GSS).

    flags bit 0 units (0 mmHg, 1 kPa), bit 1 Time Stamp, bit 2 Pulse Rate,
    bit 3 User ID, bit 4 Measurement Status. Systolic, Diastolic, Mean Arterial
    Pressure SFLOAT; Pulse Rate SFLOAT; User ID uint8 (255 = unknown user);
    Measurement Status uint16: bit 0 body movement, 1 cuff too loose,
    2 irregular pulse, 3-4 pulse rate range (1 above, 2 below), 5 improper
    position. The three pressures carry "group": 150020 (the compound).
    """
    r = Reader(data, "Blood Pressure Measurement")
    flags = r.u8()
    unit = "kPa" if flags & 0x01 else "mm[Hg]"
    obs = []
    for mdc in (_MDC_PRESS_BLD_NONINV_SYS, _MDC_PRESS_BLD_NONINV_DIA, _MDC_PRESS_BLD_NONINV_MEAN):
        o = observation(mdc, r.sfloat(), unit)
        o["group"] = _MDC_PRESS_BLD_NONINV
        obs.append(o)
    time = r.date_time() if flags & 0x02 else None
    if flags & 0x04:
        obs.append(observation(_MDC_PULS_RATE_NON_INV, r.sfloat(), "/min"))
    user = r.u8() if flags & 0x08 else None
    status = None
    if flags & 0x10:
        s = r.uint(2)
        status = bit_names(s, _BP_STATUS)  # names in bit order
        rng = word(_BP_PULSE_RANGE, (s >> 3) & 0x03)
        if rng is not None:
            status += (rng,)
        if s & _BP_IMPROPER_POSITION:
            status += ("improper_measurement_position",)
    r.end()
    return {
        "characteristic": "blood_pressure_measurement",
        "flags": flags,
        "time": time,
        "user_id": user,
        "measurement_status": status,
        "observations": obs,
    }
