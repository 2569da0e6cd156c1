"""Pulse Oximeter measurement characteristics (PLXS v1.0.1 section 3; field
layouts from the GATT Specification Supplement) -> the dicts hemhub.codec.gatt
describes. Loaded by gatt.decode for the first value of this profile, so a GATT
link holds only its own device's parsers. Units are the device's own (UCUM)."""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec.gatt import Reader, observation
from hemhub.codec.names import bit_names

# IEEE 11073-10101 nomenclature codes (MDC), as in SYSTEM.md section 7
_MDC_PULS_OXIM_SAT_O2 = const(150456)
_MDC_PULS_OXIM_PULS_RATE = const(149530)
_MDC_PULS_OXIM_PERF_REL = const(149540)  # pulse amplitude index

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
    spo2 = observation(_MDC_PULS_OXIM_SAT_O2, r.sfloat(), "%")
    return [spo2, observation(_MDC_PULS_OXIM_PULS_RATE, r.sfloat(), "/min")]


def _plx_tail(r, result, status_bit, device_bit, pai_bit, flags):
    meas = r.uint(2) if flags & status_bit else None
    dev = r.uint(3) if flags & device_bit else None
    if flags & pai_bit:
        result["observations"].append(observation(_MDC_PULS_OXIM_PERF_REL, r.sfloat(), "%"))
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
    f = r.uint(2)
    meas = r.uint(2) if f & 0x01 else None
    dev = r.uint(3) if f & 0x02 else None
    r.end()
    return {
        "characteristic": "plx_features",
        "features": bit_names(f, _PLX_FEATURES),
        "measurement_status_support": None if meas is None else bit_names(meas, _PLX_MEAS_STATUS, _PLX_MEAS_STATUS_FIRST),
        "device_status_support": None if dev is None else bit_names(dev, _PLX_DEVICE_STATUS),
        "observations": [],
    }
