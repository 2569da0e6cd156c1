"""Weight Scale measurement characteristics (WSS v1.0 section 3; field layouts
from the GATT Specification Supplement) -> the dicts hemhub.codec.gatt
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
_MDC_MASS_BODY_ACTUAL = const(188736)
_MDC_LEN_BODY_ACTUAL = const(188740)
_MDC_RATIO_MASS_BODY_LEN_SQ = const(188752)  # BMI
_WEIGHT_UNSUCCESSFUL = const(0xFFFF)  # WSS 3.2 / GSS: special value "Measurement Unsuccessful"

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
    raw = r.uint(2)
    if raw == _WEIGHT_UNSUCCESSFUL:
        mass = (None, "unsuccessful")
    else:
        mass = (raw / 100 if imperial else raw / 200, None)
    time = r.date_time() if flags & 0x02 else None
    user = r.u8() if flags & 0x04 else None
    obs = [observation(_MDC_MASS_BODY_ACTUAL, mass, "[lb_av]" if imperial else "kg")]
    if flags & 0x08:
        obs.append(observation(_MDC_RATIO_MASS_BODY_LEN_SQ, (r.uint(2) / 10, None), "kg/m2"))
        height = r.uint(2)
        obs.append(
            observation(_MDC_LEN_BODY_ACTUAL, (height / 10 if imperial else height / 1000, None), "[in_i]" if imperial else "m")
        )
    r.end()
    return {"characteristic": "weight_measurement", "flags": flags, "time": time, "user_id": user, "observations": obs}


# Weight Scale Feature resolution codes 1..7: byte k is code k + 1's step in
# units of 5 g and of 1/100 lb; height codes 1..3: in mm and in 1/10 in alike.
_WEIGHT_RES_5G = b"\x64\x28\x14\x0a\x04\x02\x01"  # 0.5 0.2 0.1 0.05 0.02 0.01 0.005 kg
_WEIGHT_RES_LB = b"\x64\x32\x14\x0a\x05\x02\x01"  # 1 0.5 0.2 0.1 0.05 0.02 0.01 lb
_HEIGHT_RES = b"\x0a\x05\x01"  # 0.01 0.005 0.001 m; 1 0.5 0.1 in
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
    wr = (_WEIGHT_RES_5G[w - 1] * 5, _WEIGHT_RES_LB[w - 1]) if 1 <= w <= 7 else None
    hr = (_HEIGHT_RES[h - 1],) * 2 if 1 <= h <= 3 else None
    return {
        "characteristic": "weight_scale_feature",
        "features": bit_names(f, _WSF_NAMES),
        "weight_resolution": None if wr is None else (wr[0] / 1000, wr[1] / 100),
        "height_resolution": None if hr is None else (hr[0] / 1000, hr[1] / 10),
        "observations": [],
    }
