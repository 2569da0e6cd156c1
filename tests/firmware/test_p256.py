# P-256 ECDSA under MicroPython: published vectors (RFC 6979 A.2.5, FIPS 186-4
# curve constants), the comb against the plain window, nonce single use, the
# signer's pool, verification edge cases, and the 96 KiB heap.
import gc
import hashlib
import os

from hemhub.codec import CodecError
from hemhub.crypto import p256, p256_verify

# RFC 6979 A.2.5: P-256 key pair and the "sample" / SHA-256 signature
_D = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
_K = 0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60
_R = 0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716
_S = 0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8


def _pub():
    return b"\x04" + _UX.to_bytes(32, "big") + _UY.to_bytes(32, "big")


def _affine(pt):
    return p256._to_affine(*pt)


def test_curve_constants():
    # G is on the curve and n*G is the point at infinity (FIPS 186-4 D.1.2.3)
    assert (p256.GY * p256.GY - (p256.GX**3 - 3 * p256.GX + p256_verify.B)) % p256.P == 0
    assert p256_verify.mul_point(p256.N, p256.GX, p256.GY)[2] == 0
    assert _affine(p256._mul_base(p256.N - 1)) == (p256.GX, p256.P - p256.GY)


def test_rfc6979_public_key():
    assert p256.public_key(_D) == _pub()


def test_rfc6979_signature_with_fixed_k():
    digest = hashlib.sha256(b"sample").digest()
    sig = p256.sign_digest(_D, digest, p256.precompute_fixed_k(_K))
    assert int.from_bytes(sig[:32], "big") == _R
    # RFC 6979 gives the high s; the hub always sends the low one (n - s)
    assert int.from_bytes(sig[32:], "big") == p256.N - _S
    assert p256_verify.verify_digest(_pub(), digest, sig)
    high = _R.to_bytes(32, "big") + _S.to_bytes(32, "big")
    assert p256_verify.verify_digest(_pub(), digest, high)  # verification takes either s


def test_comb_matches_window():
    ks = [1, 2, 3, 15, 16, 2**64, 2**64 - 1, 2**128 + 1, 2**192, p256.N - 1, p256.N - 2]
    ks += [int.from_bytes(os.urandom(32), "big") % p256.N for _ in range(4)]
    for k in ks:
        assert _affine(p256._mul_base(k)) == _affine(p256_verify.mul_point(k, p256.GX, p256.GY)), k


def test_nonce_is_single_use():
    nonce = p256.precompute()
    digest = hashlib.sha256(b"x").digest()
    p256.sign_digest(_D, digest, nonce)
    try:
        p256.sign_digest(_D, digest, nonce)
    except ValueError as e:
        assert "already been used" in str(e)
    else:
        raise AssertionError("a nonce signed twice")
    assert "spent" in repr(nonce)


def test_signer_pool():
    s = p256.Signer(_D, pool_size=2)
    assert s.public_key == _pub() and s.ready() == 0
    assert s.refill() and s.refill() and not s.refill()
    assert s.ready() == 2
    digest = hashlib.sha256(b"reading").digest()
    sigs = [s.sign_digest(digest) for _ in range(3)]  # two from the pool, one on the spot
    assert s.ready() == 0
    assert len(set(sigs)) == 3  # fresh k every time
    for sig in sigs:
        assert p256_verify.verify_digest(s.public_key, digest, sig)
        assert int.from_bytes(sig[32:], "big") <= p256.N >> 1
    assert p256_verify.verify_digest(s.public_key, hashlib.sha256(b"m").digest(), s.sign(b"m"))
    s.close()
    assert s.ready() == 0


def test_verify_rejects():
    s = p256.Signer(p256.generate_private_key())
    digest = hashlib.sha256(b"door_open").digest()
    sig = s.sign_digest(digest)
    assert p256_verify.verify_digest(s.public_key, digest, sig)
    assert not p256_verify.verify_digest(_pub(), digest, sig)  # another key
    assert not p256_verify.verify_digest(s.public_key, hashlib.sha256(b"door_close").digest(), sig)
    bad = bytearray(sig)
    bad[10] ^= 0x40
    assert not p256_verify.verify_digest(s.public_key, digest, bytes(bad))
    n = p256.N.to_bytes(32, "big")
    zero = bytes(32)
    for r, s_ in ((zero, sig[32:]), (sig[:32], zero), (n, sig[32:]), (sig[:32], n)):
        assert not p256_verify.verify_digest(s.public_key, digest, r + s_)
    assert not p256_verify.verify_digest(s.public_key, digest, sig[:63])


def test_public_key_decoding():
    pub = _pub()
    assert p256_verify.decode_public_key(pub) == (_UX, _UY)
    compressed = bytes([2 + (_UY & 1)]) + pub[1:33]
    assert p256_verify.decode_public_key(compressed) == (_UX, _UY)
    other = bytes([3 - (_UY & 1)]) + pub[1:33]
    assert p256_verify.decode_public_key(other) == (_UX, p256.P - _UY)
    for bad in (pub[:64], b"\x05" + pub[1:], pub[:64] + bytes([pub[64] ^ 1]), b"\x04" + b"\xff" * 64):
        try:
            p256_verify.decode_public_key(bad)
        except CodecError:
            pass
        else:
            raise AssertionError(bad.hex())


def test_private_key_bytes():
    assert p256.private_key_from_bytes(p256.private_key_to_bytes(_D)) == _D
    for bad in (bytes(32), p256.N.to_bytes(32, "big"), b"\x01" * 31):
        try:
            p256.private_key_from_bytes(bad)
        except CodecError:
            pass
        else:
            raise AssertionError(bad.hex())
    for bad_k in (0, p256.N):
        try:
            p256.precompute_fixed_k(bad_k)
        except ValueError:
            pass
        else:
            raise AssertionError(bad_k)


def test_heap_keygen_precompute_sign():
    # The hub's application holds far more than the signer: keep 40 KiB of
    # ballast alive (in 1 KiB pieces, as a real heap is fragmented) and still
    # generate a key, build the comb, fill the pool and sign, all inside the
    # 96 KiB heap the runner gives this test.
    gc.collect()
    ballast = [bytearray(1024) for _ in range(40)]
    gc.collect()
    before = gc.mem_alloc()
    s = p256.Signer(p256.generate_private_key(), pool_size=2)
    while s.refill():
        pass
    digest = hashlib.sha256(b"alarm").digest()
    sig = s.sign_digest(digest)
    gc.collect()
    retained = gc.mem_alloc() - before
    # the comb table, the key and one pooled nonce stay; bound them
    assert retained < 8 * 1024, retained
    assert p256_verify.verify_digest(s.public_key, digest, sig)
    assert len(ballast) == 40
