# The journal's on-flash format (docs/journal.md, "On flash"): record frames,
# segment files and their names, the state file, and a cursor that walks a
# segment stream. Used only by hemhub.journal (and journal_recover, while it opens).
import os
import struct
from array import array
from binascii import crc32

from micropython import const

MAX_RECORD = const(1024)  # largest record, bytes
OVERHEAD = const(12)  # frame header + CRC-32

_MAGIC = const(0xA7)  # first byte of every frame: frame format 1
_HDR = "<BBHI"  # magic, kind, payload length, seq
_HDR_LEN = const(8)
_BLOCK = const(4096)
STATE_HDR = "<4sIIIIIBB"  # magic, ceiling, dropped, evictions, floor a, floor m, na, nm
STATE_FIXED = const(26)
MAX_RANGES = const(4)  # acknowledged ranges kept per stream above its floor

# Scratch buffers shared by every journal object (the hub has one): each use
# fills and consumes them without yielding in between.
HDR = bytearray(_HDR_LEN)
TAIL = bytearray(4)
_buf = None


def buffer():
    # The MAX_RECORD-byte read buffer, made on first use.
    global _buf
    if _buf is None:
        _buf = bytearray(MAX_RECORD)
    return _buf


class JournalError(Exception):
    pass


class JournalFull(JournalError):
    pass


class JournalCorrupt(JournalError):
    pass


def flash_bytes(n):
    # littlefs stores a file in whole blocks; each block after the first gives up
    # a few bytes to the CTZ skip-list. (Files <= 128 bytes are inline: ignored.)
    return (n + _BLOCK - 9) // (_BLOCK - 8) * _BLOCK


def seg_index(segs, seq):
    # Index of the first segment whose last seq is >= seq (len(segs) if none).
    lo, hi = 0, len(segs)
    while lo < hi:
        mid = (lo + hi) // 2
        if segs[mid][1] < seq:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Segs:
    # A stream's segment summaries, oldest first, each read and written as the
    # tuple (first seq, last seq, records, length, sealed). Kept as 5 words a
    # segment in one array: a tuple per segment, allocated while opening amid
    # short-lived garbage, would scatter across the heap and fragment it.
    def __init__(self):
        self.a = array("I", bytes(4 * 5 * 8))
        self.lo = 0  # word offset of the oldest segment
        self.hi = 0  # word offset past the newest

    def __len__(self):
        return (self.hi - self.lo) // 5

    def _at(self, i):
        n = (self.hi - self.lo) // 5
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("segment index out of range")
        return self.lo + 5 * i

    def __getitem__(self, i):
        o = self._at(i)
        a = self.a
        return a[o], a[o + 1], a[o + 2], a[o + 3], a[o + 4] == 1

    def __setitem__(self, i, seg):
        o = self._at(i)
        a = self.a
        a[o], a[o + 1], a[o + 2], a[o + 3] = seg[0], seg[1], seg[2], seg[3]
        a[o + 4] = 1 if seg[4] else 0

    def append(self, seg):
        a = self.a
        if self.hi + 5 > len(a):
            n = self.hi - self.lo
            if n + 5 > len(a) // 2:  # grow (rarely): a new array twice the size
                a = array("I", bytes(8 * len(a)))
            for k in range(n):  # or slide the live part down
                a[k] = self.a[self.lo + k]
            self.a, self.lo, self.hi = a, 0, n
        self.hi += 5
        self[-1] = seg

    def pop(self, i=-1):
        seg = self[i]
        if self._at(i) == self.lo:
            self.lo += 5
        elif self._at(i) == self.hi - 5:
            self.hi -= 5
        else:
            raise ValueError("only the oldest or the newest segment can go")
        return seg

    def sort(self):
        for i in range(1, len(self)):  # insertion sort by first seq: few segments
            seg = self[i]
            j = i
            while j > 0 and self[j - 1][0] > seg[0]:
                self[j] = self[j - 1]
                j -= 1
            self[j] = seg


def write_frame(f, seq, kind, data):
    struct.pack_into(_HDR, HDR, 0, _MAGIC, kind, len(data), seq)
    struct.pack_into("<I", TAIL, 0, crc32(data, crc32(HDR)))
    f.write(HDR)
    f.write(data)
    f.write(TAIL)
    f.flush()  # lfs_file_sync: the frame is committed when this returns


