"""Verification in worker processes (hubctl.fleet.verify.VerifyPool) gives the verdicts
of the in-process path, record for record and in order, forgeries included; a dead
worker costs one batch (not acked, so resent), not the service; the service starts
and stops its pool with itself."""

from __future__ import annotations

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest
from e2e.pki import FleetPKI
from e2e.recs import door, reading, sign
from hubctl import home as homedir
from hubctl import records as R
from hubctl.broker import free_port
from hubctl.fleet.ingest import Ingestor, InventoryRegistry, Message
from hubctl.fleet.service import FleetService
from hubctl.fleet.store import SQLiteStore
from hubctl.fleet.verify import MIN_CHUNK, Verified, VerifyPool, verify_here

A, B = "HH1-2026-0000A1", "HH1-2026-0000B2"


@pytest.fixture(scope="module")
def pool():
    with VerifyPool(2) as p:
        yield p


@pytest.fixture
def pki(tmp_path):
    return FleetPKI(tmp_path / "home")


def jobs_of(pki):
    """Good records of two hubs among every kind of bad one, enough for both workers."""
    a, b = pki.device(A), pki.device(B)
    va, vb = R.RecordVerifier(a.cert), R.RecordVerifier(b.cert)
    genuine = sign(reading(A, 4), a)
    bad = [
        sign(reading(A, 2, kg=150), b),                                   # B's key, A's name
        sign(reading(B, 3), b).replace(B.encode(), A.encode()),           # relabelled
        genuine.replace(bytes.fromhex("191c43"), bytes.fromhex("191c44")),  # value changed
        genuine[:-5],                                                     # truncated
        b"\xff\x00",                                                      # not CBOR
        genuine.replace(b"\x58\x40", b"\x59\x00\x40"),                    # non-minimal length
        sign(reading(B, 1), b),                                           # B's genuine record, A's certificate
    ]
    jobs = [(va, sign(reading(A, s), a)) for s in range(10, 10 + MIN_CHUNK)]
    jobs += [(va, d) for d in bad]
    jobs += [(vb, sign(door(B, s), b)) for s in range(1, MIN_CHUNK)]
    return jobs


def test_the_pool_gives_the_in_process_verdicts(pool, pki):
    jobs = jobs_of(pki)
    here, there = verify_here(jobs), pool.verify(jobs)
    assert len(there) == len(jobs)
    rejected = []
    for h, t in zip(here, there, strict=True):
        assert type(h) is type(t)
        if isinstance(h, Verified):
            assert (t.record, t.fields_json) == (h.record, h.fields_json)
        else:
            assert (t.reason, t.detail) == (h.reason, h.detail)
            rejected.append(t.reason)
    assert rejected == ["bad-signature", "bad-signature", "bad-signature", "truncated", "malformed",
                        "non-deterministic", "hub-mismatch"]
    assert pool.verify([]) == []


def test_an_ingestor_with_the_pool_stores_and_acks_what_one_without_does(pool, pki, tmp_path):
    jobs = jobs_of(pki)
    msgs = [Message(f"hemhub/{A}/rec", d, 1.0) for _, d in jobs]
    outs = []
    for name, submit in (("here", None), ("pool", pool.submit)):
        store = SQLiteStore(tmp_path / f"{name}.db")
        reg = InventoryRegistry(homedir.db_path(pki.home), ttl=0)
        ing = Ingestor(store, reg, submit) if submit else Ingestor(store, reg)
        out = ing.handle(msgs)
        outs.append((out.stored, out.acks, [(q.reason, q.record) for q in out.quarantined],
                     [(r.seq, r.record, r.fields) for r in store.readings()]))
        store.close()
    assert outs[0] == outs[1]
    assert outs[1][0] == MIN_CHUNK and outs[1][1] == {A: set(range(10, 10 + MIN_CHUNK))}


def test_a_dead_worker_fails_one_batch_and_the_pool_recovers(pki):
    jobs = jobs_of(pki)
    with VerifyPool(1) as p:
        (pid,) = p.pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            p.verify(jobs)
        assert p.pids != [pid]
        assert [type(v) for v in p.verify(jobs)] == [type(v) for v in verify_here(jobs)]


def test_the_service_starts_and_stops_its_pool(pki, tmp_path):
    store = SQLiteStore(tmp_path / "fleet.db")
    svc = FleetService(store, InventoryRegistry(homedir.db_path(pki.home)), "127.0.0.1", free_port(),
                       certfile=pki.service.certfile, keyfile=pki.service.keyfile, cafile=pki.root_file,
                       verify_workers=2)
    assert svc.pool is None  # nothing runs before start()
    with svc:
        pids = svc.pool.pids
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    assert svc.pool is None and not any(_alive(p) for p in pids)
    store.close()


def test_a_negative_number_of_workers_is_refused(pki, tmp_path):
    from hubctl.errors import UsageError

    with pytest.raises(UsageError, match="verify-workers"):
        FleetService(None, None, "127.0.0.1", 1, certfile=pki.service.certfile, keyfile=pki.service.keyfile,
                     cafile=pki.root_file, verify_workers=-1)
    with pytest.raises(ValueError, match="at least 1"):
        VerifyPool(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"  # a zombie has exited
