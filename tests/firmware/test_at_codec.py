# AT response codec (hemhub.codec.at) under MicroPython: the shared vectors in
# protocol/vectors/at.json (tests/host/test_at_vectors.py runs the same file
# under CPython), and a fuzz corpus: every line gives a result or a CodecError.
from hemhub.codec import at
from vectors import codec_error, load, norm, rng, same


def _line(v):
    return bytes.fromhex(v["hex"]) if "hex" in v else v["line"].encode()


def test_line_vectors():
    for v in load("at")["lines"]:
        got = norm(at.parse_line(_line(v)))
        assert same(got, v["expect"]), (v["line"], got)


def test_line_errors_name_the_problem():
    for v in load("at")["line_errors"]:
        msg = codec_error(at.parse_line, _line(v))
        assert v["error"] in msg, (v, msg)


def test_csq_reg_cpin_vectors():
    vec = load("at")
    for v in vec["csq"]:
        assert same(list(at.csq(v["fields"])), v["expect"]), v
    for v in vec["reg"]:
        stat = at.reg(v["fields"])
        assert stat == v["expect"] and at.REG[stat] == v["name"], v
    for v in vec["cpin"]:
        assert at.cpin(v["fields"]) == v["expect"], v
    for name, fn in (("csq_errors", at.csq), ("reg_errors", at.reg), ("cpin_errors", at.cpin)):
        for v in vec[name]:
            msg = codec_error(fn, v["fields"])
            assert v["error"] in msg, (name, v, msg)


def test_not_bytes_is_a_codec_error():
    assert "bytes" in codec_error(at.parse_line, "OK")


def test_fuzz_lines():
    r = rng(0x5EED)
    alphabet = b'+:,"0123456789 ACEGIKMOQRSTX\xff'
    kinds = set()
    for _ in range(1500):
        n = next(r) % 24
        line = bytes(alphabet[next(r) % len(alphabet)] for _ in range(n))
        if next(r) % 3 == 0:
            line = b"+CSQ: " + line
        try:
            kinds.add(at.parse_line(line)[0])
        except ValueError as e:
            assert type(e).__name__ == "CodecError", e
    assert "info" in kinds and "text" in kinds
