"""A minimal DER writer (X.690 section 10) and the hub's PKCS#10 request (RFC 2986).

    CertificationRequest ::= SEQUENCE {
        certificationRequestInfo  SEQUENCE {
            version       INTEGER 0,
            subject       Name,                         -- [O, OU,] CN = hub id
            subjectPKInfo SubjectPublicKeyInfo,         -- id-ecPublicKey, prime256v1
            attributes    [0] IMPLICIT SET OF Attribute -- empty: a0 00
        },
        signatureAlgorithm AlgorithmIdentifier,         -- ecdsa-with-SHA256, no parameters
        signature          BIT STRING }                 -- DER Ecdsa-Sig-Value

SubjectPublicKeyInfo for EC keys: RFC 5480 section 2; the ECDSA algorithm
identifier and signature value: RFC 5758 section 3.2, RFC 3279 section 2.2.3.
Names are UTF8String (RFC 5280 section 4.1.2.6).

    make_csr(signer, hub_id, org=None, unit=None) -> DER bytes
"""

# OIDs, DER-encoded (tag, length, arcs)
OID_EC_PUBLIC_KEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"  # 1.2.840.10045.2.1
OID_PRIME256V1 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"  # 1.2.840.10045.3.1.7
OID_ECDSA_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # 1.2.840.10045.4.3.2
OID_CN = b"\x06\x03\x55\x04\x03"  # 2.5.4.3 commonName
OID_O = b"\x06\x03\x55\x04\x0a"  # 2.5.4.10 organizationName
OID_OU = b"\x06\x03\x55\x04\x0b"  # 2.5.4.11 organizationalUnitName

_SEQUENCE = b"\x30"
_SET = b"\x31"


def tlv(tag, content):
    """tag (one byte, as bytes) + definite minimal length (X.690 10.1) + content."""
    n = len(content)
    if n < 0x80:
        head = bytes((n,))
    else:
        size = 1 if n < 0x100 else 2 if n < 0x10000 else 3
        head = bytes((0x80 | size,)) + n.to_bytes(size, "big")
    return tag + head + content


def sequence(*items):
    return tlv(_SEQUENCE, b"".join(items))


def integer(n):
    """Non-negative INTEGER, minimal two's complement (X.690 8.3)."""
    size = 1
    while n >> (8 * size):
        size += 1
    body = n.to_bytes(size, "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return tlv(b"\x02", body)


def bit_string(data):
    return tlv(b"\x03", b"\x00" + data)  # no unused bits


def utf8_string(text):
    return tlv(b"\x0c", text.encode())


def name(cn, org=None, unit=None):
    """RDNSequence, most significant first: [O,] [OU,] CN; one attribute per RDN."""
    rdns = []
    for oid, value in ((OID_O, org), (OID_OU, unit), (OID_CN, cn)):
        if value:
            rdns.append(tlv(_SET, sequence(oid, utf8_string(value))))
    return sequence(*rdns)


def ec_public_key_info(public_key):
    """SubjectPublicKeyInfo of a 65-byte uncompressed P-256 point (RFC 5480)."""
    return sequence(sequence(OID_EC_PUBLIC_KEY, OID_PRIME256V1), bit_string(public_key))


def ecdsa_signature(sig):
    """64-byte r || s -> DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER }."""
    return sequence(integer(int.from_bytes(sig[:32], "big")), integer(int.from_bytes(sig[32:], "big")))


def make_csr(signer, hub_id, org=None, unit=None):
    """DER CertificationRequest for signer's P-256 key with subject CN = hub_id."""
    if not hub_id:
        raise ValueError("a CSR needs the hub id as its common name")
    info = sequence(integer(0), name(hub_id, org, unit), ec_public_key_info(signer.public_key), b"\xa0\x00")
    sig = signer.sign(info)
    return sequence(info, sequence(OID_ECDSA_SHA256), bit_string(ecdsa_signature(sig)))
