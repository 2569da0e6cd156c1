# AES-CCM under MicroPython (cryptolib ECB underneath): the shared vectors in
# protocol/vectors/aes_ccm.json (RFC 3610, NIST SP 800-38C, bthome.io) and a fuzz corpus.
import json

from hemhub.codec import CodecError, aes_ccm
from vectors import rng as _rng


def _vectors():
    with open("protocol/vectors/aes_ccm.json") as f:
        return json.load(f)


def _h(s):
    return bytes.fromhex(s)


def _bytes(rng, n):
    return bytes(next(rng) & 0xFF for _ in range(n))


def test_runs_on_cryptolib():
    import sys

    if sys.implementation.name == "micropython":
        import cryptolib  # noqa: F401  the hub's AES, not the host shim


def test_vectors_encrypt_and_decrypt():
    for v in _vectors()["vectors"]:
        out = aes_ccm.encrypt(_h(v["key"]), _h(v["nonce"]), _h(v["plaintext"]), _h(v["aad"]), v["mic_len"])
        assert out.hex() == v["ciphertext"], v["name"]
        back = aes_ccm.decrypt(_h(v["key"]), _h(v["nonce"]), _h(v["ciphertext"]), _h(v["aad"]), v["mic_len"])
        assert back == _h(v["plaintext"]), v["name"]


def test_decrypt_error_vectors():
    for v in _vectors()["decrypt_errors"]:
        try:
            aes_ccm.decrypt(_h(v["key"]), _h(v["nonce"]), _h(v["ciphertext"]), _h(v["aad"]), v["mic_len"])
        except CodecError as e:
            assert v["error"] in str(e), (v["name"], str(e))
        else:
            raise AssertionError("no error: " + v["name"])


def test_every_single_bit_flip_is_rejected():
    v = _vectors()["vectors"][-1]  # bthome.io example, 4-byte MIC
    good = _h(v["ciphertext"])
    for i in range(len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            aes_ccm.decrypt(_h(v["key"]), _h(v["nonce"]), bytes(bad))
        except CodecError:
            continue
        raise AssertionError("flip of bit %d accepted" % i)


def test_round_trip_random_lengths():
    rng = _rng(0xC0FFEE)
    for n in range(0, 40):
        key = _bytes(rng, 16 if n % 3 else 32)
        nonce = _bytes(rng, 7 + n % 7)
        aad = _bytes(rng, n % 5 * 7)
        mic_len = 4 + 2 * (n % 7)
        msg = _bytes(rng, n)
        sealed = aes_ccm.encrypt(key, nonce, msg, aad, mic_len)
        assert len(sealed) == n + mic_len
        assert aes_ccm.decrypt(key, nonce, sealed, aad, mic_len) == msg


def test_fuzz_decrypt_yields_plaintext_or_codec_error():
    rng = _rng(0xBADC0DE)
    for i in range(300):
        key = _bytes(rng, (16, 32, 15, 0)[i % 4])
        nonce = _bytes(rng, next(rng) % 16)
        data = _bytes(rng, next(rng) % 24)
        mic_len = (4, 6, 8, 3, 16, 17)[i % 6]
        try:
            out = aes_ccm.decrypt(key, nonce, data, b"", mic_len)
        except CodecError:
            continue
        assert isinstance(out, bytes)
