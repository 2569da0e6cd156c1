"""ECDSA P-256 verification (SEC 1 v2 section 4.1.4) and public-key decoding
(SEC 1 section 2.3.4), in pure Python (hub and host alike).

Kept apart from hemhub.crypto.p256, the hub's signing path, so a running hub
does not hold it in RAM. Arithmetic and conventions: hemhub.crypto.p256.
"""
from hemhub.codec import CodecError
from hemhub.crypto.p256 import N, P, _add_affine, _double, _inv, _mul_base, _to_affine, _to_affine_all

B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def mul_point(k, x, y):
    # k*(x, y) by a 4-bit fixed window over a table of 1..15 multiples.
    jac = [(x, y, 1), _double(x, y, 1)]
    for _ in range(13):
        jac.append(_add_affine(*jac[-1], x, y))
    table = [None] + _to_affine_all(jac)
    X, Y, Z = 1, 1, 0
    for shift in range(252, -1, -4):
        for _ in range(4):
            X, Y, Z = _double(X, Y, Z)
        c = (k >> shift) & 15
        if c:
            tx, ty = table[c]
            X, Y, Z = _add_affine(X, Y, Z, tx, ty)
    return X, Y, Z


def decode_public_key(data):
    """SEC 1 2.3.4: uncompressed (65 bytes) or compressed (33) point -> (x, y), checked on the curve."""
    n = len(data)
    if n == 65 and data[0] == 4:
        x = int.from_bytes(data[1:33], "big")
        y = int.from_bytes(data[33:], "big")
        if x >= P or y >= P or (y * y - (x * x * x - 3 * x + B)) % P:
            raise CodecError("P-256 public key is not a point on the curve")
        return x, y
    if n == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        if x >= P:
            raise CodecError("P-256 public key x coordinate is out of range")
        rhs = (x * x * x - 3 * x + B) % P
        y = pow(rhs, (P + 1) >> 2, P)  # p = 3 mod 4
        if y * y % P != rhs:
            raise CodecError("P-256 public key is not a point on the curve")
        if (y & 1) != (data[0] & 1):
            y = P - y
        return x, y
    raise CodecError("P-256 public key must be 65 bytes (04 X Y) or 33 bytes (02/03 X), got %d" % n)


def verify_digest(public_key, digest, signature):
    """True if signature (64 bytes r || s) is valid for digest under public_key (SEC 1 4.1.4).

    Malformed signatures give False; a malformed public key raises CodecError.
    """
    x, y = decode_public_key(public_key)
    if len(signature) != 64 or len(digest) != 32:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    w = _inv(s, N)
    e = int.from_bytes(digest, "big")
    u1 = e * w % N
    u2 = r * w % N
    qx, qy = _to_affine(*mul_point(u2, x, y))  # u2 != 0 and Q has order n: never infinity
    X, _, Z = _add_affine(*_mul_base(u1), qx, qy)
    if not Z:
        return False
    # x(R) mod n == r  <=>  x(R) is r or r + n; x(R) = X / Z^2, so compare
    # r * Z^2 with X and skip an inversion.
    zz = Z * Z % P
    if (r * zz - X) % P == 0:
        return True
    return r + N < P and ((r + N) * zz - X) % P == 0
