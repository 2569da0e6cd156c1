# One chain of journal segment files and what is acknowledged in it
# (docs/journal.md). Used only by hemhub.journal: tag "a" holds the priority
# class, "m" everything else.
#
# A segment is the tuple (first seq, last seq, records, length, sealed). The open
# segment (the newest, still appended to) is named <tag><first:08x>; sealing
# renames it to <tag><first:08x>.<last:08x>.<records:x>.<length:x>, so that
# opening the journal learns every sealed segment's summary from its name.
import os

from micropython import const

from hemhub.journal_format import (
    MAX_RANGES,
    OVERHEAD,
    Cursor,
    JournalError,
    Segs,
    flash_bytes,
    scan,
    write_frame,
)

_ENOENT = const(2)


class Stream:
    def __init__(self, d, tag):
        self.dir = d
        self.tag = tag
        self.segs = Segs()  # oldest first; only segs[-1] is normally unsealed
        self.fh = None  # append handle on segs[-1] while it is the open segment
        self.poisoned = False  # segs[-1] could not be sealed: never append to it
        self.used = 0  # flash bytes taken by the segments (whole blocks)
        self.floor = 1  # every record here with seq < floor is acknowledged
        self.ranges = []  # acknowledged [first, last, ...] above floor, sorted, flat
        self.hint = [0, 0, 0]  # segment first, seq last read, offset after it

    def path(self, seg):
        if seg[4]:
            return "%s/%s%08x.%08x.%x.%x" % (self.dir, self.tag, seg[0], seg[1], seg[2], seg[3])
        return "%s/%s%08x" % (self.dir, self.tag, seg[0])

    def close_fh(self):
        f = self.fh
        self.fh = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    # ---- segments ----------------------------------------------------------------

    def growth(self, n, seg_bytes):
        # Flash bytes that appending n bytes would add.
        if n == 0:
            return 0
        segs = self.segs
        if len(segs) and not segs[-1][4] and not self.poisoned and segs[-1][3] + n <= seg_bytes:
            length = segs[-1][3]
            return flash_bytes(length + n) - flash_bytes(length)
        return flash_bytes(n)

    def append(self, seq, kind, data, seg_bytes):
        flen = len(data) + OVERHEAD
        segs = self.segs
        if len(segs) and not segs[-1][4] and (self.poisoned or segs[-1][3] + flen > seg_bytes):
            self.seal()
        if not len(segs) or segs[-1][4] or self.poisoned:
            segs.append((seq, seq, 0, 0, False))
            self.poisoned = False
        seg = segs[-1]
        try:
            if self.fh is None:
                self.fh = open(self.path(seg), "ab")
            write_frame(self.fh, seq, kind, data)
        except OSError as e:
            try:
                self._repair()
            except OSError:
                self.poisoned = True
            if len(segs) and segs[-1][1] == seq and segs[-1][2]:
                return  # committed after all
            raise JournalError("could not store record %d in %s: %s" % (seq, self.dir, e))  # noqa: B904
        self.used += flash_bytes(seg[3] + flen) - flash_bytes(seg[3])
        segs[-1] = (seg[0], seq, seg[2] + 1, seg[3] + flen, False)

    def seal(self):
        # Renames the open segment to its sealed name, which carries its summary.
        seg = self.segs[-1]
        self.close_fh()
        sealed = (seg[0], seg[1], seg[2], seg[3], True)
        try:
            os.rename(self.path(seg), self.path(sealed))
        except OSError:
            self.poisoned = True
            return
        self.segs[-1] = sealed

    def _repair(self):
        # After a failed write: an errored littlefs file commits nothing on close,
        # but trust only a rescan, then seal so nothing is appended after it.
        self.close_fh()
        seg = self.segs[-1]
        path = self.path(seg)
        try:
            last, count, length, _ = scan(path, seg[0])
        except OSError as e:
            if e.args[0] != _ENOENT:
                raise
            count = 0
        if count == 0:
            self.segs.pop()
            self.used -= flash_bytes(seg[3])
            try:
                os.remove(path)
            except OSError:
                pass
            return
        self.used += flash_bytes(length) - flash_bytes(seg[3])
        self.segs[-1] = (seg[0], last, count, length, False)
        self.seal()

    def delete_oldest(self):
        seg = self.segs[0]
        if len(self.segs) == 1:
            self.close_fh()
            self.poisoned = False
        try:
            os.remove(self.path(seg))
        except OSError as e:
            if e.args[0] != _ENOENT:
                raise
        self.segs.pop(0)
        self.used -= flash_bytes(seg[3])

    def prune(self):
        # Deletes the segments whose records are all acknowledged.
        while len(self.segs) and self.segs[0][1] < self.floor:
            self.delete_oldest()

    # ---- acknowledgements --------------------------------------------------------

    def acked(self, seq):
        return seq < self.floor or self.in_ranges(seq)

    def in_ranges(self, seq):
        r = self.ranges
        for i in range(0, len(r), 2):
            if r[i] <= seq <= r[i + 1]:
                return True
        return False

    def first_at(self, seq):
        # The seq of this stream's first record at or after seq, or None.
        c = Cursor(self, seq)
        try:
            return c.seq if c.next() else None
        finally:
            c.close()

    def add_ack(self, first, last, next_seq):
        # Records that first..last is acknowledged; True if that changed anything.
        # Ranges are kept in terms of this stream's records: clipped to them, and
        # merged when no record of this stream lies between them (alarm acks do
        # not split the measurement ranges).
        if last < self.floor:
            return False
        first = self.first_at(max(first, self.floor))
        if first is None or first > last:
            return False
        r = self.ranges
        for i in range(0, len(r), 2):
            if r[i] <= first and last <= r[i + 1]:
                return False
        i = 0
        while i < len(r) and r[i] < first:
            i += 2
        r.insert(i, last)
        r.insert(i, first)
        i = 0
        while i + 2 < len(r):
            if r[i + 2] <= r[i + 1] + 1 or self.first_at(r[i + 1] + 1) >= r[i + 2]:
                r[i + 1] = max(r[i + 1], r[i + 3])
                r.pop(i + 2)
                r.pop(i + 2)
            else:
                i += 2
        self.advance_floor(next_seq)
        return True

    def advance_floor(self, next_seq):
        # Moves the floor past acknowledged records to the first unacknowledged
        # one, and forgets ranges below it (and beyond MAX_RANGES: that only costs
        # a resend).
        r = self.ranges
        if r:
            c = Cursor(self, self.floor)
            try:
                while c.next():
                    if not self.in_ranges(c.seq):
                        self.floor = c.seq
                        break
                else:
                    self.floor = next_seq
            finally:
                c.close()
        while r and r[1] < self.floor:
            r.pop(0)
            r.pop(0)
        while len(r) > 2 * MAX_RANGES:
            r.pop()
            r.pop()

    def collect(self, after, limit, out):
        # Appends to out the seqs of unacknowledged records > after, up to limit.
        if len(out) >= limit:
            return
        c = Cursor(self, max(self.floor, after + 1))
        try:
            while c.next():
                if not self.in_ranges(c.seq):
                    out.append(c.seq)
                    if len(out) >= limit:
                        return
        finally:
            c.close()
