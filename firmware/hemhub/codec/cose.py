"""COSE_Sign1 with ES256 (RFC 9052 section 4.2, RFC 9053 section 2.1).

    COSE_Sign1_Tagged = #6.18([ protected: bstr .cbor header_map,
                                unprotected: header_map,
                                payload: bstr,
                                signature: bstr ])      ; 64 bytes r || s

The signature is ECDSA P-256 / SHA-256 over the deterministic encoding of the
Sig_structure (RFC 9052 section 4.4):

    ["Signature1", protected, external_aad, payload]

This profile is strict: the tag is required, the protected header is exactly
{1: -7} (alg ES256) encoded as a10126, the unprotected header is a map, the
payload is attached (not nil) and the signature is 64 bytes. Every item must
be in deterministic encoding (hemhub.codec.cbor). Parsing and verification
(parse_sign1, verify_sign1, Sign1) are in hemhub.codec.cose_verify, which the
hub loads only when it checks a signature.

A signer is any object with sign_digest(32-byte digest) -> 64 bytes
(hemhub.crypto.p256.Signer).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import hashlib

from hemhub.codec.cbor import Tag, encode, encode_into

COSE_SIGN1_TAG = const(18)
ALG_ES256 = const(-7)

# {1: -7}: the whole protected header of this profile
PROTECTED_ES256 = b"\xa1\x01\x26"


def sig_structure(protected, payload, external_aad=b""):
    """The to-be-signed bytes: the Sig_structure of RFC 9052 section 4.4."""
    buf = bytearray()
    encode_into(buf, ["Signature1", protected, external_aad, payload])
    return buf


def to_be_signed_digest(protected, payload, external_aad=b""):
    return hashlib.sha256(sig_structure(protected, payload, external_aad)).digest()


def sign1(payload, signer, external_aad=b"", unprotected=None):
    """COSE_Sign1_Tagged bytes for payload (bytes), signed ES256 by signer."""
    digest = to_be_signed_digest(PROTECTED_ES256, payload, external_aad)
    signature = signer.sign_digest(digest)
    return encode(Tag(COSE_SIGN1_TAG, [PROTECTED_ES256, unprotected or {}, payload, signature]))
