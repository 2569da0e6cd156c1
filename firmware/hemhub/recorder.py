"""The hub's record path: sign each reading or alarm and commit it to the journal.

    rec = Recorder(hub_id, signer)          # signer: identity.signer()
    rec.observations(obs, peripheral, device_time=None)  -> seq, once committed
    rec.event("door_open", source="wired")               -> seq, once committed

Alarms (events) go to the journal's priority chain. Signing uses a nonce
precomputed in idle time (refill()); when the pool is empty a nonce is
computed on the spot, so an alarm is never held back waiting for idle time.
Gap markers for measurements the journal had to drop are signed here too.
"""
import time

from hemhub import record
from hemhub.journal import KIND_ALARM, KIND_GAP, KIND_MEASUREMENT, Journal

PATH = "/data/journal"
_UNSYNCED_BEFORE = 1577836800  # 2020-01-01: an RTC below this was never set


class Recorder:
    def __init__(self, hub_id, signer, path=PATH, clock=time.time, **journal_opts):
        self.hub_id = hub_id
        self.signer = signer
        self.clock = clock
        self.journal = Journal(path, make_gap=self._gap, **journal_opts)
        self._declare_restart_gap()

    def _declare_restart_gap(self):
        # After a power cut the journal resumes at its reserved sequence
        # ceiling; the numbers skipped were never used for any record. Say so
        # in a signed gap marker, so a verifier sees no unexplained gap.
        # With every record acknowledged and pruned nothing is stored, but the
        # journal still knows the last seq used (Journal.resumed_after).
        last, nxt = self.journal.resumed_after, self.journal.stats()["next_seq"]
        if nxt <= last + 1:
            return

        def make(seq):
            f = self._fields(seq, "gap")
            f["gap"] = {"first": last + 1, "last": nxt - 1, "count": 0, "what": "none",
                        "reason": "restart: reserved sequence numbers unused"}
            return self._sign(f)

        self.journal.append_with(KIND_GAP, make)

    def _fields(self, seq, kind):
        now = int(self.clock())
        f = {"v": 1, "hub": self.hub_id, "seq": seq, "kind": kind, "hub_time": now}
        if now < _UNSYNCED_BEFORE:
            f["unsynced"] = True
        return f

    def _sign(self, fields):
        return record.sign_record(fields, self.signer)

    def _gap(self, seq, first, last, count, kinds):
        f = self._fields(seq, "gap")
        f["gap"] = {"first": first, "last": last, "count": count, "what": "measurements",
                    "reason": "journal full"}
        return self._sign(f)

    def observations(self, obs, peripheral, device_time=None, user=None):
        def make(seq):
            f = self._fields(seq, "observations")
            f["peripheral"] = peripheral
            f["observations"] = obs
            if device_time is not None:
                f["device_time"] = device_time
            if user is not None:
                f["user"] = user
            return self._sign(f)

        return self.journal.append_with(KIND_MEASUREMENT, make)

    def event(self, type_, source=None, value=None, peripheral=None):
        def make(seq):
            f = self._fields(seq, "event")
            ev = {"type": type_}
            if source is not None:
                ev["source"] = source
            if value is not None:
                ev["value"] = value
            f["event"] = ev
            # An event from the hub's own inputs (wired contact, service button)
            # names the hub itself as its device.
            f["peripheral"] = peripheral or {"addr": "hub", "kind": source or "hub"}
            return self._sign(f)

        return self.journal.append_with(KIND_ALARM, make)

    def refill(self):
        """Precompute signing nonces; call from idle time."""
        self.signer.refill()


KINDS = (KIND_ALARM, KIND_GAP, KIND_MEASUREMENT)
