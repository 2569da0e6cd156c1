"""Ingest: verify each record a hub sends, store it once, quarantine the rest, and
say which sequence numbers to acknowledge (protocol/uplink.md section 3).

    Ingestor(store, registry).handle([Message, ...]) -> Outcome

Pure with respect to the network: the MQTT side (service.py) hands it batches of
messages and publishes the acks it returns, only after the batch is committed.

Checks, in order, for a record on hemhub/HID/{alarm,rec}:

    unknown-hub   HID has no registered (provisioned) certificate
    revoked       HID's certificate has been revoked (a valid record is still refused)
    cert-mismatch the registered certificate's CN is not HID (inventory damage)
    <reason>      hubctl.records.verify_record against that certificate: truncated,
                  malformed, non-deterministic, unsupported, schema, hub-mismatch (the record
                  names another hub than the topic and certificate), bad-signature
    old-certificate  the signature is bad with HID's certificate but good with one it had
                  before being reprovisioned: a former life's record (see below)
    replay        a valid record whose (hub, certificate, seq) is already stored with
                  another payload

A record passing all of them is stored (or found already stored with the same
payload: a resend) and its seq acknowledged. A quarantined record is never
acknowledged, so a forgery cannot make the hub delete its genuine record.

Lives: a hub reprovisioned under the same id (wiped, new key and certificate)
numbers its records from 1 again, so a record is identified by (hub, certificate
serial, seq). Only the hub's current certificate is accepted: the hub holds one
key at a time and acks name seqs only, so acknowledging a former life's seq N
would make the hub delete its current record N. Each hub's certificate is looked
up once per batch, so the acks of one batch are all for one life.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import cbor2
from cryptography import x509

from .. import records as R
from .store import CONFLICT, DUPLICATE, NEW, Quarantined, Reading, Store
from .verify import Job, Verdict, submit_here

log = logging.getLogger("hubctl.fleet")

TOPIC_ROOT = "hemhub"
RECORD_TOPICS = ("alarm", "rec")
STATUS_TOPIC = "status"
MAX_ACK_RANGES = 16  # uplink.md 3.2: at most 16 ranges per ack message
MAX_SEQ = 2**30 - 1
MAX_STATUS = 512

UNKNOWN_HUB = "unknown-hub"
REVOKED = "revoked"
CERT_MISMATCH = "cert-mismatch"
OLD_CERTIFICATE = "old-certificate"
REPLAY = "replay"


class HubRegistry(Protocol):
    """Which certificate each hub is registered with (the inventory)."""

    def certificate(self, hub_id: str) -> x509.Certificate | None:
        """The hub's active certificate, None if unknown, not provisioned or revoked."""

    def is_revoked(self, hub_id: str) -> bool: ...

    def former_certificates(self, hub_id: str) -> list[x509.Certificate]:
        """Certificates the hub had before its current one (superseded or revoked), newest first."""


class InventoryRegistry:
    """HubRegistry over hubctl.inventory, with a short cache: a revocation or a
    reprovisioning takes effect for new records within `ttl` seconds."""

    def __init__(self, db_path, ttl: float = 2.0):
        from ..inventory import Inventory

        self.inventory = Inventory(db_path)
        self.ttl = ttl
        self._cache: dict[str, tuple[float, x509.Certificate | None, bool]] = {}
        self._former: dict[str, tuple[float, list[x509.Certificate]]] = {}

    def _lookup(self, hub_id: str):
        now = time.monotonic()
        hit = self._cache.get(hub_id)
        if hit and now - hit[0] < self.ttl:
            return hit
        der = self.inventory.certificate(hub_id)
        cert = x509.load_der_x509_certificate(der) if der else None
        revoked = cert is None and self.inventory.is_revoked(hub_id)
        hit = (now, cert, revoked)
        self._cache[hub_id] = hit
        return hit

    def certificate(self, hub_id):
        return self._lookup(hub_id)[1]

    def is_revoked(self, hub_id):
        return self._lookup(hub_id)[2]

    def former_certificates(self, hub_id):
        now = time.monotonic()
        hit = self._former.get(hub_id)
        if hit is None or now - hit[0] >= self.ttl:
            certs = [x509.load_der_x509_certificate(c["der"]) for c in reversed(self.inventory.certificates_of(hub_id))
                     if c["status"] in ("superseded", "revoked")]
            hit = self._former[hub_id] = (now, certs)
        return hit[1]


