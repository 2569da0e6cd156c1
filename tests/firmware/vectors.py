# Shared by the codec tests (MicroPython and CPython alike): loading a vector
# file from protocol/vectors and comparing decoder output with its JSON form.
import json

from hemhub.codec import CodecError


def load(name):
    with open("protocol/vectors/%s.json" % name) as f:
        return json.load(f)


def section(name, section):
    """The vectors of one section of protocol/vectors/<name>.json, one at a time.
    The vector files hold one vector per line, so the 96 KiB heap reads them
    line by line instead of parsing the whole file. A section written on one
    line ("name": value) yields that value."""
    with open("protocol/vectors/%s.json" % name) as f:
        inside = False
        for line in f:
            line = line.strip()
            if not inside:
                if line == '"%s": [' % section:
                    inside = True
                elif line.startswith('"%s": ' % section):
                    yield json.loads(line[len(section) + 4 :].rstrip(","))
                    return
                continue
            if line.startswith("]"):
                return
            yield json.loads(line.rstrip(","))


def norm(x):
    """Decoder output in JSON shapes: tuples become lists, bytes {"hex": ...}."""
    if isinstance(x, (tuple, list)):
        return [norm(i) for i in x]
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, (bytes, bytearray)):
        return {"hex": bytes(x).hex()}
    return x


def same(a, b):
    """a equals the expected b, with ints and floats and bools kept apart."""
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b
    if type(b) is int:
        return type(a) is int and a == b
    if type(b) is float:
        return type(a) is float and (a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b)))
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(same(a[i], b[i]) for i in range(len(b)))
    if isinstance(b, dict):
        return isinstance(a, dict) and sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in b)
    return a == b


def codec_error(fn, *args):
    """The message of the CodecError fn(*args) raises; fails if it raises none."""
    try:
        fn(*args)
    except CodecError as e:
        return str(e)
    raise AssertionError("no CodecError for %r" % (args,))


def rng(seed):
    """A deterministic pseudo-random stream (xorshift32) for fuzz corpora."""
    while True:
        seed ^= (seed << 13) & 0xFFFFFFFF
        seed ^= seed >> 17
        seed ^= (seed << 5) & 0xFFFFFFFF
        yield seed


def hexstr(data):
    """bytes -> lowercase hex str. MicroPython 1.26.1's bytes.hex() returns b''
    (not '') for empty input; binascii gives a str for every length."""
    import binascii

    return binascii.hexlify(data).decode()
