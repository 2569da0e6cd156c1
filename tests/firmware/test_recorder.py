# The record path (hemhub.recorder: sign, then commit to the journal) on a real
# littlefs image, inside MicroPython with the hub's 96 KiB heap.
import os
import sys

import utime

# The recorder reads the clock; no virtual hub's world here, so the built-in.
sys.modules["time"] = utime

from blockdev import Disk  # noqa: E402
from hemhub import journal_format, record_verify, recorder  # noqa: E402
from hemhub.crypto import p256  # noqa: E402

# The journal's 1 KiB read buffer first, as the application makes it at start-up
# while the heap is in one piece: after the record path's imports a 96 KiB heap
# may have no hole that size.
journal_format.buffer()
KEY = 0x6B8E7F4B0D1C2A3948576675849302A1B2C3D4E5F60718293A4B5C6D7E8F9012  # a fixed test key

D = "/data/journal"


def files():
    return sorted(n for n in os.listdir(D) if n[0] in "am")


def test_restart_after_everything_was_acknowledged_declares_the_unused_seqs():
    # A power cut leaves the seqs reserved above the last one used unused. When
    # every record had been acknowledged and pruned, nothing is stored to show
    # where they start: the signed restart marker must still begin right after
    # the last seq used, or a verifier sees an undeclared gap.
    d = Disk()
    try:
        signer = p256.Signer(KEY, pool_size=0)
        r = recorder.Recorder("HH1-TEST", signer, path=D)
        last = 0
        for _ in range(3):
            last = r.event("door_open", source="wired")
        r.journal.ack(1, last)
        assert files() == [] and r.journal.stats()["newest"] is None
        r.journal.close()
        d.reboot()
        r = recorder.Recorder("HH1-TEST", signer, path=D)
        stored = list(r.journal.iter_from(1))
        assert len(stored) == 1, stored
        fields, _ = record_verify.open_record(r.journal.read(stored[0][0])[1])
        assert fields["kind"] == "gap" and fields["seq"] == r.journal.stats()["next_seq"] - 1
        assert fields["gap"]["first"] == last + 1, fields["gap"]
        assert fields["gap"]["last"] == fields["seq"] - 1 and fields["gap"]["count"] == 0
        r.journal.close()
    finally:
        d.done()
