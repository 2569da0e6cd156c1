# hemhub.journal: the hub's append-only store of signed records.
#
# Records are opaque bytes (a COSE_Sign1 made by the signer, SYSTEM.md section 5)
# that embed the sequence number the journal hands out. They stay on flash until
# the fleet acknowledges them by sequence range (SYSTEM.md section 6). Design,
# on-flash format, recovery, capacity policy and measured costs: docs/journal.md.
#
#   j = Journal("/data/journal", capacity_bytes=..., make_gap=signer.gap)
#   seq = j.append_with(KIND_MEASUREMENT, lambda seq: signer.sign(seq, reading))
#   for seq in j.pending(16): send(j.read(seq)[1])
#   j.ack(first, last)
#
# MicroPython has no exception chaining (`raise ... from e` prints a warning),
# hence the `noqa: B904`s.
import os

from micropython import const

from hemhub.journal_format import (  # noqa: F401  (errors and MAX_RECORD re-exported)
    MAX_RECORD,
    OVERHEAD,
    Cursor,
    JournalCorrupt,
    JournalError,
    JournalFull,
    buffer,
    flash_bytes,
    save_state,
    seg_index,
)
from hemhub.journal_stream import Stream

# Record kinds: one byte stored with each record. Bit 7 set puts a kind in the
# priority class (alarms): its own segment stream, listed first by pending(),
# never evicted to make room. Other kinds may be defined; bit 7 decides.
KIND_MEASUREMENT = const(0x01)
KIND_STATUS = const(0x02)
KIND_ALARM = const(0x81)
KIND_GAP = const(0x82)
PRIORITY = const(0x80)

SEQ_LIMIT = const(0x3FFFFFFF)  # seqs stay below this: small ints on the ESP32

_SEQ_BLOCK = const(64)  # seqs reserved by each write of the state file
_GAP_BYTES = const(512)  # largest gap marker make_gap may return


