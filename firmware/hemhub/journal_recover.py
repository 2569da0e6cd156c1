# Opening a journal after a restart or a power cut (docs/journal.md,
# "Recovery"): the state file read back and the segment lists rebuilt from the
# directory. Journal loads this while it opens and drops it after
# (hemhub.unload), so a running hub does not keep it in RAM.
import os
import struct
from binascii import crc32

from hemhub.journal_format import MAX_RANGES, STATE_FIXED, STATE_HDR, flash_bytes, scan


def load_state(d, a, m):
    # Returns (ceiling, dropped, evictions) merged from state and state.tmp (a
    # complete state.tmp is the newer one: a cut came before the rename), and
    # sets the streams' floors and ranges; None if neither file is valid.
    out = None
    for name in ("/state", "/state.tmp"):
        try:
            with open(d + name, "rb") as f:
                raw = f.read(128)
        except OSError:
            continue
        if len(raw) < STATE_FIXED + 4 or raw[:4] != b"HJS1":
            continue
        na, nm = raw[24], raw[25]
        end = STATE_FIXED + 8 * (na + nm)
        if na > MAX_RANGES or nm > MAX_RANGES or len(raw) != end + 4:
            continue
        if crc32(memoryview(raw)[:end]) != struct.unpack_from("<I", raw, end)[0]:
            continue
        v = struct.unpack_from(STATE_HDR, raw)
        out = v[1:4] if out is None else (max(out[0], v[1]), max(out[1], v[2]), max(out[2], v[3]))
        a.floor = max(a.floor, v[4])
        m.floor = max(m.floor, v[5])
        o = STATE_FIXED
        for st, n in ((a, na), (m, nm)):
            st.ranges = [struct.unpack_from("<I", raw, o + 4 * i)[0] for i in range(2 * n)]
            o += 8 * n
    return out


def recover(d, streams):
    # Rebuilds the streams' segment lists from directory d: sealed segments from
    # their names; open or suspect ones by scanning them frame by frame. A clean
    # newest open segment stays open; one with a torn tail is sealed before the
    # tail; one without a valid record is deleted.
    loose = []  # (stream, first, name, named sealed)
    for ent in os.ilistdir(d):
        name = ent[0]
        st = None
        for s in streams:
            if name[0] == s.tag:
                st = s
        if st is None or ent[1] != 0x8000:  # a regular file of ours
            continue
        try:
            nums = [int(p, 16) for p in name[1:].split(".")]
        except ValueError:
            continue
        if len(nums) == 4 and nums[0] <= nums[1] and nums[3] <= ent[3]:
            st.segs.append((nums[0], nums[1], nums[2], nums[3], True))
        elif len(nums) in (1, 4):  # open, or sealed but shorter than its name says
            loose.append((st, nums[0], name, len(nums) == 4))
    for st, first, name, was_sealed in loose:
        path = d + "/" + name
        last, count, length, size = scan(path, first)
        if count == 0:
            os.remove(path)
            continue
        newest = not any(x[0] is st and x[1] > first for x in loose) and not (
            len(st.segs) and max(s[0] for s in st.segs) > first)
        if newest and not was_sealed and length == size:
            st.segs.append((first, last, count, length, False))  # stays open
            continue
        sealed = (first, last, count, length, True)
        if st.path(sealed) != path:
            os.rename(path, st.path(sealed))
        st.segs.append(sealed)
    for st in streams:
        st.segs.sort()
        for s in st.segs:
            st.used += flash_bytes(s[3])
