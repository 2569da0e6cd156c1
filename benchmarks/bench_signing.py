# What signing a record costs on the hub: P-256 scalar multiplication, nonce
# precomputation, signing with and without a precomputed nonce, verification,
# and a whole record (encode + COSE_Sign1), with the heap the signer keeps.
#
#   .venv/bin/micropython benchmarks/bench_signing.py
#   .venv/bin/micropython -X heapsize=96K benchmarks/bench_signing.py
#   .venv/bin/python benchmarks/bench_signing.py          (CPython, for comparison)
#
# Prints one line per figure: name, best and median of the repetitions (the
# best is the figure to quote on a shared, noisy machine), unit, repetitions.
import gc
import sys
import time

_here = sys.argv[0].rsplit("/", 2)[0] if sys.argv[0].count("/") >= 2 else "."
sys.path.insert(0, _here + "/firmware")

from hemhub import record  # noqa: E402
from hemhub.crypto import p256, p256_verify  # noqa: E402

try:
    _now, _diff, _unit = time.ticks_us, time.ticks_diff, 1
except AttributeError:  # CPython
    _now, _diff, _unit = time.perf_counter_ns, (lambda a, b: a - b), 1000


def _report(label, times_us, per="ms"):
    times_us.sort()
    scale = 1000 if per == "ms" else 1
    best, median = times_us[0] / scale, times_us[len(times_us) // 2] / scale
    print("%-44s %9.3f %9.3f %s  (x%d)" % (label, best, median, per, len(times_us)))


def _time(label, fn, reps, per="ms"):
    gc.collect()
    times = []
    for _ in range(reps):
        t0 = _now()
        fn()
        times.append(_diff(_now(), t0) / _unit)
    _report(label, times, per)


def main():
    print("interpreter:", sys.implementation.name, sys.version.split(";")[-1].strip())
    print("%-44s %9s %9s" % ("", "best", "median"))
    gc.collect()
    free0 = gc.mem_free() if hasattr(gc, "mem_free") else None

    _time("comb table for G (first use, once)", p256._comb_table, 1)

    d = p256.generate_private_key()
    k = p256.generate_private_key()
    _time("k*G, fixed-base comb (Jacobian)", lambda: p256._mul_base(k), 20)
    _time("k*P, 4-bit window (Jacobian)", lambda: p256_verify.mul_point(k, p256.GX, p256.GY), 5)
    _time("inversion mod p (pow)", lambda: p256._inv(k, p256.P), 20)
    _time("precompute(): k, r = x(kG), k^-1", p256.precompute, 20)

    digest = p256.sha256(b"reading")
    nonces = [p256.precompute() for _ in range(50)]
    pool = iter(nonces)
    _time("sign_digest with a precomputed nonce", lambda: p256.sign_digest(d, digest, next(pool)), 50, "us")
    _time("sign_digest without one (precompute + sign)",
          lambda: p256.sign_digest(d, digest, p256.precompute()), 20)
    signer = p256.Signer(d)
    sig = signer.sign_digest(digest)
    _time("verify_digest", lambda: p256_verify.verify_digest(signer.public_key, digest, sig), 5)

    fields = {
        "hub": "HH1-2026-00042", "seq": 1234, "kind": "observations",
        "hub_time": 1767225605, "device_time": 1767225600,
        "peripheral": {"addr": b"\xa4\xc1\x38\x00\x00\x01", "kind": "scale"},
        "observations": [{"mdc": 188736, "value": 72.35, "unit": "kg"}],
    }
    _time("encode_payload (weight reading)", lambda: record.encode_payload(fields), 50, "us")

    def signed_from_pool():
        signer.refill()  # idle time, not counted below
        return signer

    def sign_one():
        record.sign_record(fields, signer)

    # whole record with a nonce ready: refill outside the timed call
    times = []
    for _ in range(20):
        signed_from_pool()
        gc.collect()
        t0 = _now()
        sign_one()
        times.append(_diff(_now(), t0) / _unit)
    _report("sign_record, nonce from the pool", times)
    _time("sign_record, empty pool", sign_one, 10)

    size = len(record.sign_record(fields, signer))
    print("%-44s %9d bytes" % ("typical weight record (COSE_Sign1)", size))

    if free0 is not None:
        del nonces, pool
        gc.collect()
        print("%-44s %9d bytes" % ("heap held after all of the above", free0 - gc.mem_free()))
        print("%-44s %9d bytes" % ("heap free now", gc.mem_free()))


main()
