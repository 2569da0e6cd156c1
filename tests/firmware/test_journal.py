# The journal (hemhub.journal, docs/journal.md) on a real littlefs image, inside
# MicroPython with the hub's 96 KiB heap. Power cuts come from the block device
# (blockdev.py): the image keeps exactly the bytes programmed before the cut.
import gc
import os
import struct

from blockdev import Disk, PowerCut, sweep
from hemhub.journal import KIND_ALARM, KIND_GAP, Journal, JournalError, JournalFull

D = "/data/journal"
M = 1  # KIND_MEASUREMENT
A = KIND_ALARM


def rec(seq, n=200):
    # Stands in for a signed record: embeds its seq, as the signer's does.
    return (struct.pack("<II", seq, seq ^ 0x5A5A5A5A) * (n // 8 + 1))[:n]


def expect(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return str(e)
    raise AssertionError("no %s" % exc.__name__)


def files():
    return sorted(n for n in os.listdir(D) if n[0] in "am")


class Model:
    # What a test knows: the seqs handed out, the records committed (append
    # returned), the acknowledged prefix, the record in flight at a power cut.
    def __init__(self, seqs=1024):
        self.kinds = bytearray(seqs)  # seq -> kind of a committed record, 0: none
        self.issued = 0  # highest seq handed out
        self.trying = 0  # kind << 24 | seq of the record being appended
        self.acked = 0  # seqs <= acked: acknowledged ...
        self.acking = 0  # ... or maybe (an ack was under way)
        self.gaps = []  # (seq, first, last, count) of every gap marker made
        self.dev = None  # the block device whose death means a power cut

    def snapshot(self):
        return bytes(self.kinds), self.issued, self.acked, len(self.gaps)

    def restore(self, snap):
        self.kinds[:] = snap[0]
        self.issued, self.acked, n = snap[1:]
        self.acking = self.acked
        self.trying = 0
        del self.gaps[n:]

    def make_gap(self, seq, first, last, count, kinds):
        assert sum(kinds.values()) == count
        self.issued = max(self.issued, seq)
        self.gaps.append((seq, first, last, count))
        return b"GAP" + struct.pack("<IIII", seq, first, last, count)

    def call(self, fn, *args, **kw):
        # Runs a journal call; once the device is dead (blockdev.py) the call
        # did not return as far as the test is concerned: PowerCut.
        try:
            r = fn(*args, **kw)
        except Exception:
            if self.dev is not None and self.dev.dead:
                raise PowerCut()  # noqa: B904
            raise
        if self.dev is not None and self.dev.dead:
            raise PowerCut()
        return r

    def journal(self, **kw):
        return self.call(Journal, D, make_gap=self.make_gap, **kw)

    def add(self, j, kind=M, n=200):
        def make(seq):
            self.issued = max(self.issued, seq)
            self.trying = kind << 24 | seq
            return rec(seq, n)

        seq = self.call(j.append_with, kind, make)
        self.kinds[seq] = kind
        self.trying = 0
        return seq

    def ack(self, j, last):
        self.acking = last
        self.call(j.ack, 1, last)
        self.acked = last

    def check(self, j):
        # Every committed record is intact, or acknowledged, or covered by a
        # stored gap marker; nothing else is stored but the record in flight;
        # the next seq is above every seq handed out.
        lost = []
        for seq, kind, data in j.iter_from(1):
            if kind == KIND_GAP:
                lost.append(struct.unpack_from("<II", data, 7))
            elif not self.kinds[seq] and seq > self.acking:
                assert self.trying == kind << 24 | seq, seq
                self.kinds[seq] = kind
            if kind != KIND_GAP:
                assert bytes(data) == rec(seq), seq
        for seq in range(self.acked + 1, self.issued + 1):
            if self.kinds[seq] and j.read(seq) is None:
                assert seq <= self.acking or any(f <= seq <= la for f, la in lost), seq
        assert j.stats()["next_seq"] > self.issued


def test_append_read_iterate_and_reopen():
    d = Disk()
    m = Model()
    try:
        j = m.journal(capacity_bytes=160 * 1024, segment_bytes=2048)
        for i in range(40):
            assert m.add(j, A if i % 7 == 0 else M, 50 + i) == i + 1
        for _ in range(2):
            for s in range(1, 41):
                assert j.read(s) == (A if s % 7 == 1 else M, rec(s, 49 + s)), s
            assert j.read(0) is None and j.read(41) is None
            buf = bytearray(1024)
            assert j.read_into(8, buf) == (A, 57) and buf[:57] == rec(8, 57)
            got = [(s, k, bytes(mv)) for s, k, mv in j.iter_from(30)]
            assert got == [(s, A if s % 7 == 1 else M, rec(s, 49 + s)) for s in range(30, 41)]
            st = j.stats()
            assert st["records"] == 40 and st["priority_records"] == 6
            assert st["oldest"] == 1 and st["newest"] == 40 and st["dropped"] == 0
            assert st["bytes"] == sum(49 + s + 12 for s in range(1, 41))
            j.close()
            d.reboot()
            j = m.journal(capacity_bytes=160 * 1024, segment_bytes=2048)
        assert m.add(j) > 40
        j.close()
    finally:
        d.done()


def test_bad_inputs_get_clean_errors():
    d = Disk()
    try:
        j = Journal(D, capacity_bytes=100 * 1024)
        expect(ValueError, j.append_with, 256, rec)
        expect(ValueError, j.append_with, M, rec, 0)
        expect(ValueError, j.append_with, M, lambda s: b"")  # nothing stored: seq 1 is given back
        expect(ValueError, j.append_with, M, lambda s: rec(s, 300), 200)  # again

        def no_memory(seq):
            raise MemoryError("signing")

        expect(MemoryError, j.append_with, A, no_memory)
        assert j.append_with(M, rec) == 1  # no gap in the sequence
        for first, last in ((0, 1), (2, 1), (2, 3), (1, "2")):
            assert "never issued" in expect(JournalError, j.ack, first, last)
        expect(ValueError, j.read_into, 1, bytearray(10))
        assert "/data/no/dir" in expect(JournalError, Journal, "/data/no/dir")
        j.close()
    finally:
        d.done()


def test_ack_prunes_whole_segments_only_and_persists():
    d = Disk()
    m = Model()
    try:
        # 212-byte frames, 1024-byte segments: 4 records a segment.
        j = m.journal(capacity_bytes=100 * 1024, segment_bytes=1024)
        for _ in range(20):
            m.add(j)
        assert len(files()) == 5
        assert j.ack(1, 6)
        assert len(files()) == 4 and j.read(4) is None
        assert j.read(5) == (M, rec(5))  # acknowledged, but its segment lives on
        assert j.pending(3) == [7, 8, 9]
        assert not j.ack(2, 5)  # again: nothing changes
        j.close()
        d.reboot()
        j = m.journal(capacity_bytes=100 * 1024, segment_bytes=1024)
        assert j.pending(3) == [7, 8, 9] and len(files()) == 4
        j.ack(7, 20)
        assert files() == [] and j.pending() == [] and j.stats()["records"] == 0
        j.close()
    finally:
        d.done()


def test_pending_lists_alarms_first():
    d = Disk()
    m = Model()
    try:
        j = m.journal(capacity_bytes=100 * 1024, segment_bytes=1024)
        for i in range(1, 41):
            m.add(j, A if i in (31, 37) else M)
        assert j.pending(5) == [31, 37, 1, 2, 3]
        assert j.pending(5, alarms_first=False) == [1, 2, 3, 4, 5]
        assert j.pending(4, after=3) == [31, 37, 4, 5]
        j.ack(31, 31)
        j.ack(37, 37)
        assert j.pending(3) == [1, 2, 3]
        assert j.pending(100) == [i for i in range(1, 41) if i not in (31, 37)]
        j.close()
    finally:
        d.done()


def test_interleaved_and_out_of_order_acks_prune_everything():
    d = Disk()
    m = Model()
    try:
        j = m.journal(capacity_bytes=100 * 1024, segment_bytes=1024)
        for i in range(1, 61):
            m.add(j, A if i % 6 == 0 else M)
        for a in range(6, 61, 6):  # each alarm acknowledged alone
            j.ack(a, a)
        # Measurements acknowledged in runs that stop at each alarm, newest
        # first, and across a reboot.
        for first in range(55, 0, -6):
            j.ack(first, first + 4)
            if first == 31:
                j.close()
                d.reboot()
                j = m.journal(capacity_bytes=100 * 1024, segment_bytes=1024)
        assert j.pending() == [] and files() == [], files()
        j.close()
    finally:
        d.done()


def test_seq_is_never_reused_after_pruning_everything_and_reopening():
    d = Disk()
    m = Model()
    try:
        j = m.journal(capacity_bytes=100 * 1024)
        for _ in range(5):
            for _ in range(3):
                assert m.add(j) > m.acked
            m.ack(j, m.issued)
            assert files() == []
            j.close()
            d.reboot()
            j = m.journal(capacity_bytes=100 * 1024)
            assert j.stats()["next_seq"] > m.issued
            # nothing is stored, yet the journal knows where a restart gap starts
            assert j.stats()["newest"] is None and j.resumed_after == m.issued
        j.close()
    finally:
        d.done()


def test_full_journal_evicts_oldest_measurements_behind_a_gap_marker():
    d = Disk()
    m = Model()
    kw = {"capacity_bytes": 64 * 1024, "segment_bytes": 4088}
    try:
        j = m.journal(**kw)
        for _ in range(400):
            m.add(j)
            st = j.stats()
            assert st["flash_bytes"] <= st["capacity"], st
        assert len(m.gaps) >= 5
        for _ in range(2):
            m.check(j)
            for gap in m.gaps:
                assert j.read(gap[0]) == (KIND_GAP, b"GAP" + struct.pack("<IIII", *gap))
            st = j.stats()
            lost = sum(g[3] for g in m.gaps)
            assert st["dropped"] == lost and st["evictions"] == len(m.gaps)
            assert st["records"] == 400 - lost + len(m.gaps)
            assert j.pending(len(m.gaps)) == [g[0] for g in m.gaps]  # markers go first
            j.close()
            d.reboot()
            j = m.journal(**kw)
        j.close()
    finally:
        d.done()


def test_alarms_are_never_evicted_and_measurements_keep_out_of_their_reserve():
    d = Disk()
    m = Model()
    cap = 64 * 1024
    try:
        j = m.journal(capacity_bytes=cap, segment_bytes=4088, alarm_reserve_bytes=16384)
        for _ in range(300):
            m.add(j)
        st = j.stats()
        assert st["flash_bytes"] - st["priority_flash_bytes"] <= cap - 16384
        evictions = st["evictions"]
        for _ in range(40):  # these fit in the reserve
            m.add(j, A)
        assert j.stats()["evictions"] == evictions
        refused = 0
        for _ in range(400):  # more alarms than the whole journal holds
            try:
                m.add(j, A)
            except JournalFull:
                refused += 1
        assert refused and j.stats()["refused"] == refused
        assert j.stats()["records"] == j.stats()["priority_records"]
        for s in range(1, m.issued + 1):
            if m.kinds[s] == A:
                assert j.read(s) == (A, rec(s)), s
        expect(JournalFull, m.add, j)
        m.ack(j, m.issued)
        m.add(j)
        m.add(j, A)
        j.close()
    finally:
        d.done()


def test_torn_tail_is_detected_and_discarded():
    d = Disk()
    m = Model()
    try:
        j = m.journal(capacity_bytes=100 * 1024)
        for _ in range(10):
            m.add(j)
        j.close()
        # Half a frame after the last one: the header of seq 11, 50 of 200 bytes;
        # and a file holding one whole frame with a bad CRC.
        with open(D + "/" + files()[0], "ab") as f:
            f.write(struct.pack("<BBHI", 0xA7, M, 200, 11) + rec(11)[:50])
        with open(D + "/m00000100", "wb") as f:
            f.write(struct.pack("<BBHI", 0xA7, M, 200, 0x100) + rec(0x100) + b"\0\0\0\0")
        j = m.journal(capacity_bytes=100 * 1024)
        assert files() == ["m00000001.0000000a.a.848"]  # sealed before the tail
        assert j.stats()["records"] == 10 and j.read(11) is None
        m.check(j)
        s = m.add(j)
        assert s > 11 and j.read(s) == (M, rec(s))
        j.close()
        # A damaged state file: the journal skips a whole reservation of seqs.
        with open(D + "/state", "wb") as f:
            f.write(b"HJS1 garbage")
        j = m.journal(capacity_bytes=100 * 1024)
        assert m.add(j) > s
        j.close()
    finally:
        d.done()


# ---- power cuts ------------------------------------------------------------------

class Rand:
    def __init__(self, seed):
        self.x = seed

    def __call__(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def test_power_cuts_at_random_points_keep_every_committed_record():
    d = Disk(blocks=48)
    m = Model(4096)
    rnd = Rand(7)
    kw = {"capacity_bytes": 48 * 1024, "segment_bytes": 2048}
    try:
        for _ in range(40):
            m.dev = d.bd.arm(rnd(60000))
            j = None
            try:
                j = m.journal(**kw)  # recovery itself may be cut
                m.check(j)
                while True:
                    r = rnd(300)
                    if r == 0 and m.issued:
                        m.ack(j, m.issued)
                    else:
                        m.add(j, A if r < 30 else M)
            except PowerCut:
                pass
            if j is not None:
                j.close()
            d.reboot()
        m.dev = None
        j = m.journal(**kw)
        m.check(j)
        j.close()
        assert m.issued > 300 and m.gaps and m.acked
    finally:
        d.done()


def _sweep(setup, operation, step, kw):
    # Power cut at every step-th programmed byte of operation(j, model).
    m = Model()
    snap = []

    def prepare():
        j = m.journal(**kw)
        setup(j, m)
        j.close()
        snap.append(m.snapshot())

    def run(arm):
        m.restore(snap[0])
        m.dev = None
        j = m.journal(**kw)
        m.dev = arm()
        try:
            operation(j, m)
        finally:
            j.close()

    def check():
        m.dev = None
        j = m.journal(**kw)
        m.check(j)
        j.close()

    return sweep(32, prepare, run, check, step)


_KW = {"capacity_bytes": 64 * 1024, "segment_bytes": 1024}


def _sixteen(j, m):
    # 15 measurements in 4 segments and an alarm (seq 6).
    for i in range(16):
        m.add(j, A if i == 5 else M)


def test_power_cut_at_every_point_of_appends_that_seal_and_reserve_seqs():
    def setup(j, m):
        for i in range(62):
            m.add(j, A if i % 9 == 5 else M)
        m.ack(j, 50)

    def op(j, m):
        for _ in range(5):  # seq 65 needs a new reservation; seals a segment
            m.add(j)

    assert _sweep(setup, op, 61, _KW) > 5 * 212


def test_power_cut_at_every_point_of_an_ack_that_prunes():
    _sweep(_sixteen, lambda j, m: m.ack(j, 14), 7, _KW)


def test_power_cut_at_every_point_of_an_eviction():
    def setup(j, m):
        while not m.gaps:
            m.add(j)

    def op(j, m):
        n = len(m.gaps)
        while len(m.gaps) == n:
            m.add(j)

    _sweep(setup, op, 61, _KW)


# ---- memory ------------------------------------------------------------------------

def _fill(m, kw, n):
    j = m.journal(**kw)
    for i in range(n):
        m.add(j, A if i % 50 == 0 else M)
    j.close()


def test_heap_a_journal_of_3000_records_within_budget():
    # Budget: an open journal of 3000 records holds < 8 KiB of heap, and
    # append/read/pending/iterate/ack/reopen all work with 16 KiB of heap free.
    d = Disk(blocks=256)
    m = Model(4096)
    kw = {"capacity_bytes": 900 * 1024}
    try:
        _fill(m, kw, 3000)  # in a frame of its own, so that no stale reference survives
        gc.collect()
        before = gc.mem_alloc()
        j = m.journal(**kw)
        j.read(1)  # makes the read buffer
        gc.collect()
        held = gc.mem_alloc() - before
        print("journal of 3000 records holds", held, "bytes of heap")
        assert held < 8 * 1024, held
        ballast = []
        for _ in range(3):
            gc.collect()
            while gc.mem_free() > 16 * 1024:
                ballast.append(bytearray(256))
        for i in range(100):
            m.add(j, A if i % 10 == 0 else M)
        assert len(j.pending(16)) == 16
        for s in range(1000, 1100):
            assert j.read(s) is not None
        assert sum(1 for _ in j.iter_from(2901)) == 200
        m.ack(j, 1500)
        j.close()
        j = m.journal(**kw)
        assert j.stats()["records"] > 1500
        j.close()
        ballast = None
    finally:
        d.done()

