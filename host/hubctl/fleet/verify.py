"""Where the fleet verifies records: in the ingest thread, or in worker processes.

    verify_here(jobs) -> [Verified(record, fields_json) | RecordRejected, ...]
    VerifyPool(workers).submit(jobs) -> wait; wait() -> the same, computed in `workers`
                                        processes while the caller does something else
    jobs: [(RecordVerifier, record bytes), ...]; the verdicts are in the same order

A verified record comes with its fields already as the JSON the store keeps
(store.fields_json): making it is a third of what storing a record costs, and in
a pool that work moves off the process that runs the MQTT client.

Why processes and not threads: hubctl.records is Python (CBOR decoding, the
determinism and schema checks are a third of a record's time) and holds the GIL;
only the ECDSA arithmetic releases it. In one process, verification and paho's
network thread take turns on the GIL; a worker process has its own interpreter.
What crosses the pipe is a record's bytes one way and its decoded fields the other.

Workers are started with "spawn": forking a process whose paho thread may hold a
lock would copy the lock held, forever.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import records as R
from ..errors import HubctlError
from .store import fields_json

log = logging.getLogger("hubctl.fleet")


class Verified(NamedTuple):
    record: R.VerifiedRecord
    fields_json: str


Job = tuple[R.RecordVerifier, bytes]
Verdict = Verified | R.RecordRejected

MIN_CHUNK = 32  # fewer records than this per worker cost more in the pipe than they save


def submit_here(jobs: list[Job]) -> Callable[[], list[Verdict]]:
    """verify_here with VerifyPool.submit's interface (it is done when it returns)."""
    verdicts = verify_here(jobs)
    return lambda: verdicts


def verify_here(jobs: list[Job]) -> list[Verdict]:
    out: list[Verdict] = []
    for verifier, data in jobs:
        try:
            rec = verifier(data)
        except R.RecordRejected as e:
            out.append(e)
            continue
        out.append(Verified(rec, fields_json(rec.fields)))
    return out


class VerifyPoolError(HubctlError):
    """The verification worker processes could not be started."""


class VerifyPool:
    """verify_here in `workers` processes; close() (or `with`) stops them."""

    def __init__(self, workers: int, *, start_timeout: float = 60.0):
        if workers < 1:
            raise ValueError(f"a verification pool needs at least 1 worker process, not {workers}")
        self.workers = workers
        self.start_timeout = start_timeout
        self.pids: list[int] = []  # the worker processes (for tests and the benchmark's CPU accounting)
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool whose every worker has started and imported what it needs, so the first
        records do not wait for interpreters to start (a spawned worker takes ~0.3 s)."""
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.SimpleQueue()
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_ready, initargs=(ready,))
        # A spawn pool starts one worker per submit while none is idle: `int` is a no-op task.
        warm = [pool.submit(int) for _ in range(self.workers)]
        deadline = time.monotonic() + self.start_timeout
        pids = []
        while len(pids) < self.workers:
            if not ready.empty():
                pids.append(ready.get())
                continue
            failed = next((f.exception() for f in warm if f.done() and f.exception()), None)
            if failed or time.monotonic() > deadline:
                pool.shutdown(wait=False, cancel_futures=True)
                raise VerifyPoolError(f"The record verification worker processes did not start: "
                                      f"{failed or f'not ready within {self.start_timeout:.0f} s'}.",
                                      hint="Run with --verify-workers 0 to verify in the service's own process.")
            time.sleep(0.01)
        self.pids = sorted(pids)
        return pool

    def submit(self, jobs: list[Job]) -> Callable[[], list[Verdict]]:
        """Start verifying; the function returned waits for the verdicts."""
        if not jobs:
            return list
        n = max(1, min(self.workers, len(jobs) // MIN_CHUNK))
        size = -(-len(jobs) // n)
        pool = self._pool
        try:
            futures = [pool.submit(_verify_chunk, *_chunk(jobs[i:i + size])) for i in range(0, len(jobs), size)]
        except BrokenProcessPool:
            self._restart(pool)
            raise

        def wait() -> list[Verdict]:
            try:
                results = [r for f in futures for r in f.result()]
            except BrokenProcessPool:
                self._restart(pool)
                raise
            return [Verified(R.VerifiedRecord(*r[:5], data=data), r[5]) if len(r) == 6 else R.RecordRejected(*r)
                    for r, (_, data) in zip(results, jobs, strict=True)]

        return wait

    def verify(self, jobs: list[Job]) -> list[Verdict]:
        return self.submit(jobs)()

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        # A worker died (killed, out of memory): nothing of the batch is acked, so the
        # hubs send it again; the next batch gets fresh workers. Batches submitted to
        # the broken pool all fail; only the first restarts it.
        if self._pool is not broken:
            return
        log.error("a verification worker process died; restarting the pool")
        broken.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _chunk(jobs: list[Job]) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """(certificates as DER, [(index into them, record)]): each certificate crosses the pipe once."""
    index: dict[int, int] = {}
    ders: list[bytes] = []
    items = []
    for verifier, data in jobs:
        i = index.get(id(verifier))
        if i is None:
            i = index[id(verifier)] = len(ders)
            ders.append(verifier.cert.public_bytes(serialization.Encoding.DER))
        items.append((i, bytes(data)))
    return ders, items


# -- in the worker process -------------------------------------------------------------
def _worker_ready(ready) -> None:
    # Ctrl-C reaches the whole process group; the service stops its workers itself,
    # after the batch in hand, rather than each worker dying with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ready.put(os.getpid())  # this module, hubctl.records and cryptography are imported by now


_verifiers: dict[bytes, R.RecordVerifier] = {}
_MAX_VERIFIERS = 10_000


def _verify_chunk(ders: list[bytes], items: list[tuple[int, bytes]]) -> list[tuple]:
    verifiers = []
    for der in ders:
        v = _verifiers.get(der)
        if v is None:
            if len(_verifiers) >= _MAX_VERIFIERS:
                _verifiers.clear()
            v = _verifiers[der] = R.RecordVerifier(x509.load_der_x509_certificate(der))
        verifiers.append(v)
    # What crosses the pipe back: tuples (VerifyPool.submit rebuilds the verdicts).
    return [(v.record.hub_id, v.record.seq, v.record.kind, v.record.fields, v.record.payload, v.fields_json)
            if isinstance(v, Verified) else (v.reason, v.detail)
            for v in verify_here([(verifiers[i], data) for i, data in items])]
