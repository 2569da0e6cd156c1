"""The fleet's ingest path without a network: records signed by the hub's own code
are verified against the registered certificate, stored once per (hub, certificate,
seq), and acknowledged; forgeries, replays, a former life's records and records of
unknown or revoked hubs are quarantined with their reason and never acknowledged."""

from __future__ import annotations

import cbor2
import pytest
from e2e.pki import FleetPKI
from e2e.recs import door, reading, sign
from hubctl import home as homedir
from hubctl.fleet.ingest import (
    MAX_ACK_RANGES,
    Ingestor,
    InventoryRegistry,
    Message,
    encode_ack,
    seq_ranges,
)
from hubctl.fleet.store import SQLiteStore

A, B = "HH1-2026-0000A1", "HH1-2026-0000B2"


@pytest.fixture
def env(tmp_path):
    pki = FleetPKI(tmp_path / "home")
    store = SQLiteStore(homedir.db_path(pki.home))
    ing = Ingestor(store, InventoryRegistry(homedir.db_path(pki.home), ttl=0))
    yield pki, store, ing
    store.close()


def rec(hub, data):
    return Message(f"hemhub/{hub}/rec", data)


def test_valid_records_are_stored_and_acked(env):
    pki, store, ing = env
    a = pki.device(A)
    msgs = [rec(A, sign(reading(A, s), a)) for s in (1, 2, 3, 5)]
    msgs.append(Message(f"hemhub/{A}/alarm", sign(door(A, 4), a)))
    out = ing.handle(msgs)
    assert out.stored == 5 and out.quarantined == []
    assert out.acks == {A: {1, 2, 3, 4, 5}}
    (topic, payload), = out.ack_payloads(now=1795392000)
    assert topic == f"hemhub/{A}/ack"
    assert cbor2.loads(payload) == {"acks": [[1, 5]], "time": 1795392000}
    assert [(r.seq, r.kind) for r in store.readings(A)] == [(1, "observations"), (2, "observations"),
                                                             (3, "observations"), (4, "event"), (5, "observations")]


def test_resend_is_stored_once_and_acked_again(env):
    pki, store, ing = env
    a = pki.device(A)
    data = sign(reading(A, 1), a)
    resigned = sign(reading(A, 1), a)  # same payload, new nonce: still the same reading
    assert data != resigned
    assert ing.handle([rec(A, data)]).stored == 1
    out = ing.handle([rec(A, data), rec(A, resigned)])
    assert out.stored == 0 and out.duplicates == 2 and out.acks == {A: {1}}
    assert store.count(A) == 1 and store.readings(A)[0].record == data


def test_duplicate_within_one_batch(env):
    pki, store, ing = env
    a = pki.device(A)
    data = sign(reading(A, 9), a)
    out = ing.handle([rec(A, data), rec(A, data)])
    assert (out.stored, out.duplicates, out.acks) == (1, 1, {A: {9}})


def test_forged_record_is_quarantined_and_not_acked(env):
    pki, store, ing = env
    a, b = pki.device(A), pki.device(B)
    forged = sign(reading(A, 2, kg=150), b)          # B's key, A's name
    relabelled = sign(reading(B, 3), b).replace(B.encode(), A.encode())
    genuine = sign(reading(A, 4), a)
    tampered = genuine.replace(bytes.fromhex("191c43"), bytes.fromhex("191c44"))  # 72.35 kg -> 72.36
    assert tampered != genuine
    out = ing.handle([rec(A, forged), rec(A, relabelled), rec(A, bytes(tampered)), rec(A, b"\xff\x00"),
                      rec(A, sign(reading(A, 5), a))])
    assert out.acks == {A: {5}}
    assert [q.reason for q in out.quarantined] == ["bad-signature", "bad-signature", "bad-signature", "malformed"]
    assert [r.seq for r in store.readings(A)] == [5]
    assert [(q.reason, q.record) for q in store.quarantined(A)][:2] == [("bad-signature", forged),
                                                                         ("bad-signature", relabelled)]


def test_record_of_another_hub_on_a_hubs_topic_is_quarantined(env):
    """B's genuine record published under A's topic (A relaying it, or a broker ACL hole)."""
    pki, store, ing = env
    pki.device(A)
    b = pki.device(B)
    out = ing.handle([rec(A, sign(reading(B, 1), b))])
    assert [q.reason for q in out.quarantined] == ["hub-mismatch"] and out.acks == {}
    assert store.count() == 0


def test_replay_with_other_content_is_quarantined(env):
    pki, store, ing = env
    a = pki.device(A)
    first = sign(reading(A, 1, kg=70), a)
    other = sign(reading(A, 1, kg=99), a)  # genuine signature, seq already used
    ing.handle([rec(A, first)])
    out = ing.handle([rec(A, other)])
    assert out.acks == {} and [q.reason for q in out.quarantined] == ["replay"]
    assert [r.record for r in store.readings(A)] == [first]
    assert [(q.reason, q.seq, q.record) for q in store.quarantined(A)] == [("replay", 1, other)]


