"""ECDSA over NIST P-256 with SHA-256, in pure Python (hub and host alike).

Curve: FIPS 186-4 D.1.2.3 / SEC 2 2.4.2 (secp256r1, prime256v1), y^2 = x^3 - 3x + b
over GF(p). Signatures: SEC 1 v2 section 4.1.3 (sign) and 4.1.4 (verify).

Signing is split so that nothing slow sits on an alarm's path:

    nonce = precompute()               idle time: random k, r = x(kG) mod n, k^-1 mod n
    sig = sign_digest(d, digest, nonce)   a few modular multiplications

A Nonce is consumed by the first sign_digest that uses it (its values are
dropped, a second use raises ValueError), lives only in RAM and has no
serialised form: a reboot loses it, which is the point. k comes from
os.urandom (the ESP32's hardware RNG; the radio is always on in a hub), so
nothing needs the message in advance (RFC 6979 would). Signer keeps a small
pool of nonces for one key and refills it from an idle task.

Signatures are 64 bytes r || s (the COSE form, RFC 9053 section 2.1), always
with the low s (s <= n/2) so a signature cannot be re-shaped into a second
valid one; verification accepts either (signers elsewhere need not normalise).

Field arithmetic is Python integers reduced with %, which is C code in both
interpreters. Points are Jacobian (X, Y, Z) with x = X/Z^2, y = Y/Z^3; Z = 0
is the point at infinity. k*G uses a fixed-base comb (Lim-Lee) with a table of
2^_TEETH - 1 affine points built on first use; other points (verification,
hemhub.crypto.p256_verify) use a 4-bit window.
None of this is constant-time: integer operations take value-dependent time.
kG is computed at idle time, away from when a message arrives.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import hashlib
import os

from hemhub.codec import CodecError

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_TEETH = const(4)  # comb width: table of 15 points (960 bytes), 64 doublings + 64 additions;
_COLUMNS = const(64)  # 256 / _TEETH. _mul_base is written out for exactly 4 teeth.
_POOL = const(2)

_comb = None  # the comb table, built on first use: x || y of T[c] at 64 * (c - 1)


# ---- field and group arithmetic ----


def _inv(a, m):
    # Fermat: a^(m-2) mod m for prime m. (pow with exponent -1 is not in MicroPython.)
    return pow(a, m - 2, m)


def _double(X1, Y1, Z1):
    # dbl-2001-b (a = -3), Explicit-Formulas Database; Z1 = 0 stays at infinity.
    p = P
    delta = Z1 * Z1 % p
    gamma = Y1 * Y1 % p
    beta = X1 * gamma % p
    alpha = 3 * (X1 - delta) * (X1 + delta) % p
    X3 = (alpha * alpha - (beta << 3)) % p
    Z3 = (Y1 * Z1 << 1) % p
    Y3 = (alpha * ((beta << 2) - X3) - (gamma * gamma << 3)) % p
    return X3, Y3, Z3


def _add_affine(X1, Y1, Z1, x2, y2):
    # Jacobian + affine (add-1998-cmo-2 with Z2 = 1), all special cases handled.
    p = P
    if not Z1:
        return x2, y2, 1
    z1z1 = Z1 * Z1 % p
    H = (x2 * z1z1 - X1) % p
    r = (y2 * Z1 * z1z1 - Y1) % p
    if not H:
        if not r:
            return _double(x2, y2, 1)
        return 1, 1, 0
    HH = H * H % p
    HHH = H * HH % p
    V = X1 * HH % p
    X3 = (r * r - HHH - (V << 1)) % p
    Y3 = (r * (V - X3) - Y1 * HHH) % p
    return X3, Y3, Z1 * H % p


def _to_affine(X, Y, Z):
    if not Z:
        return None
    zi = _inv(Z, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def _to_affine_all(points):
    # Montgomery's trick: one inversion for the whole list (no point at infinity).
    p = P
    prefix = []
    acc = 1
    for pt in points:
        prefix.append(acc)
        acc = acc * pt[2] % p
    inv = _inv(acc, p)
    out = [None] * len(points)
    for i in range(len(points) - 1, -1, -1):
        X, Y, Z = points[i]
        zi = inv * prefix[i] % p
        inv = inv * Z % p
        zi2 = zi * zi % p
        out[i] = (X * zi2 % p, Y * zi2 * zi % p)
    return out


def _comb_table():
    # T[c] = sum of 2^(j*_COLUMNS) G over the set bits j of c (index 0 unused).
    global _comb
    if _comb is None:
        base = [(GX, GY)]
        for _ in range(_TEETH - 1):
            X, Y, Z = base[-1][0], base[-1][1], 1
            for _ in range(_COLUMNS):
                X, Y, Z = _double(X, Y, Z)
            base.append(_to_affine(X, Y, Z))
        jac = [None]
        for c in range(1, 1 << _TEETH):
            top = 0
            while c >> (top + 1):
                top += 1
            x, y = base[top]
            rest = c ^ (1 << top)
            jac.append(_add_affine(*jac[rest], x, y) if rest else (x, y, 1))
        # One 960-byte block rather than 15 tuples of two 256-bit ints (2.4 KiB of
        # heap objects on a 64-bit build): the table lives as long as the signer.
        table = bytearray(64 * ((1 << _TEETH) - 1))
        o = 0
        for x, y in _to_affine_all(jac[1:]):
            table[o:o + 32] = x.to_bytes(32, "big")
            table[o + 32:o + 64] = y.to_bytes(32, "big")
            o += 64
        _comb = memoryview(table)
    return _comb


def _mul_base(k):
    # k*G, 0 <= k < 2^256, by the comb: column i holds bits i, i+64, i+128, i+192.
    table = _comb_table()
    mask = (1 << _COLUMNS) - 1
    k0 = k & mask
    k1 = (k >> _COLUMNS) & mask
    k2 = (k >> (2 * _COLUMNS)) & mask
    k3 = k >> (3 * _COLUMNS)
    X, Y, Z = 1, 1, 0
    for i in range(_COLUMNS - 1, -1, -1):
        X, Y, Z = _double(X, Y, Z)
        c = ((k0 >> i) & 1) | (((k1 >> i) & 1) << 1) | (((k2 >> i) & 1) << 2) | (((k3 >> i) & 1) << 3)
        if c:
            o = 64 * c - 64
            X, Y, Z = _add_affine(X, Y, Z, int.from_bytes(table[o:o + 32], "big"),
                                  int.from_bytes(table[o + 32:o + 64], "big"))
    return X, Y, Z


# ---- keys ----


def _random_scalar():
    # Uniform in [1, n-1] by rejection (SEC 1 3.2.1; FIPS 186-4 B.4.2).
    while True:
        k = int.from_bytes(os.urandom(32), "big")
        if 0 < k < N:
            return k


def generate_private_key():
    """A new private scalar d in [1, n-1] from os.urandom."""
    return _random_scalar()


def private_key_from_bytes(data):
    """32-byte big-endian scalar -> d; CodecError unless 1 <= d <= n-1."""
    if len(data) != 32:
        raise CodecError("P-256 private key must be 32 bytes, got %d" % len(data))
    d = int.from_bytes(data, "big")
    if not 0 < d < N:
        raise CodecError("P-256 private key is out of range [1, n-1]")
    return d


def private_key_to_bytes(d):
    return d.to_bytes(32, "big")


def public_key(d):
    """The public key of d as a 65-byte uncompressed SEC 1 point 04 || X || Y."""
    x, y = _to_affine(*_mul_base(d))
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


# ---- signing ----


class Nonce:
    """A precomputed signing value (r, k^-1 mod n): RAM only, good for one signature."""

    def __init__(self, r, kinv):
        # 64 bytes r || k^-1 rather than two 256-bit ints: a third of the heap
        # objects on a 64-bit build, for nonces that wait in the signer's pool.
        self._rk = r.to_bytes(32, "big") + kinv.to_bytes(32, "big")

    def take(self):
        """(r, k^-1); the nonce is spent afterwards and a second take raises ValueError."""
        rk = self._rk
        if rk is None:
            raise ValueError("this ECDSA nonce has already been used; precompute a new one")
        self._rk = None
        return int.from_bytes(rk[:32], "big"), int.from_bytes(rk[32:], "big")

    def __repr__(self):
        return "<Nonce %s>" % ("spent" if self._rk is None else "ready")


def _nonce(k):
    x, _ = _to_affine(*_mul_base(k))
    r = x % N
    if not r:
        return None
    return Nonce(r, _inv(k, N))


def precompute():
    """A fresh Nonce from a random k (one scalar multiplication, two inversions)."""
    while True:
        nonce = _nonce(_random_scalar())
        if nonce is not None:
            return nonce


def precompute_fixed_k(k):
    """TEST VECTORS ONLY: a Nonce from a given k. A k used twice reveals the key."""
    if not 0 < k < N:
        raise ValueError("k must be in [1, n-1]")
    nonce = _nonce(k)
    if nonce is None:
        raise ValueError("k gives r = 0; choose another k")
    return nonce


def sign_digest(d, digest, nonce):
    """ECDSA signature (64 bytes r || s, low s) of a 32-byte SHA-256 digest; spends nonce."""
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes (SHA-256), got %d" % len(digest))
    r, kinv = nonce.take()
    e = int.from_bytes(digest, "big")
    s = kinv * (e + r * d) % N
    if not s:  # probability 2^-256; the nonce is spent either way
        raise ValueError("degenerate ECDSA signature (s = 0); sign again with a new nonce")
    if s > N >> 1:
        s = N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sha256(data):
    return hashlib.sha256(data).digest()


class Signer:
    """One private key and a pool of precomputed nonces.

    refill() from an idle task; sign_digest() pops a nonce (computing one on the
    spot only if the pool is empty). close() drops the key and the pool.
    """

    def __init__(self, private_key, pool_size=_POOL):
        self._d = private_key
        self._pool = []
        self._size = pool_size
        self.public_key = public_key(private_key)

    def ready(self):
        """Number of precomputed nonces waiting."""
        return len(self._pool)

    def refill(self):
        """Add one nonce if the pool is not full; True if one was added."""
        if len(self._pool) >= self._size:
            return False
        self._pool.append(precompute())
        return True

    def add_nonce(self, nonce):
        """Queue a given Nonce (test vectors use precompute_fixed_k)."""
        self._pool.append(nonce)

    def sign_digest(self, digest):
        nonce = self._pool.pop(0) if self._pool else precompute()
        return sign_digest(self._d, digest, nonce)

    def sign(self, message):
        return self.sign_digest(sha256(message))

    def close(self):
        self._pool = []
        self._d = None
