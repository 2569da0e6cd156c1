"""notBefore/notAfter of a DER X.509 certificate (RFC 5280 section 4.1.2.5).

    not_before, not_after = validity(der)   # UTC seconds since 1970

Walks only the outer structure: Certificate -> tbsCertificate -> [version],
serialNumber, signature, issuer, validity. Raises ValueError if it is not there.
"""


def _tlv(d, off, end):
    # (tag, content start, content end) of the DER element at off
    if off + 2 > end:
        raise ValueError("certificate truncated")
    tag = d[off]
    n = d[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 3 or off + k > end:
            raise ValueError("certificate length field invalid")
        n = 0
        for i in range(k):
            n = (n << 8) | d[off + i]
        off += k
    if off + n > end:
        raise ValueError("certificate element runs past its parent")
    return tag, off, off + n


def _days(y, m, d):
    # days from 1970-01-01 to y-m-d (proleptic Gregorian)
    if m <= 2:
        y -= 1
        m += 12
    return 365 * y + y // 4 - y // 100 + y // 400 + (153 * (m - 3) + 2) // 5 + d - 719469


def _time(d, tag, a, b):
    s = bytes(d[a:b])
    if tag == 0x17 and len(s) == 13:  # UTCTime YYMMDDHHMMSSZ
        y = int(s[0:2])
        y += 2000 if y < 50 else 1900
        s = s[2:]
    elif tag == 0x18 and len(s) == 15:  # GeneralizedTime YYYYMMDDHHMMSSZ
        y = int(s[0:4])
        s = s[4:]
    else:
        raise ValueError("certificate time has an unexpected form")
    if s[10:11] != b"Z":
        raise ValueError("certificate time is not UTC")
    mo, dd, hh, mi, ss = int(s[0:2]), int(s[2:4]), int(s[4:6]), int(s[6:8]), int(s[8:10])
    return _days(y, mo, dd) * 86400 + hh * 3600 + mi * 60 + ss


def validity(der):
    end = len(der)
    t, a, end = _tlv(der, 0, end)  # Certificate
    t, a, end = _tlv(der, a, end)  # tbsCertificate
    if t != 0x30:
        raise ValueError("not a certificate")
    off = a
    t, a, b = _tlv(der, off, end)
    if t == 0xA0:  # [0] version
        off = b
    for _ in range(3):  # serialNumber, signature, issuer
        t, a, b = _tlv(der, off, end)
        off = b
    t, a, b = _tlv(der, off, end)  # validity
    if t != 0x30:
        raise ValueError("certificate has no validity")
    t1, a1, b1 = _tlv(der, a, b)
    t2, a2, b2 = _tlv(der, b1, b)
    return _time(der, t1, a1, b1), _time(der, t2, a2, b2)
