"""Parsing and verifying COSE_Sign1 with ES256 (RFC 9052 section 4.2, RFC 9053
section 2.1): the strict profile of hemhub.codec.cose. Parse errors raise
CodecError. Kept apart from the signing side so a running hub does not hold it.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.cbor import Tag, decode
from hemhub.codec.cose import ALG_ES256, COSE_SIGN1_TAG, PROTECTED_ES256, to_be_signed_digest

_HDR_ALG = const(1)
_HDR_CRIT = const(2)
_SIG_LEN = const(64)


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
    from hemhub.crypto.p256_verify import verify_digest

    return verify_digest(public_key, msg.digest(external_aad), msg.signature)
