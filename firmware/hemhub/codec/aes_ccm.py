"""AES-CCM authenticated encryption (RFC 3610; NIST SP 800-38C), built on the
block cipher alone: MicroPython's ``cryptolib.aes(key, 1)`` (ECB) on the hub,
and under CPython a small shim over ``cryptography``'s AES-ECB with the same
calling convention, so this one module runs on both.

    encrypt(key, nonce, plaintext, aad=b"", mic_len=4) -> ciphertext + MIC
    decrypt(key, nonce, data, aad=b"", mic_len=4)      -> plaintext

Parameters (RFC 3610 section 2): key 16 or 32 bytes; nonce 7..13 bytes, which
fixes L = 15 - len(nonce), the size of the length field; MIC length M in
4, 6, 8, 10, 12, 14, 16. A wrong MIC raises CodecError; no plaintext is returned
before the MIC has been checked.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from cryptolib import aes as _aes
except ImportError:  # CPython: same interface over the `cryptography` package
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class _aes:
        def __init__(self, key, mode):
            if mode != 1:
                raise ValueError("only ECB (mode 1) is provided by the host shim")
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, data, out=None):
            block = self._enc.update(bytes(data))
            if out is None:
                return block
            out[:] = block
            return None


from hemhub.codec import CodecError

_BLOCK = const(16)
_MODE_ECB = const(1)


def _check(key, nonce, mic_len, length):
    if len(key) not in (16, 32):
        raise CodecError("AES-CCM key must be 16 or 32 bytes, got %d" % len(key))
    if not 7 <= len(nonce) <= 13:
        raise CodecError("AES-CCM nonce must be 7..13 bytes, got %d" % len(nonce))
    if mic_len not in (4, 6, 8, 10, 12, 14, 16):
        raise CodecError("AES-CCM MIC length must be 4, 6, ..., 16, got %r" % (mic_len,))
    size_l = 15 - len(nonce)
    if size_l < 8 and length >= 1 << (8 * size_l):
        raise CodecError("AES-CCM message of %d bytes too long for a %d-byte nonce" % (length, len(nonce)))
    return size_l


def _counter_block(block, nonce, size_l, i):
    # A_i = flags(L-1) | nonce | i as L bytes big-endian (RFC 3610 section 2.3)
    block[0] = size_l - 1
    block[1 : 1 + len(nonce)] = nonce
    for k in range(size_l):
        block[15 - k] = (i >> (8 * k)) & 0xFF


def _xor_into(dst, src, start, n):
    for k in range(n):
        dst[k] ^= src[start + k]


def _mac(cipher, nonce, size_l, mic_len, aad, msg):
    """CBC-MAC T over B_0, the encoded AAD and the message (RFC 3610 section 2.2)."""
    x = bytearray(_BLOCK)
    # B_0 = flags | nonce | l(m)
    x[0] = (0x40 if len(aad) else 0) | (((mic_len - 2) // 2) << 3) | (size_l - 1)
    x[1 : 1 + len(nonce)] = nonce
    n = len(msg)
    for k in range(size_l):
        x[15 - k] = (n >> (8 * k)) & 0xFF
    cipher.encrypt(x, x)
    if aad:
        la = len(aad)
        if la < 0xFF00:
            head = bytes((la >> 8, la & 0xFF))
        elif la < 1 << 32:
            head = b"\xff\xfe" + bytes((la >> 24, (la >> 16) & 0xFF, (la >> 8) & 0xFF, la & 0xFF))
        else:
            raise CodecError("AES-CCM associated data longer than 2**32 bytes")
        _absorb(cipher, x, head + bytes(aad))
    if n:
        _absorb(cipher, x, msg)
    return x


def _absorb(cipher, x, data):
    # XOR data into the chain block by block, zero padding the last block.
    pos = 0
    n = len(data)
    while pos < n:
        take = min(_BLOCK, n - pos)
        _xor_into(x, data, pos, take)
        cipher.encrypt(x, x)
        pos += take


def _ctr(cipher, nonce, size_l, data):
    """Counter-mode keystream XOR with A_1, A_2, ... (RFC 3610 section 2.3)."""
    out = bytearray(data)
    a = bytearray(_BLOCK)
    s = bytearray(_BLOCK)
    pos = 0
    i = 1
    n = len(out)
    while pos < n:
        _counter_block(a, nonce, size_l, i)
        cipher.encrypt(a, s)
        take = min(_BLOCK, n - pos)
        for k in range(take):
            out[pos + k] ^= s[k]
        pos += take
        i += 1
    return out


def _s0(cipher, nonce, size_l):
    a = bytearray(_BLOCK)
    _counter_block(a, nonce, size_l, 0)
    s = bytearray(_BLOCK)
    cipher.encrypt(a, s)
    return s


def encrypt(key, nonce, plaintext, aad=b"", mic_len=4):
    """AES-CCM encrypt -> ciphertext followed by the mic_len-byte MIC (RFC 3610 2.2-2.3)."""
    size_l = _check(key, nonce, mic_len, len(plaintext))
    cipher = _aes(key, _MODE_ECB)
    t = _mac(cipher, nonce, size_l, mic_len, aad, plaintext)
    s0 = _s0(cipher, nonce, size_l)
    out = _ctr(cipher, nonce, size_l, plaintext)
    for k in range(mic_len):
        out.append(t[k] ^ s0[k])
    return bytes(out)


def decrypt(key, nonce, data, aad=b"", mic_len=4):
    """AES-CCM decrypt and verify (RFC 3610 section 2.5) -> plaintext.

    data is the ciphertext followed by the MIC. Raises CodecError when data is
    shorter than the MIC or the MIC does not match (wrong key, nonce or tampering).
    """
    if len(data) < mic_len:
        raise CodecError("AES-CCM data of %d bytes is shorter than its %d-byte MIC" % (len(data), mic_len))
    n = len(data) - mic_len
    size_l = _check(key, nonce, mic_len, n)
    cipher = _aes(key, _MODE_ECB)
    plain = _ctr(cipher, nonce, size_l, data[:n])
    t = _mac(cipher, nonce, size_l, mic_len, aad, plain)
    s0 = _s0(cipher, nonce, size_l)
    diff = 0
    for k in range(mic_len):
        diff |= (t[k] ^ s0[k]) ^ data[n + k]  # no early exit: constant time
    if diff:
        raise CodecError("AES-CCM authentication failed: MIC mismatch (wrong key or tampered data)")
    return bytes(plain)
