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
be in deterministic encoding (hemhub.codec.cbor). Parse errors raise CodecError.

A signer is any object with sign_digest(32-byte digest) -> 64 bytes
(hemhub.crypto.p256.Signer).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import hashlib

from hemhub.codec import CodecError
from hemhub.codec.cbor import Tag, decode, encode, encode_into

COSE_SIGN1_TAG = const(18)
ALG_ES256 = const(-7)
_HDR_ALG = const(1)
_HDR_CRIT = const(2)
_SIG_LEN = const(64)

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


class Sign1:
    """A parsed COSE_Sign1: protected (bytes, as signed), unprotected (dict), payload, signature."""

    def __init__(self, protected, unprotected, payload, signature):
        self.protected = protected
        self.unprotected = unprotected
        self.payload = payload
        self.signature = signature

    def digest(self, external_aad=b""):
        return to_be_signed_digest(self.protected, self.payload, external_aad)


def parse_sign1(data, max_size=4096):
    """Strictly parse COSE_Sign1_Tagged bytes (structure only; no signature check)."""
    item = decode(data, 4, max_size)
    if not isinstance(item, Tag) or item.tag != COSE_SIGN1_TAG:
        raise CodecError("not a COSE_Sign1: expected CBOR tag 18")
    msg = item.value
    if not isinstance(msg, list) or len(msg) != 4:
        raise CodecError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = msg
    if type(protected) is not bytes:
        raise CodecError("COSE_Sign1 protected header must be a byte string")
    if protected != PROTECTED_ES256:
        hdr = decode(protected, 2, 256) if protected else {}
        if not isinstance(hdr, dict):
            raise CodecError("COSE_Sign1 protected header must encode a map")
        if _HDR_CRIT in hdr:
            raise CodecError("COSE_Sign1 critical headers are not supported")
        if hdr.get(_HDR_ALG) != ALG_ES256:
            raise CodecError("COSE_Sign1 algorithm must be ES256 (-7), got %r" % (hdr.get(_HDR_ALG),))
        raise CodecError("COSE_Sign1 protected header must be exactly {1: -7}")
    if not isinstance(unprotected, dict):
        raise CodecError("COSE_Sign1 unprotected header must be a map")
    if type(payload) is not bytes:
        raise CodecError("COSE_Sign1 payload must be an attached byte string")
    if type(signature) is not bytes or len(signature) != _SIG_LEN:
        raise CodecError("COSE_Sign1 ES256 signature must be a 64-byte string")
    return Sign1(protected, unprotected, payload, signature)


def verify_sign1(msg, public_key, external_aad=b""):
    """True if the parsed Sign1 msg verifies under public_key (65-byte SEC 1 point)."""
    from hemhub.crypto.p256 import verify_digest

    return verify_digest(public_key, msg.digest(external_aad), msg.signature)
