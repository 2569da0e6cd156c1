"""Health measurement characteristics -> observations (protocol/gatt.md).

Weight Scale (WSS v1.0 section 3), Pulse Oximeter (PLXS v1.0.1 section 3),
Blood Pressure (BLS v1.1.1 section 3.1), Health Thermometer (HTS v1.0 section
3.1); field layouts from the GATT Specification Supplement (GSS) entries of the
same names. Every parser returns

    {"characteristic": name, "flags": int, "time": Date Time tuple or None,
     "user_id": int or None, "observations": [...], ...characteristic extras}

Units are the device's own, as UCUM codes (FHIR PHD IG): a scale in pounds
gives "[lb_av]", a cuff in kPa gives "kPa", a thermometer in Fahrenheit gives
"[degF]". Nothing is converted, so nothing is rounded twice.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec.gatt_fields import Reader, observation
from hemhub.codec.names import bit_names, word

# IEEE 11073-10101 nomenclature codes (MDC), as in SYSTEM.md section 7
MDC_MASS_BODY_ACTUAL = const(188736)
MDC_LEN_BODY_ACTUAL = const(188740)
MDC_RATIO_MASS_BODY_LEN_SQ = const(188752)  # BMI
MDC_PULS_OXIM_SAT_O2 = const(150456)
MDC_PULS_OXIM_PULS_RATE = const(149530)
MDC_PULS_OXIM_PERF_REL = const(149540)  # pulse amplitude index
MDC_PRESS_BLD_NONINV = const(150020)
MDC_PRESS_BLD_NONINV_SYS = const(150021)
MDC_PRESS_BLD_NONINV_DIA = const(150022)
MDC_PRESS_BLD_NONINV_MEAN = const(150023)
MDC_PULS_RATE_NON_INV = const(149546)  # pulse rate from a BP cuff
MDC_TEMP_BODY = const(150364)

_WEIGHT_UNSUCCESSFUL = const(0xFFFF)  # WSS 3.2 / GSS: special value "Measurement Unsuccessful"


# ---- Weight Scale ----


def weight_measurement(data):
    """Weight Measurement 0x2A9D (WSS v1.0 3.2; GSS "Weight Measurement").

    flags bit 0 units (0 SI: kg / m, 1 imperial: lb / in), bit 1 Time Stamp,
    bit 2 User ID, bit 3 BMI and Height; Weight uint16 at 0.005 kg or 0.01 lb,
    0xFFFF = measurement unsuccessful (absent value, reason "unsuccessful");
    BMI uint16 at 0.1 kg/m2; Height uint16 at 0.001 m or 0.1 in.
    """
    r = Reader(data, "Weight Measurement")
    flags = r.u8()
    imperial = flags & 0x01
    raw = r.u16()
    if raw == _WEIGHT_UNSUCCESSFUL:
        mass = (None, "unsuccessful")
    else:
        mass = (raw / 100 if imperial else raw / 200, None)
    time = r.date_time() if flags & 0x02 else None
    user = r.u8() if flags & 0x04 else None
    obs = [observation(MDC_MASS_BODY_ACTUAL, mass, "[lb_av]" if imperial else "kg")]
    if flags & 0x08:
        obs.append(observation(MDC_RATIO_MASS_BODY_LEN_SQ, (r.u16() / 10, None), "kg/m2"))
        height = r.u16()
        obs.append(
            observation(MDC_LEN_BODY_ACTUAL, (height / 10 if imperial else height / 1000, None), "[in_i]" if imperial else "m")
        )
    r.end()
    return {"characteristic": "weight_measurement", "flags": flags, "time": time, "user_id": user, "observations": obs}


# Weight Scale Feature resolution codes 1..7: (grams, 1/100 lb); height 1..3: (mm, 1/10 in)
_WEIGHT_RES = ((500, 100), (200, 50), (100, 20), (50, 10), (20, 5), (10, 2), (5, 1))
_HEIGHT_RES = ((10, 10), (5, 5), (1, 1))
_WSF_NAMES = "timestamp multiple_users bmi"


def weight_scale_feature(data):
    """Weight Scale Feature 0x2A9E (WSS v1.0 3.1; GSS "Weight Scale Feature").

    uint32: bit 0 Time Stamp, bit 1 Multiple Users, bit 2 BMI supported;
    bits 3-6 weight resolution, bits 7-9 height resolution (0 = not specified,
    RFU codes -> None). Resolutions decode as (kg, lb) and (m, in) pairs.
    """
    r = Reader(data, "Weight Scale Feature")
    f = r.uint(4)
    r.end()
    w = (f >> 3) & 0x0F
    h = (f >> 7) & 0x07
    wr = _WEIGHT_RES[w - 1] if 1 <= w <= 7 else None
    hr = _HEIGHT_RES[h - 1] if 1 <= h <= 3 else None
    return {
        "characteristic": "weight_scale_feature",
        "features": bit_names(f, _WSF_NAMES),
        "weight_resolution": None if wr is None else (wr[0] / 1000, wr[1] / 100),
        "height_resolution": None if hr is None else (hr[0] / 1000, hr[1] / 10),
        "observations": [],
    }


# ---- Pulse Oximeter ----

# PLX Measurement Status, bits 5..15 (PLXS 3.1, GSS; bits 0-4 RFU)
_PLX_MEAS_STATUS = (
    "measurement_ongoing early_estimated_data validated_data fully_qualified_data "
    "data_from_measurement_storage data_for_demonstration data_for_testing calibration_ongoing "
    "measurement_unavailable questionable_measurement_detected invalid_measurement_detected"
)
_PLX_MEAS_STATUS_FIRST = const(5)
_PLX_FROM_STORAGE = const(1 << 9)
# PLX Device and Sensor Status, bits 0..15 of a 24-bit field (PLXS 3.1, GSS; 16-23 RFU)
_PLX_DEVICE_STATUS = (
    "extended_display_update_ongoing equipment_malfunction_detected "
    "signal_processing_irregularity_detected inadequate_signal_detected poor_signal_detected "
    "low_perfusion_detected erratic_signal_detected nonpulsatile_signal_detected "
    "questionable_pulse_detected signal_analysis_ongoing sensor_interference_detected "
    "sensor_unconnected_to_user unknown_sensor_connected sensor_displaced "
    "sensor_malfunctioning sensor_disconnected"
)
_PLX_FEATURES = (
    "measurement_status device_and_sensor_status measurement_storage timestamp spo2pr_fast "
    "spo2pr_slow pulse_amplitude_index multiple_bonds"
)


def _spo2_pr(r):
    spo2 = observation(MDC_PULS_OXIM_SAT_O2, r.sfloat(), "%")
    return [spo2, observation(MDC_PULS_OXIM_PULS_RATE, r.sfloat(), "/min")]


def _plx_tail(r, result, status_bit, device_bit, pai_bit, flags):
    meas = r.u16() if flags & status_bit else None
    dev = r.uint(3) if flags & device_bit else None
    if flags & pai_bit:
        result["observations"].append(observation(MDC_PULS_OXIM_PERF_REL, r.sfloat(), "%"))
    r.end()
    result["measurement_status"] = None if meas is None else bit_names(meas, _PLX_MEAS_STATUS, _PLX_MEAS_STATUS_FIRST)
    result["device_status"] = None if dev is None else bit_names(dev, _PLX_DEVICE_STATUS)
    result["from_storage"] = bool(meas is not None and meas & _PLX_FROM_STORAGE)
    return result


def plx_spot_check(data):
    """PLX Spot-check Measurement 0x2A5E (PLXS v1.0.1 3.1).

    flags bit 0 Timestamp, bit 1 Measurement Status, bit 2 Device and Sensor
    Status, bit 3 Pulse Amplitude Index present, bit 4 Device Clock is Not Set;
    SpO2 and PR SFLOAT; Timestamp Date Time; status uint16 / uint24; PAI SFLOAT.
    """
    r = Reader(data, "PLX Spot-check Measurement")
    flags = r.u8()
    obs = _spo2_pr(r)
    time = r.date_time() if flags & 0x01 else None
    result = {
        "characteristic": "plx_spot_check",
        "flags": flags,
        "time": time,
        "user_id": None,
        "device_clock_not_set": bool(flags & 0x10),
        "observations": obs,
    }
    return _plx_tail(r, result, 0x02, 0x04, 0x08, flags)


def plx_continuous(data):
    """PLX Continuous Measurement 0x2A5F (PLXS v1.0.1 3.2).

    flags bit 0 SpO2PR-Fast, bit 1 SpO2PR-Slow, bit 2 Measurement Status,
    bit 3 Device and Sensor Status, bit 4 Pulse Amplitude Index present.
    SpO2PR-Normal goes to "observations"; Fast and Slow (other averaging
    periods of the same quantities) to "fast" / "slow", None when absent.
    """
    r = Reader(data, "PLX Continuous Measurement")
    flags = r.u8()
    obs = _spo2_pr(r)
    fast = _spo2_pr(r) if flags & 0x01 else None
    slow = _spo2_pr(r) if flags & 0x02 else None
    result = {
        "characteristic": "plx_continuous",
        "flags": flags,
        "time": None,
        "user_id": None,
        "observations": obs,
        "fast": fast,
        "slow": slow,
    }
    return _plx_tail(r, result, 0x04, 0x08, 0x10, flags)


def plx_features(data):
    """PLX Features 0x2A60 (PLXS v1.0.1 3.3): Supported Features uint16, then
    Measurement Status Support uint16 if bit 0, Device and Sensor Status
    Support uint24 if bit 1."""
    r = Reader(data, "PLX Features")
    f = r.u16()
    meas = r.u16() if f & 0x01 else None
    dev = r.uint(3) if f & 0x02 else None
    r.end()
    return {
        "characteristic": "plx_features",
        "features": bit_names(f, _PLX_FEATURES),
        "measurement_status_support": None if meas is None else bit_names(meas, _PLX_MEAS_STATUS, _PLX_MEAS_STATUS_FIRST),
        "device_status_support": None if dev is None else bit_names(dev, _PLX_DEVICE_STATUS),
        "observations": [],
    }


# ---- Blood Pressure ----

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
    for mdc in (MDC_PRESS_BLD_NONINV_SYS, MDC_PRESS_BLD_NONINV_DIA, MDC_PRESS_BLD_NONINV_MEAN):
        o = observation(mdc, r.sfloat(), unit)
        o["group"] = MDC_PRESS_BLD_NONINV
        obs.append(o)
    time = r.date_time() if flags & 0x02 else None
    if flags & 0x04:
        obs.append(observation(MDC_PULS_RATE_NON_INV, r.sfloat(), "/min"))
    user = r.u8() if flags & 0x08 else None
    status = None
    if flags & 0x10:
        s = r.u16()
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


# ---- Health Thermometer ----

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
    obs = [observation(MDC_TEMP_BODY, r.float32(), "[degF]" if flags & 0x01 else "Cel")]
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