@dataclass
class Message:
    topic: str
    payload: bytes
    received_at: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """What one batch did; acks maps hub id to the seqs to acknowledge."""

    acks: dict[str, set[int]] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    statuses: int = 0
    ignored: int = 0

    def ack_payloads(self, now: int | None = None) -> list[tuple[str, bytes]]:
        """(topic, CBOR payload) of every ack message to publish."""
        out = []
        for hub, seqs in sorted(self.acks.items()):
            ranges = seq_ranges(seqs)
            for i in range(0, len(ranges), MAX_ACK_RANGES):
                out.append((f"{TOPIC_ROOT}/{hub}/ack", encode_ack(ranges[i:i + MAX_ACK_RANGES], now)))
        return out


def seq_ranges(seqs) -> list[list[int]]:
    """Sorted, merged [first, last] ranges of a set of sequence numbers."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        elif not out or s > out[-1][1]:
            out.append([s, s])
    return out


def encode_ack(ranges: list[list[int]], now: int | None = None) -> bytes:
    """The application ack (uplink.md 3.2): deterministic CBOR {"acks": [[first, last], ...], "time": t}."""
    if not 1 <= len(ranges) <= MAX_ACK_RANGES:
        raise ValueError(f"an ack carries 1..{MAX_ACK_RANGES} ranges, not {len(ranges)}")
    for a, b in ranges:
        if not 1 <= a <= b <= MAX_SEQ:
            raise ValueError(f"ack range {a}..{b} outside 1..{MAX_SEQ}")
    msg = {"acks": [[a, b] for a, b in ranges], "time": int(time.time() if now is None else now)}
    return cbor2.dumps(msg, canonical=True)


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(hub id, leaf) of hemhub/HID/leaf, None for anything else."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != TOPIC_ROOT or not parts[1]:
        return None
    return parts[1], "/".join(parts[2:])


@dataclass
class Prepared:
    """A batch whose records are being verified (Ingestor.prepare), not yet stored."""

    out: Outcome
    records: list[tuple[Message, str]]
    certs: dict[str, tuple[R.RecordVerifier | None, str, str]]
    verdicts: Callable[[], list[Verdict]]


class Ingestor:
    """handle(batch) = commit(prepare(batch)). The two halves let the service verify
    one batch (in worker processes) while it stores the one before.

    submit: how records are verified: verify.submit_here, or a VerifyPool's submit."""

    def __init__(self, store: Store, registry: HubRegistry,
                 submit: Callable[[list[Job]], Callable[[], list[Verdict]]] = submit_here):
        self.store = store
        self.registry = registry
        self.submit = submit
        self.totals = Outcome()

    def _quarantine(self, out: Outcome, msg: Message, hub: str, reason: str, detail: str,
                    seq: int | None = None) -> None:
        q = Quarantined(hub, seq, msg.topic, reason, detail, bytes(msg.payload), msg.received_at)
        out.quarantined.append(q)
        log.warning("quarantined a record on %s: %s: %s", msg.topic, reason, detail)

    def _hub_certificate(self, hub: str) -> tuple[R.RecordVerifier | None, str, str]:
        """(verifier of its certificate, the serial, "") or, for a hub whose records are
        refused, (None, reason, detail)."""
        cert = self.registry.certificate(hub)
        if cert is None:
            if self.registry.is_revoked(hub):
                return None, REVOKED, f"hub {hub} is revoked; its records are refused"
            return None, UNKNOWN_HUB, f"hub {hub} has no registered certificate (not provisioned)"
        try:
            verifier = R.RecordVerifier(cert)
        except ValueError as e:
            return None, CERT_MISMATCH, f"registered certificate of {hub} is unusable: {e}"
        if verifier.hub_id != hub:
            return None, CERT_MISMATCH, f"registered certificate of {hub} has CN {verifier.hub_id!r}"
        return verifier, R.certificate_serial(cert), ""

    def _former_life(self, data: bytes, hub: str) -> tuple[str, int] | None:
        """(certificate serial, seq) if one of the hub's former certificates verifies the record."""
        found = R.first_verifying(data, self.registry.former_certificates(hub))
        return None if found is None else (R.certificate_serial(found[0]), found[1].seq)

    def _rejected(self, out: Outcome, msg: Message, hub: str, serial: str, e: R.RecordRejected) -> None:
        # Only a bad signature can be a former life's record: everything else is
        # checked before the signature, the same way under any certificate.
        old = self._former_life(msg.payload, hub) if e.reason == R.BAD_SIGNATURE else None
        if old is None:
            self._quarantine(out, msg, hub, e.reason, e.detail)
            return
        self._quarantine(out, msg, hub, OLD_CERTIFICATE,
                         f"seq {old[1]} is signed with certificate {old[0]}, which {hub} had before it was "
                         f"reprovisioned (now {serial}); a former life's record is neither stored nor acked",
                         old[1])

    def handle(self, messages: list[Message]) -> Outcome:
        return self.commit(self.prepare(messages))

    def prepare(self, messages: list[Message]) -> Prepared:
        """Sort the messages, store statuses, look certificates up, start verifying."""
        out = Outcome()
        # One certificate per hub per batch: every ack of the batch is for one life.
        certs: dict[str, tuple[R.RecordVerifier | None, str, str]] = {}
        records: list[tuple[Message, str]] = []
        for msg in messages:
            parsed = parse_topic(msg.topic)
            if parsed is None:
                out.ignored += 1
                log.info("ignored a message on %s (not a hemhub topic)", msg.topic)
                continue
            hub, leaf = parsed
            if leaf == STATUS_TOPIC:
                self._status(out, hub, msg)
            elif leaf not in RECORD_TOPICS:
                out.ignored += 1
            else:
                if hub not in certs:
                    certs[hub] = self._hub_certificate(hub)
                records.append((msg, hub))
        jobs = [(certs[hub][0], msg.payload) for msg, hub in records if certs[hub][0] is not None]
        return Prepared(out, records, certs, self.submit(jobs))

    def commit(self, batch: Prepared) -> Outcome:
        """Wait for the verdicts, quarantine, store in one transaction; the acks to send."""
        out = batch.out
        verdicts = iter(batch.verdicts())
        readings: list[Reading] = []
        for msg, hub in batch.records:
            verifier, serial, detail = batch.certs[hub]
            if verifier is None:
                self._quarantine(out, msg, hub, serial, detail)
                continue
            verdict = next(verdicts)
            if isinstance(verdict, R.RecordRejected):
                self._rejected(out, msg, hub, serial, verdict)
                continue
            rec = verdict.record
            readings.append(Reading(rec.hub_id, serial, rec.seq, rec.kind, rec.fields["hub_time"], msg.topic,
                                    rec.data, rec.payload, rec.fields, msg.received_at,
                                    fields_text=verdict.fields_json))
        results = self.store.add_batch(readings, out.quarantined)
        replays = []
        for r, res in zip(readings, results, strict=True):
            if res == CONFLICT:
                q = Quarantined(r.hub_id, r.seq, r.topic, REPLAY,
                                f"seq {r.seq} of {r.hub_id} (certificate {r.cert_serial}) is already stored "
                                "with other content", r.record, r.received_at)
                replays.append(q)
                log.warning("quarantined a record on %s: %s: %s", r.topic, q.reason, q.detail)
                continue
            out.acks.setdefault(r.hub_id, set()).add(r.seq)
            if res == NEW:
                out.stored += 1
            elif res == DUPLICATE:
                out.duplicates += 1
        if replays:
            self.store.add_batch([], replays)
            out.quarantined.extend(replays)
        self._add_totals(out)
        return out

    def _status(self, out: Outcome, hub: str, msg: Message) -> None:
        try:
            if len(msg.payload) > MAX_STATUS:
                raise ValueError(f"{len(msg.payload)} bytes, more than {MAX_STATUS}")
            status = json.loads(bytes(msg.payload).decode("utf-8"))
            if not isinstance(status, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("hub %s sent a bad status message (%s); ignored", hub, e)
            out.ignored += 1
            return
        self.store.set_status(hub, status, msg.received_at)
        out.statuses += 1

    def _add_totals(self, out: Outcome) -> None:
        t = self.totals
        t.stored += out.stored
        t.duplicates += out.duplicates
        t.statuses += out.statuses
        t.ignored += out.ignored
        t.quarantined.extend(out.quarantined)
        del t.quarantined[:-100]  # keep the last few for `stats`, the store has them all
