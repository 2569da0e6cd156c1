"""Just enough X.509 (RFC 5280) DER reading for the hub to accept its own certificate.

Before installing the certificate the CA issued, the hub checks that it names
the hub (subject CN = hub id) and carries the hub's own public key. The
reader walks strict DER (X.690 section 10: definite, minimal lengths,
low-number tags) and raises CodecError on anything else. It does not check the
CA's signature or the validity dates: the hub's clock may not be set yet, and
the certificate is only its own identity, which the broker checks.

    certificate_info(der) -> CertInfo(subject_cn, public_key)
    check_certificate(der, public_key, hub_id) -> CertInfo   (CodecError on mismatch)
"""

from hemhub.codec import CodecError
from hemhub.crypto.csr import OID_CN, OID_EC_PUBLIC_KEY, OID_PRIME256V1

_MAX_CERT = 4096
_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_BIT_STRING = 0x03
_OID = 0x06
_VERSION = 0xA0  # [0] EXPLICIT
_TEXT_TAGS = (0x0C, 0x13, 0x16)  # UTF8String, PrintableString, IA5String


class CertInfo:
    def __init__(self, subject_cn, public_key):
        self.subject_cn = subject_cn
        self.public_key = public_key


def read_tlv(data, pos, end):
    """(tag, content start, content end) of the DER item at pos, which must end by end."""
    if pos + 2 > end:
        raise CodecError("DER truncated at offset %d" % pos)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise CodecError("DER high-number tag at offset %d is not supported" % pos)
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        size = n & 0x7F
        if size == 0:
            raise CodecError("DER indefinite length at offset %d" % (pos - 1))
        if size > 3 or pos + size > end:
            raise CodecError("DER length at offset %d is too long" % (pos - 1))
        n = int.from_bytes(data[pos : pos + size], "big")
        if n < 0x80 or data[pos] == 0:
            raise CodecError("DER length at offset %d is not minimal" % (pos - 1))
        pos += size
    if pos + n > end:
        raise CodecError("DER item at offset %d runs past its container" % pos)
    return tag, pos, pos + n


def _expect(data, pos, end, tag, what):
    t, start, stop = read_tlv(data, pos, end)
    if t != tag:
        raise CodecError("certificate %s: expected DER tag 0x%02x, found 0x%02x" % (what, tag, t))
    return start, stop


def _subject_cn(data, start, end):
    cn = None
    pos = start
    while pos < end:
        s, rdn_end = _expect(data, pos, end, _SET, "name")
        pos = rdn_end
        while s < rdn_end:
            a, attr_end = _expect(data, s, rdn_end, _SEQUENCE, "name attribute")
            s = attr_end
            o, oid_end = _expect(data, a, attr_end, _OID, "attribute type")
            if data[o - 2 : oid_end] != OID_CN:
                continue
            tag, vs, ve = read_tlv(data, oid_end, attr_end)
            if tag not in _TEXT_TAGS or ve != attr_end:
                raise CodecError("certificate subject CN is not a text string")
            if cn is not None:
                raise CodecError("certificate subject has more than one CN")
            try:
                cn = bytes(data[vs:ve]).decode()
            except UnicodeError:
                raise CodecError("certificate subject CN is not valid UTF-8") from None
    if cn is None:
        raise CodecError("certificate subject has no CN")
    return cn


def _ec_public_key(data, start, end):
    a, alg_end = _expect(data, start, end, _SEQUENCE, "public key algorithm")
    if data[a:alg_end] != OID_EC_PUBLIC_KEY + OID_PRIME256V1:
        raise CodecError("certificate key is not an EC P-256 key")
    b, bits_end = _expect(data, alg_end, end, _BIT_STRING, "public key")
    if bits_end != end or bits_end - b != 66 or data[b] != 0 or data[b + 1] != 4:
        raise CodecError("certificate key must be an uncompressed P-256 point")
    return bytes(data[b + 1 : bits_end])


def certificate_info(der):
    """Subject CN and public key (65-byte point) of a DER X.509 certificate."""
    if len(der) > _MAX_CERT:
        raise CodecError("certificate of %d bytes exceeds %d" % (len(der), _MAX_CERT))
    der = bytes(der)
    cs, ce = _expect(der, 0, len(der), _SEQUENCE, "structure")
    if ce != len(der):
        raise CodecError("certificate has %d trailing bytes" % (len(der) - ce))
    ts, te = _expect(der, cs, ce, _SEQUENCE, "tbsCertificate")
    pos = ts
    tag, _, stop = read_tlv(der, pos, te)
    if tag == _VERSION:
        pos = stop
    _, pos = _expect(der, pos, te, _INTEGER, "serial number")
    _, pos = _expect(der, pos, te, _SEQUENCE, "signature algorithm")
    _, pos = _expect(der, pos, te, _SEQUENCE, "issuer")
    _, pos = _expect(der, pos, te, _SEQUENCE, "validity")
    ss, pos = _expect(der, pos, te, _SEQUENCE, "subject")
    cn = _subject_cn(der, ss, pos)
    ks, pos = _expect(der, pos, te, _SEQUENCE, "subjectPublicKeyInfo")
    return CertInfo(cn, _ec_public_key(der, ks, pos))


def check_certificate(der, public_key, hub_id):
    """CertInfo of der if it names hub_id and holds public_key; CodecError otherwise."""
    info = certificate_info(der)
    if info.subject_cn != hub_id:
        raise CodecError("certificate is for %r, not this hub (%r)" % (info.subject_cn, hub_id))
    if info.public_key != bytes(public_key):
        raise CodecError("certificate key is not this hub's key; was the CSR from another hub?")
    return info