class Journal:
    # Append-only, power-cut-safe store of signed records in directory `path`.
    #
    # capacity_bytes: flash the journal may take (default 3/4 of the filesystem).
    # segment_bytes: size at which a segment file is sealed and a new one begun;
    # the unit of pruning and eviction (default 16320: fills 4 littlefs blocks).
    # alarm_reserve_bytes: part of the capacity only priority records may use
    # (default capacity/8).
    # make_gap(seq, first, last, count, kinds) -> bytes: signs the gap marker for
    # an eviction of `count` unacknowledged records with seqs in first..last,
    # kinds = {kind: count}; stored as a KIND_GAP record at `seq`. Without it
    # evictions are still counted (stats) but leave no marker.

    def __init__(self, path, capacity_bytes=None, segment_bytes=16320,
                 alarm_reserve_bytes=None, make_gap=None):
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024, not %d" % segment_bytes)
        if capacity_bytes is not None and capacity_bytes < 4 * segment_bytes:
            raise ValueError("capacity_bytes must hold at least 4 segments (%d bytes), not %d"
                             % (4 * segment_bytes, capacity_bytes))
        self._dir = path
        self._seg_bytes = segment_bytes
        self._make_gap = make_gap
        self._a = Stream(path, "a")
        self.pending_priority = 0  # see pending()
        self._m = Stream(path, "m")
        self._next = 1  # next seq to hand out
        self._ceiling = 0  # seqs below it may have been handed out (persisted)
        self._dropped = 0  # unacknowledged records evicted (persisted)
        self._evictions = 0  # evictions that dropped records (persisted)
        self._refused = 0  # appends refused with JournalFull since open
        buffer()  # the 1 KiB read buffer, made while the heap is least fragmented
        try:
            try:
                os.stat(path)
            except OSError:
                os.mkdir(path)
            if capacity_bytes is None:
                sv = os.statvfs(path)
                capacity_bytes = sv[1] * sv[2] * 3 // 4
            self._cap = capacity_bytes
            self._reserve = capacity_bytes // 8 if alarm_reserve_bytes is None else alarm_reserve_bytes
            if not 0 <= self._reserve < capacity_bytes:
                raise ValueError("alarm_reserve_bytes must be 0..capacity_bytes, not %d" % self._reserve)
            self._recover()
        except OSError as e:
            self.close()
            msg = "cannot open the journal in %s (%s); is the data partition mounted?" % (path, e)
            raise JournalError(msg)  # noqa: B904

    # ---- public API ------------------------------------------------------------

    def append_with(self, kind, make_record, max_bytes=512):
        # Stores make_record(seq) -> bytes (1..max_bytes) as a record of `kind`
        # under a new seq; returns the seq once the record is committed.
        #
        # Room for max_bytes is made first (this may evict old measurements, see
        # docs/journal.md), so a signed record is never refused. If make_record
        # raises or returns a bad length, nothing was stored under that seq and
        # the next record takes it (a MemoryError while signing leaves no gap).
        # Raises JournalFull if no room can be made, JournalError if storing failed.
        if not 0 <= kind <= 255:
            raise ValueError("record kind must be 0..255, not %r" % (kind,))
        if not 0 < max_bytes <= MAX_RECORD:
            raise ValueError("max_bytes must be 1..%d, not %r" % (MAX_RECORD, max_bytes))
        st = self._a if kind & PRIORITY else self._m
        try:
            self._make_room(st, max_bytes + OVERHEAD)
            seq = self._take_seq()
        except OSError as e:
            raise JournalError("could not prepare a journal record: %s" % e)  # noqa: B904
        try:
            data = make_record(seq)
            if not 0 < len(data) <= max_bytes:
                raise ValueError("record %d is %d bytes; 1..%d expected" % (seq, len(data), max_bytes))
        except BaseException:
            self._next = seq  # the record never left RAM: its seq is unused
            raise
        st.append(seq, kind, data, self._seg_bytes)
        return seq

    def read(self, seq):
        # (kind, bytes) of stored record `seq`, or None if there is none (never
        # stored, acknowledged and pruned, or evicted).
        buf = buffer()
        r = self.read_into(seq, buf)
        return None if r is None else (r[0], bytes(memoryview(buf)[:r[1]]))

    def read_into(self, seq, buf):
        # Reads record `seq` into buf (MAX_RECORD bytes always suffice); returns
        # (kind, length) or None. Reading seqs in rising order is cheapest.
        for st in (self._a, self._m):
            i = seg_index(st.segs, seq)
            if i < len(st.segs) and st.segs[i][0] <= seq:
                c = Cursor(st, seq)
                try:
                    if c.next() and c.seq == seq:
                        if len(buf) < c.n:
                            raise ValueError("buffer too small for record %d (%d bytes)" % (seq, c.n))
                        n = c.payload(buf)
                        if n >= 0:
                            return c.kind, n
                finally:
                    c.close()
        return None

    def iter_from(self, seq=1):
        # Yields (seq, kind, memoryview) for each stored record with seq >= `seq`
        # in seq order, acknowledged or not. The memoryview is the journal's read
        # buffer, valid until the next step. Records pruned meanwhile are skipped.
        buf = buffer()
        ca = Cursor(self._a, seq)
        cm = Cursor(self._m, seq)
        try:
            ha = ca.next()
            hm = cm.next()
            while ha or hm:
                c = ca if ha and (not hm or ca.seq < cm.seq) else cm
                n = c.payload(buf)
                s, k = c.seq, c.kind
                ca.close()
                cm.close()
                if n >= 0:
                    yield s, k, memoryview(buf)[:n]
                if c is ca:
                    ha = ca.next()
                else:
                    hm = cm.next()
        finally:
            ca.close()
            cm.close()

    def pending(self, limit=16, alarms_first=True, after=0, out=None):
        # Up to `limit` seqs of unacknowledged records with seq > `after`: the
        # priority class first, each class in seq order (or all in seq order if
        # not alarms_first). `out`: a list to fill (emptied first), so a caller
        # that asks after every publish allocates it once. With alarms_first,
        # the first `pending_priority` seqs of the answer are the priority class.
        if out is None:
            out = []
        else:
            del out[:]  # keeps its capacity
        self._a.collect(after, limit, out)
        self.pending_priority = len(out)
        if alarms_first:
            self._m.collect(after, limit, out)
        else:
            self._m.collect(after, limit + len(out), out)
            out.sort()
            while len(out) > limit:
                out.pop()
        return out

    def ack(self, first, last):
        # The fleet holds every record with first <= seq <= last. A segment is
        # deleted once all its records are acknowledged. Acknowledging twice is
        # harmless. Returns True if anything changed.
        if not (isinstance(first, int) and isinstance(last, int)
                and 1 <= first <= last < self._next):
            raise JournalError("acknowledgement %r..%r names seqs this hub never issued "
                               "(issued so far: 1..%d)" % (first, last, self._next - 1))
        try:
            changed = self._a.add_ack(first, last, self._next)
            changed = self._m.add_ack(first, last, self._next) or changed
            if changed:
                self._save_state()  # before deleting: a cut in between re-prunes at open
                self._a.prune()
                self._m.prune()
            return changed
        except OSError as e:
            raise JournalError("could not record acknowledgement %d..%d: %s" % (first, last, e))  # noqa: B904

    def stats(self):
        a, m = self._a, self._m
        oldest = newest = None
        records = size = 0
        for st in (a, m):
            if len(st.segs):
                if oldest is None or st.segs[0][0] < oldest:
                    oldest = st.segs[0][0]
                if newest is None or st.segs[-1][1] > newest:
                    newest = st.segs[-1][1]
            for s in st.segs:
                records += s[2]
                size += s[3]
        alarms = 0
        for s in a.segs:
            alarms += s[2]
        return {
            "records": records,  # stored, acknowledged or not
            "priority_records": alarms,
            "bytes": size,  # framed record bytes
            "flash_bytes": a.used + m.used,  # whole blocks, as counted against capacity
            "priority_flash_bytes": a.used,
            "capacity": self._cap,
            "free": self._cap - a.used - m.used,
            "alarm_reserve": self._reserve,
            "segments": len(a.segs) + len(m.segs),
            "oldest": oldest,
            "newest": newest,
            "next_seq": self._next,
            "dropped": self._dropped,  # unacknowledged records evicted, ever
            "evictions": self._evictions,  # evictions that dropped records, ever
            "refused": self._refused,  # appends refused (JournalFull) since open
        }

    def close(self):
        # Releases the open files (the shutdown hook); the object is done.
        self._a.close_fh()
        self._m.close_fh()

    # ---- internals ---------------------------------------------------------------

    def _save_state(self):
        save_state(self._dir, self._ceiling, self._dropped, self._evictions, self._a, self._m)

    def _take_seq(self):
        seq = self._next
        if seq >= SEQ_LIMIT:
            raise JournalError("this hub has used every sequence number; re-provision it")
        if seq >= self._ceiling:
            # Persist a new ceiling before handing out any seq below it: after a
            # power cut the journal resumes there, above every seq ever used.
            old = self._ceiling
            self._ceiling = seq + _SEQ_BLOCK
            try:
                self._save_state()
            except BaseException:
                self._ceiling = old
                raise
        self._next = seq + 1
        return seq

    def _fits(self, prio, flen, freed, gap, m_emptied):
        a, m, sb = self._a, self._m, self._seg_bytes
        au = a.used + a.growth(gap + (flen if prio else 0), sb)
        mu = m.used - freed
        if prio:
            return au + mu <= self._cap
        mu += flash_bytes(flen) if m_emptied else m.growth(flen, sb)
        return max(au, self._reserve) + mu <= self._cap

    def _make_room(self, st, flen):
        prio = st is self._a
        if self._fits(prio, flen, 0, 0, False):
            return
        # Evict whole measurement segments, oldest first, until the record and
        # the gap marker reporting the loss fit.
        m = self._m
        gap = _GAP_BYTES + OVERHEAD if self._make_gap is not None else 0
        k = freed = 0
        while True:
            if k == len(m.segs):
                self._refused += 1
                raise JournalFull(
                    "the journal is full (%d of %d bytes) of %s awaiting acknowledgement and "
                    "has nothing left to evict" % (self._a.used + m.used, self._cap,
                                                   "alarms" if prio else "priority records"))
            freed += flash_bytes(m.segs[k][3])
            k += 1
            if self._fits(prio, flen, freed, gap, k == len(m.segs)):
                break
        self._evict(k)

    def _evict(self, k):
        m = self._m
        last_seq = m.segs[k - 1][1]
        first = last = count = 0
        kinds = {}
        c = Cursor(m, m.segs[0][0])
        try:
            while c.next() and c.seq <= last_seq:
                if not m.acked(c.seq):
                    count += 1
                    kinds[c.kind] = kinds.get(c.kind, 0) + 1
                    if not first:
                        first = c.seq
                    last = c.seq
        finally:
            c.close()
        if count:
            # The marker is committed before anything is deleted: a power cut in
            # between leaves records the marker calls lost, never a silent loss.
            if self._make_gap is not None:
                seq = self._take_seq()
                data = self._make_gap(seq, first, last, count, kinds)
                if not 0 < len(data) <= _GAP_BYTES:
                    raise ValueError("gap marker is %d bytes; 1..%d expected" % (len(data), _GAP_BYTES))
                self._a.append(seq, KIND_GAP, data, self._seg_bytes)
            self._dropped += count
            self._evictions += 1
            self._save_state()
        for _ in range(k):
            m.delete_oldest()
        m.floor = max(m.floor, m.segs[0][0] if len(m.segs) else self._next)
        m.advance_floor(self._next)

    def _recover(self):
        import hemhub
        from hemhub import journal_recover

        a, m = self._a, self._m
        try:
            state = journal_recover.load_state(self._dir, a, m)
            if state is not None:
                self._ceiling, self._dropped, self._evictions = state
            journal_recover.recover(self._dir, (a, m))
        finally:
            hemhub.unload("hemhub", "journal_recover")
        top = 0
        for st in (a, m):
            if len(st.segs) and st.segs[-1][1] > top:
                top = st.segs[-1][1]
        if state is None and top:
            # The state file is lost: skip every seq that may have been handed out.
            self._ceiling = top + 1 + _SEQ_BLOCK
        # The last seq known used: the newest stored, or, once every record was
        # acknowledged and pruned, the one below the floors the state kept. A
        # restart gap marker starts above it (hemhub.recorder).
        self.resumed_after = max(top, a.floor - 1, m.floor - 1)
        self._next = max(self._ceiling, top + 1, 1)
        for st in (a, m):
            st.floor = max(st.floor, st.segs[0][0] if len(st.segs) else self._next)
            st.advance_floor(self._next)
            st.prune()  # finishes a prune a power cut interrupted
