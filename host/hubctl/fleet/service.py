"""The fleet service: an MQTT client of the broker's service listener that feeds the
Ingestor and publishes application acks (protocol/uplink.md).

Threads: paho's network thread only queues incoming messages; one worker thread
takes them in batches (up to `batch` at a time), verifies and stores a batch in one
transaction, and only then publishes the acks for it. A crash between PUBACK and
commit loses nothing: the hub resends what was never acknowledged.

With verify_workers > 0 the records are verified in that many worker processes
(verify.VerifyPool, started by start() and stopped by stop()), and the worker
thread keeps two batches in flight: while the processes verify one, it stores the
one before. Batches are still stored, and acked, in the order they arrived.

The session is persistent (clean session 0, fixed client id), so records published
while the service is down wait in the broker; paho reconnects on its own after the
broker comes back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .ingest import (
    RECORD_TOPICS,
    STATUS_TOPIC,
    TOPIC_ROOT,
    HubRegistry,
    Ingestor,
    Message,
    Prepared,
)
from .mqtt import make_client
from .store import Store
from .verify import VerifyPool, submit_here

log = logging.getLogger("hubctl.fleet")

CLIENT_ID = "hemhub-fleet"
SUBSCRIPTIONS = [(f"{TOPIC_ROOT}/+/{t}", 1) for t in (*RECORD_TOPICS, STATUS_TOPIC)]


@dataclass
class Stats:
    connects: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    acks_sent: int = 0
    batches: int = 0


class FleetService:
    def __init__(self, store: Store, registry: HubRegistry, host: str, port: int, *, certfile: Path,
                 keyfile: Path, cafile: Path, client_id: str = CLIENT_ID, batch: int = 512,
                 verify_workers: int = 0):
        if verify_workers < 0:
            raise UsageError(f"--verify-workers is {verify_workers}; give 0 (verify in the service's own "
                             "process) or a number of worker processes.")
        self.store = store
        self.ingestor = Ingestor(store, registry)
        self.verify_workers = verify_workers
        self.pool: VerifyPool | None = None
        self.host, self.port = host, port
        self.batch = batch
        self.stats = Stats()
        self.connected = threading.Event()
        self._q: queue.Queue[Message] = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self.client = make_client(client_id, certfile=certfile, keyfile=keyfile, cafile=cafile)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail

    # -- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            log.error("broker %s:%s refused the fleet service: %s", self.host, self.port, rc)
            return
        self.stats.connects += 1
        log.info("connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present)
        client.subscribe(SUBSCRIPTIONS)
        self.connected.set()

    def _on_connect_fail(self, client, userdata):
        log.warning("cannot reach the broker at %s:%s (TLS or network); retrying", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, rc, props):
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", rc)

    def _on_message(self, client, userdata, msg):
        self.stats.received += 1
        self._q.put(Message(msg.topic, bytes(msg.payload), time.time()))

    # -- worker -----------------------------------------------------------------------
    def _take(self, block: bool) -> list[Message] | None:
        try:
            batch = [self._q.get(timeout=0.2) if block else self._q.get_nowait()]
        except queue.Empty:
            return None
        while len(batch) < self.batch:
            try:
                batch.append(self._q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        # Two batches in flight: the next one is verified (in the pool's processes)
        # while this thread stores the one before and publishes its acks.
        pending: Prepared | None = None
        while not self._stop.is_set():
            batch = self._take(block=pending is None)
            if batch is None and pending is None:
                with self._idle:
                    self._idle.notify_all()
                continue
            prepared = None
            if batch is not None:
                try:
                    prepared = self.ingestor.prepare(batch)
                except Exception:  # the inventory or the pool failed: nothing acked, the hubs resend
                    log.exception("could not verify a batch of %d messages; they will be resent", len(batch))
            if pending is not None:
                self._commit(pending)
            pending = prepared
            if pending is not None and self.pool is None:  # verified in prepare(): nothing to overlap
                self._commit(pending)
                pending = None
        if pending is not None:
            self._commit(pending)

    def _commit(self, prepared: Prepared) -> None:
        try:
            out = self.ingestor.commit(prepared)
        except Exception:  # a store or pool failure: nothing acked, the hubs resend
            log.exception("could not store a batch of %d records; they will be resent", len(prepared.records))
            return
        self.stats.batches += 1
        self.stats.stored += out.stored
        self.stats.duplicates += out.duplicates
        self.stats.quarantined += len(out.quarantined)
        for topic, payload in out.ack_payloads():
            self.client.publish(topic, payload, qos=1)
            self.stats.acks_sent += 1

    def start(self) -> FleetService:
        if self.verify_workers and self.pool is None:
            self.pool = VerifyPool(self.verify_workers)
            self.ingestor.submit = self.pool.submit
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="fleet-ingest", daemon=True)
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until the incoming queue is empty and the worker has finished its batch."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while time.monotonic() < deadline:
                if self._q.empty() and self._idle.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                    if self._q.empty():
                        return True
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._worker:
            self._worker.join(5)
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            if self.pool:
                self.ingestor.submit = submit_here
                self.pool.close()
                self.pool = None

    def __enter__(self) -> FleetService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

