# Benchmark: the journal's cost per reading, on a 2 MiB littlefs data partition.
#
#   .venv/bin/micropython -X heapsize=96K benchmarks/bench_journal.py [records]
#
# Runs inside MicroPython (Unix port) with the hub's heap, on the file-backed
# flash of tests/firmware/blockdev.py (4096-byte blocks, 512 blocks = 2 MiB,
# NOR rules), which counts what littlefs programs and erases: the flash wear per
# reading. Prints:
#   1. append rate for 200-byte records (1 in 50 an alarm), and the bytes
#      programmed and blocks erased per record;
#   2. pending + read (what the uplink does) and ack rates;
#   3. how many 200-byte readings fit: filling the journal (default capacity,
#      3/4 of the partition) until the first eviction;
#   4. open (recovery) time of the full journal, clean and with a torn tail;
#   5. heap the open journal holds.
# The Unix port's times are this machine's, not an ESP32's; the byte and block
# counts are the same on both.
import gc
import os
import struct
import sys
import time

_root = (sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else ".") + "/.."
sys.path.insert(0, _root + "/firmware")
sys.path.insert(0, _root + "/tests/firmware")

from blockdev import Disk  # noqa: E402
from hemhub.journal import KIND_ALARM, KIND_MEASUREMENT, Journal  # noqa: E402

D = "/data/journal"
RECORD = 200


def _rec(seq):
    return (struct.pack("<II", seq, ~seq & 0xFFFFFFFF) * (RECORD // 8 + 1))[:RECORD]


def _ms(t0):
    return time.ticks_diff(time.ticks_us(), t0) / 1000


def _gap(seq, first, last, count, kinds):
    return b"GAP" + struct.pack("<IIII", seq, first, last, count)


def _ack_runs(j, seqs):
    # Acknowledges seqs as the fleet would: one range per run of consecutive seqs.
    seqs.sort()
    first = prev = seqs[0]
    for s in seqs[1:] + [None]:
        if s != prev + 1:
            j.ack(first, prev)
            first = s
        prev = s


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    d = Disk(blocks=512)
    bd = d.bd
    try:
        j = Journal(D, make_gap=_gap)
        cap = j.stats()["capacity"]
        print("partition 2048 KiB, journal capacity %d KiB, %d-byte records" % (cap // 1024, RECORD))

        # 1. appends
        bd.reset_counters()
        worst = 0
        t0 = time.ticks_us()
        for i in range(n):
            t1 = time.ticks_us()
            j.append_with(KIND_ALARM if i % 50 == 0 else KIND_MEASUREMENT, _rec)
            worst = max(worst, time.ticks_diff(time.ticks_us(), t1))
        ms = _ms(t0)
        print("append: %d records in %.0f ms = %.0f records/s (worst %.1f ms)"
              % (n, ms, n * 1000 / ms, worst / 1000))
        print("flash per record: %.0f bytes programmed, %.2f blocks erased, %.0f bytes read"
              % (bd.programmed / n, bd.erased / n, bd.read_bytes / n))

        # 2. uplink: pending + read, then ack in batches of 16
        buf = bytearray(1024)
        t0 = time.ticks_us()
        sent = 0
        while sent < n:
            seqs = j.pending(16)
            for s in seqs:
                j.read_into(s, buf)
            sent += len(seqs)
            _ack_runs(j, seqs)
        ms = _ms(t0)
        print("uplink: pending(16) + read_into + ack of %d records: %.0f records/s"
              % (sent, sent * 1000 / ms))
        assert j.stats()["records"] == 0

        # 3. fill until the first eviction
        t0 = time.ticks_us()
        count = 0
        while j.stats()["evictions"] == 0:
            j.append_with(KIND_MEASUREMENT, _rec)
            count += 1
        st = j.stats()
        print("capacity: %d readings stored before the first eviction (%d KiB journal, %d per MiB)"
              % (count - 1, cap // 1024, (count - 1) * 1048576 // cap))
        print("  stats when full: %d records, %d KiB framed, %d KiB of blocks, %d segments"
              % (st["records"], st["bytes"] // 1024, st["flash_bytes"] // 1024, st["segments"]))
        j.close()

        # 4. open of the full journal
        for label in ("clean", "torn tail"):
            d.reboot()
            if label == "torn tail":
                name = [x for x in os.listdir(D) if x[0] == "m" and "." not in x][0]
                with open(D + "/" + name, "ab") as f:
                    f.write(b"\xa7\x01\xc8\x00" + b"\x00" * 40)
                d.reboot()
            j = None
            gc.collect()
            before = gc.mem_alloc()
            t0 = time.ticks_us()
            j = Journal(D, make_gap=_gap)
            ms = _ms(t0)
            gc.collect()
            held = gc.mem_alloc() - before
            print("open (%s) of the full journal: %.1f ms, %d records, heap held %d bytes"
                  % (label, ms, j.stats()["records"], held))
            j.close()
    finally:
        d.done()


main()