def test_unknown_and_revoked_hubs(env):
    pki, store, ing = env
    a = pki.device(A)
    stranger = pki.device(B, register=False)  # certificate issued, provisioning never completed
    valid = sign(reading(A, 1), a)
    out = ing.handle([rec(B, sign(reading(B, 1), stranger))])
    assert [q.reason for q in out.quarantined] == ["unknown-hub"]
    pki.revoke(A)
    out = ing.handle([rec(A, valid)])
    assert [q.reason for q in out.quarantined] == ["revoked"] and out.acks == {}
    assert store.count() == 0


def test_status_messages(env):
    pki, store, ing = env
    ing.handle([Message(f"hemhub/{A}/status", b'{"online": true, "link": "wifi", "quality": -61, "pending": 3}')])
    ing.handle([Message(f"hemhub/{A}/status", b"not json"), Message(f"hemhub/{B}/status", b"[1]")])
    ing.handle([Message(f"hemhub/{B}/status", b'{"online": false}')])
    st = store.statuses()
    assert st[A]["link"] == "wifi" and st[A]["pending"] == 3 and st[B]["online"] is False


def test_seq_ranges_and_ack_limits():
    assert seq_ranges({5, 1, 2, 3, 9, 10, 7}) == [[1, 3], [5, 5], [7, 7], [9, 10]]
    assert seq_ranges(set()) == []
    data = encode_ack([[1, 3], [5, 5]], now=7)
    assert data == bytes.fromhex("a2") + cbor2.dumps("acks") + bytes.fromhex("82820103820505") + \
        cbor2.dumps("time") + bytes.fromhex("07")
    with pytest.raises(ValueError, match="ranges"):
        encode_ack([[i, i] for i in range(1, 2 * MAX_ACK_RANGES, 2)] + [[99, 99]])
    with pytest.raises(ValueError, match="outside"):
        encode_ack([[0, 3]])


def test_many_ranges_split_into_messages_of_at_most_16(env):
    pki, store, ing = env
    a = pki.device(A)
    out = ing.handle([rec(A, sign(reading(A, s), a)) for s in range(1, 80, 2)])  # 40 single ranges
    msgs = out.ack_payloads(now=1)
    assert len(msgs) == 3
    got = [cbor2.loads(p)["acks"] for _, p in msgs]
    assert [len(g) for g in got] == [16, 16, 8] and all(len(p) <= 512 for _, p in msgs)
    assert sorted(a for g in got for a, _ in g) == list(range(1, 80, 2))


def test_reprovisioned_hub_starts_a_new_life_at_seq_1(env):
    """A returned hub wiped and provisioned again under its serial (new key and certificate)
    numbers its records from 1 again: they are new records, stored and acked, not replays."""
    pki, store, ing = env
    old = pki.device(A)
    first = [sign(reading(A, s, kg=80 + s), old) for s in (1, 2, 3)]
    assert ing.handle([rec(A, d) for d in first]).stored == 3
    new = pki.device(A)  # reprovisioned: the inventory supersedes the old certificate
    second = [sign(reading(A, s, kg=60 + s), new) for s in (1, 2)]
    out = ing.handle([rec(A, d) for d in second])
    assert (out.stored, out.quarantined, out.acks) == (2, [], {A: {1, 2}})
    got = [(r.cert_serial, r.seq, r.record) for r in store.readings(A)]
    o, n = format(old.cert.serial_number, "x"), format(new.cert.serial_number, "x")
    assert got == [(o, 1, first[0]), (o, 2, first[1]), (o, 3, first[2]), (n, 1, second[0]), (n, 2, second[1])]
    # the new life is idempotent and guarded against replays like the first
    out = ing.handle([rec(A, second[0]), rec(A, sign(reading(A, 2, kg=99), new))])
    assert (out.stored, out.duplicates, out.acks) == (0, 1, {A: {1}})
    assert [(q.reason, q.seq) for q in out.quarantined] == [("replay", 2)]
    assert store.count(A) == 5


def test_former_life_records_are_refused_after_reprovisioning(env):
    """The old key is gone from the hub once it is wiped: whatever is signed with it now is
    a late or replayed copy. Acking its seq would make the hub delete its *current* record
    with that seq, so it is quarantined (old-certificate), never stored or acked."""
    pki, store, ing = env
    old = pki.device(A)
    stored = sign(reading(A, 1), old)
    ing.handle([rec(A, stored)])
    pki.device(A)
    never_sent = sign(reading(A, 7), old)
    out = ing.handle([rec(A, stored), rec(A, never_sent)])
    assert out.acks == {} and out.stored == out.duplicates == 0
    assert [(q.reason, q.seq) for q in out.quarantined] == [("old-certificate", 1), ("old-certificate", 7)]
    assert "reprovisioned" in out.quarantined[0].detail
    assert [r.record for r in store.readings(A)] == [stored]
    # a forgery is still a forgery, not a former life
    out = ing.handle([rec(A, sign(reading(A, 8), pki.device(B)))])
    assert [q.reason for q in out.quarantined] == ["bad-signature"]