class Cursor:
    # Walks one stream's records in seq order, reading headers only. It keeps
    # (segment, offset) and finds its place again by seq if that segment was
    # sealed or pruned meanwhile. After next() returns True, seq/kind/n describe
    # the record and payload(buf) reads and checks it.
    def __init__(self, st, start):
        self.st = st
        self.start = start  # the next record wanted has seq >= start
        self.i = -1  # index of the segment being read in st.segs ...
        self.first = -1  # ... checked against its first seq
        self.off = 0  # offset of the next frame
        self.rec = 0  # offset of the current record's frame
        self.f = None
        self.seq = self.kind = self.n = 0

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def _segment(self):
        segs = self.st.segs
        i = self.i
        if 0 <= i < len(segs) and segs[i][0] == self.first:
            return segs[i]
        self.close()
        i = seg_index(segs, self.start)
        if i >= len(segs):
            return None
        seg = segs[i]
        self.i = i
        self.first = seg[0]
        h = self.st.hint
        self.off = h[2] if h[0] == seg[0] and h[1] < self.start else 0
        return seg

    def next(self):
        hdr = HDR
        while True:
            seg = self._segment()
            if seg is None:
                return False
            off = self.off
            if off + OVERHEAD <= seg[3]:
                if self.f is None:
                    self.f = open(self.st.path(seg), "rb")
                self.f.seek(off)
                if self.f.readinto(hdr) == _HDR_LEN:
                    magic, kind, n, seq = struct.unpack(_HDR, hdr)
                    if magic == _MAGIC and 0 < n <= MAX_RECORD and off + n + OVERHEAD <= seg[3]:
                        self.off = off + n + OVERHEAD
                        if seq >= self.start:
                            self.rec = off
                            self.seq = seq
                            self.kind = kind
                            self.n = n
                            self.start = seq + 1
                            return True
                        continue
            # End of the segment (or a damaged frame, which ends it): next one.
            if self.start <= seg[1]:
                self.start = seg[1] + 1
            self.close()
            self.i = -1

    def payload(self, buf):
        # Reads the current record into buf and checks its CRC; returns its
        # length, or -1 if its segment was pruned since next().
        segs = self.st.segs
        if not (0 <= self.i < len(segs) and segs[self.i][0] == self.first):
            return -1
        if self.f is None:
            self.f = open(self.st.path(segs[self.i]), "rb")
        n = self.n
        mv = memoryview(buf)[:n]
        hdr = HDR
        struct.pack_into(_HDR, hdr, 0, _MAGIC, self.kind, n, self.seq)
        self.f.seek(self.rec + _HDR_LEN)
        if (self.f.readinto(mv) != n or self.f.readinto(TAIL) != 4
                or crc32(mv, crc32(hdr)) != struct.unpack("<I", TAIL)[0]):
            raise JournalCorrupt("journal record %d in %s is damaged (CRC mismatch)"
                                 % (self.seq, self.st.path(segs[self.i])))
        h = self.st.hint
        h[0] = self.first
        h[1] = self.seq
        h[2] = self.off
        return n


def scan(path, first):
    # Checks a segment frame by frame (header, rising seqs starting at `first`,
    # CRC); returns (last seq, records, valid length, file size). Stops at the
    # first bad frame: whatever follows it is a torn tail.
    hdr, tail, buf = HDR, TAIL, buffer()
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        off = count = 0
        last = first - 1
        while off + OVERHEAD <= size:
            if f.readinto(hdr) != _HDR_LEN:
                break
            magic, _, n, seq = struct.unpack(_HDR, hdr)
            if magic != _MAGIC or not 0 < n <= MAX_RECORD or off + n + OVERHEAD > size:
                break
            if seq <= last or (count == 0 and seq != first):
                break
            mv = memoryview(buf)[:n]
            if f.readinto(mv) != n or f.readinto(tail) != 4:
                break
            if crc32(mv, crc32(hdr)) != struct.unpack("<I", tail)[0]:
                break
            off += n + OVERHEAD
            count += 1
            last = seq
    return last, count, off, size


def save_state(d, ceiling, dropped, evictions, a, m):
    # The state file: fixed fields, each stream's ranges, CRC-32. Written to
    # state.tmp and renamed over state (atomic in littlefs). At most 94 bytes,
    # so littlefs keeps it inline in the directory: a save programs a few
    # metadata bytes and erases nothing.
    na, nm = len(a.ranges) // 2, len(m.ranges) // 2
    end = STATE_FIXED + 8 * (na + nm)
    buf = bytearray(end + 4)
    struct.pack_into(STATE_HDR, buf, 0, b"HJS1", ceiling, dropped, evictions,
                     a.floor, m.floor, na, nm)
    o = STATE_FIXED
    for v in a.ranges + m.ranges:
        struct.pack_into("<I", buf, o, v)
        o += 4
    struct.pack_into("<I", buf, end, crc32(memoryview(buf)[:end]))
    with open(d + "/state.tmp", "wb") as f:
        f.write(buf)
    os.rename(d + "/state.tmp", d + "/state")
