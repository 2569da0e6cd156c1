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
    replay        a valid record whose (hub, seq) is already stored with another payload

A record passing all of them is stored (or found already stored with the same
payload: a resend) and its seq acknowledged. A quarantined record is never
acknowledged, so a forgery cannot make the hub delete its genuine record.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import cbor2
from cryptography import x509

from .. import records as R
from .store import CONFLICT, DUPLICATE, NEW, Quarantined, Reading, Store

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
REPLAY = "replay"


class HubRegistry(Protocol):
    """Which certificate each hub is registered with (the inventory)."""

    def certificate(self, hub_id: str) -> x509.Certificate | None:
        """The hub's active certificate, None if unknown, not provisioned or revoked."""

    def is_revoked(self, hub_id: str) -> bool: ...


class InventoryRegistry:
    """HubRegistry over hubctl.inventory, with a short cache: a revocation takes
    effect for new records within `ttl` seconds."""

    def __init__(self, db_path, ttl: float = 2.0):
        from ..inventory import Inventory

        self.inventory = Inventory(db_path)
        self.ttl = ttl
        self._cache: dict[str, tuple[float, x509.Certificate | None, bool]] = {}

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


class Ingestor:
    def __init__(self, store: Store, registry: HubRegistry):
        self.store = store
        self.registry = registry
        self.totals = Outcome()

    def _quarantine(self, out: Outcome, msg: Message, hub: str, reason: str, detail: str,
                    seq: int | None = None) -> None:
        q = Quarantined(hub, seq, msg.topic, reason, detail, bytes(msg.payload), msg.received_at)
        out.quarantined.append(q)
        log.warning("quarantined a record on %s: %s: %s", msg.topic, reason, detail)

    def _verify(self, out: Outcome, msg: Message, hub: str) -> R.VerifiedRecord | None:
        cert = self.registry.certificate(hub)
        if cert is None:
            if self.registry.is_revoked(hub):
                self._quarantine(out, msg, hub, REVOKED, f"hub {hub} is revoked; its records are refused")
            else:
                self._quarantine(out, msg, hub, UNKNOWN_HUB, f"hub {hub} has no registered certificate "
                                 "(not provisioned)")
            return None
        try:
            cn, _ = R.certificate_identity(cert)
        except ValueError as e:
            self._quarantine(out, msg, hub, CERT_MISMATCH, f"registered certificate of {hub} is unusable: {e}")
            return None
        if cn != hub:
            self._quarantine(out, msg, hub, CERT_MISMATCH, f"registered certificate of {hub} has CN {cn!r}")
            return None
        try:
            return R.verify_record(msg.payload, cert)
        except R.RecordRejected as e:
            self._quarantine(out, msg, hub, e.reason, e.detail)
            return None

    def handle(self, messages: list[Message]) -> Outcome:
        out = Outcome()
        readings: list[Reading] = []
        for msg in messages:
            parsed = parse_topic(msg.topic)
            if parsed is None:
                out.ignored += 1
                log.info("ignored a message on %s (not a hemhub topic)", msg.topic)
                continue
            hub, leaf = parsed
            if leaf == STATUS_TOPIC:
                self._status(out, hub, msg)
                continue
            if leaf not in RECORD_TOPICS:
                out.ignored += 1
                continue
            rec = self._verify(out, msg, hub)
            if rec is None:
                continue
            readings.append(Reading(rec.hub_id, rec.seq, rec.kind, rec.fields["hub_time"], msg.topic,
                                    rec.data, rec.payload, rec.fields, msg.received_at))
        results = self.store.add_batch(readings, out.quarantined)
        replays = []
        for r, res in zip(readings, results, strict=True):
            if res == CONFLICT:
                q = Quarantined(r.hub_id, r.seq, r.topic, REPLAY,
                                f"seq {r.seq} of {r.hub_id} is already stored with other content",
                                r.record, r.received_at)
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
