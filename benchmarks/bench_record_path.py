# Benchmark: the whole record path on the hub: sign (COSE_Sign1 / ES256) and
# commit to the journal, as hemhub.recorder.Recorder does for every reading.
#
#   .venv/bin/hubctl build --out build
#   .venv/bin/micropython -X heapsize=96K benchmarks/bench_record_path.py [records]
#
# (the built .mpy modules, as on the hub: compiling the source inside a 96 KiB
# heap would measure the compiler, not the firmware)
# Inside MicroPython (Unix port) with the hub's heap, on the file-backed NOR
# flash of tests/firmware/blockdev.py (2 MiB littlefs data partition). Prints:
#   1. sustained signed-and-committed readings per second, nonces precomputed
#      in the same loop (i.e. including all elliptic-curve work);
#   2. latency an alarm sees from Recorder.event() call to committed return:
#      with a precomputed nonce waiting (the normal case) and with the pool
#      empty (a burst that outran idle time), p50 / p99 / max;
#   3. bytes one typical weight reading takes in the journal (record + framing).
import gc
import sys
import time

_root = (sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else ".") + "/.."
sys.path.insert(0, _root + "/tests/firmware")
sys.path.insert(0, _root + "/build/app")

from blockdev import Disk  # noqa: E402
from hemhub.crypto import p256  # noqa: E402
from hemhub.journal_format import OVERHEAD  # noqa: E402
from hemhub.recorder import Recorder  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
OBS = [{"mdc": 188736, "value": 72.35, "unit": "kg"}]
SCALE = {"addr": "a4c138000001", "kind": "scale"}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main():
    disk = Disk(blocks=512)
    signer = p256.Signer(p256.generate_private_key(), pool_size=2)
    rec = Recorder("HH1-2026-00042", signer, path="/data/journal", clock=lambda: 1795392000)
    gc.collect()

    t0 = time.ticks_us()
    for _ in range(N):
        signer.refill()  # idle-time work, done here in the same loop
        rec.observations(OBS, SCALE)
    dt = time.ticks_diff(time.ticks_us(), t0) / 1e6
    print("sustained: %d signed readings committed in %.2f s = %.0f records/s (all EC work included)"
          % (N, dt, N / dt))

    spent = 0
    for _ in range(N):
        signer.refill()  # idle time: not counted
        signer.refill()
        t = time.ticks_us()
        rec.observations(OBS, SCALE)
        spent += time.ticks_diff(time.ticks_us(), t)
    print("append with nonces precomputed in idle time: %.0f signed records/s" % (N / (spent / 1e6)))

    ready, empty = [], []
    for _ in range(60):
        signer.refill()
        signer.refill()
        t = time.ticks_us()
        rec.event("door_open", source="wired")
        ready.append(time.ticks_diff(time.ticks_us(), t) / 1000)
    for _ in range(30):
        while signer.ready():
            signer.sign(b"drain")  # spend the pool: the worst case
        t = time.ticks_us()
        rec.event("door_open", source="wired")
        empty.append(time.ticks_diff(time.ticks_us(), t) / 1000)
    print("alarm, nonce precomputed: p50 %.2f ms, p99 %.2f ms, max %.2f ms"
          % (pct(ready, 50), pct(ready, 99), max(ready)))
    print("alarm, pool empty:        p50 %.2f ms, p99 %.2f ms, max %.2f ms"
          % (pct(empty, 50), pct(empty, 99), max(empty)))

    seq = rec.observations(OBS, SCALE)
    size = len(rec.journal.read(seq)[1])
    print("typical weight reading: %d bytes signed record + %d bytes journal framing = %d bytes"
          % (size, OVERHEAD, size + OVERHEAD))
    gc.collect()
    print("heap: %d bytes free of %d with journal and signer open"
          % (gc.mem_free(), gc.mem_free() + gc.mem_alloc()))
    rec.journal.close()
    disk.done()


main()
