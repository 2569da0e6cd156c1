# Benchmark: fleet ingest throughput through the real broker, against the ECDSA
# verification rate of `cryptography` on this machine measured in the same run.
#
#   .venv/bin/python benchmarks/bench_fleet.py [--hubs 4] [--records 1500] [--batch 512]
#                                              [--verify-workers N]   (default: one per core)
#
# 1. ceiling: ES256 verifications per second on one core (cryptography's
#    EllipticCurvePublicKey.verify over the records' Sig_structures), and the full
#    host record check (hubctl.records.verify_record: CBOR, determinism, schema,
#    signature) per second;
# 2. throughput: HUBS host-side hub clients (in a child process, mutual TLS on the
#    hub listener) publish RECORDS signed records each, QoS 1, as fast as the broker
#    takes them; the fleet service (this process, service listener) verifies, stores
#    in SQLite (synchronous=FULL, one transaction per batch) and acks. Rate = records
#    stored / time from the first publish to the last record stored and every ack sent.
# 3. where the CPU went in that time, per reading (Linux /proc): the service process
#    (MQTT client, batching, SQLite), its verification processes, the publisher and
#    Mosquitto. On a small machine all four share the cores, so the service's own
#    CPU per reading says more about its capacity than the rate does.
# Target (issue 5): at least half of one core's verification rate.
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import cbor2  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import (  # noqa: E402
    decode_dss_signature,
    encode_dss_signature,
)
from e2e.pki import FleetPKI  # noqa: E402
from e2e.recs import reading  # noqa: E402
from hemhub import record  # noqa: E402
from hubctl import home as homedir  # noqa: E402
from hubctl import records as R  # noqa: E402
from hubctl.broker import Broker, broker_material, free_port  # noqa: E402
from hubctl.fleet.ingest import InventoryRegistry  # noqa: E402
from hubctl.fleet.service import FleetService  # noqa: E402
from hubctl.fleet.store import SQLiteStore  # noqa: E402

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
PROTECTED = b"\xa1\x01\x26"


def host_sign(fields: dict, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A record with the hub's payload encoder and a host ECDSA signature (fast to make
    in bulk; same bytes layout as hemhub.record.sign_record, low s)."""
    payload = record.encode_payload(fields)
    tbs = cbor2.dumps(["Signature1", PROTECTED, b"", payload])
    r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(hashes.SHA256())))
    s = min(s, N - s)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(18, [PROTECTED, {}, payload, sig]), canonical=True)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publisher(port, root, clients, recs, done):
    from hubctl.fleet.mqtt import BlockingClient

    conns = []
    for cn, certfile, keyfile in clients:
        c = BlockingClient("127.0.0.1", port, cn, certfile=certfile, keyfile=keyfile, cafile=root)
        c.client.max_inflight_messages_set(100)
        conns.append(c.connect())
    infos = []
    for i in range(max(len(v) for v in recs.values())):
        for c, (cn, _, _) in zip(conns, clients, strict=True):
            if i < len(recs[cn]):
                infos.append(c.client.publish(f"hemhub/{cn}/rec", recs[cn][i], qos=1))
    for info in infos:
        info.wait_for_publish(60)
    done.set()
    time.sleep(0.5)
    for c in conns:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hubs", type=int, default=4)
    ap.add_argument("--records", type=int, default=1500, help="records per hub")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--verify-workers", type=int, default=os.cpu_count() or 1,
                    help="verification processes of the service (0: in its own process)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        pki = FleetPKI(Path(tmp) / "home")
        hubs = [pki.device(f"HH1-BENCH-{i:04d}") for i in range(a.hubs)]
        recs = {}
        t0 = time.perf_counter()
        for h in hubs:
            key = ec.derive_private_key(h.signer._d, ec.SECP256R1())
            recs[h.cn] = [host_sign(reading(h.cn, s, kg=60 + s % 40), key) for s in range(1, a.records + 1)]
        total = a.hubs * a.records
        print(f"made {total} signed records in {time.perf_counter() - t0:.1f} s "
              f"({len(recs[hubs[0].cn][0])} bytes each)")

        # 1. ceilings, one core
        sample = [(h.cert, d) for h in hubs for d in recs[h.cn][:1000]]
        items = []
        for cert, d in sample:
            msg = cbor2.loads(d).value
            sig = msg[3]
            items.append((cert.public_key(), encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                                                  int.from_bytes(sig[32:], "big")),
                          cbor2.dumps(["Signature1", PROTECTED, b"", msg[2]])))
        t0 = time.perf_counter()
        for key, sig, tbs in items:
            key.verify(sig, tbs, ec.ECDSA(hashes.SHA256()))
        verify_rate = len(items) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for cert, d in sample:
            R.verify_record(d, cert)
        record_rate = len(sample) / (time.perf_counter() - t0)
        print(f"ceiling: cryptography ES256 verify {verify_rate:,.0f}/s on one core; "
              f"full record check (hubctl.records.verify_record) {record_rate:,.0f}/s")

        # 2. through the broker
        broker = Broker(pki.home, port=free_port(), service_port=free_port(), material=broker_material(pki.home))
        store = SQLiteStore(homedir.db_path(pki.home))
        with broker:
            svc = FleetService(store, InventoryRegistry(homedir.db_path(pki.home), ttl=60), "127.0.0.1",
                               broker.service_port, certfile=pki.service.certfile, keyfile=pki.service.keyfile,
                               cafile=pki.root_file, batch=a.batch, verify_workers=a.verify_workers)
            with svc:
                assert svc.wait_connected(10)
                ctx = mp.get_context("spawn")
                done = ctx.Event()
                clients = [(h.cn, h.certfile, h.keyfile) for h in hubs]
                proc = ctx.Process(target=publisher, args=(broker.port, pki.root_file, clients, recs, done))
                proc.start()
                while svc.stats.received == 0 and proc.is_alive():
                    time.sleep(0.001)
                pids = {"service": [os.getpid()], "verification": svc.pool.pids if svc.pool else [],
                        "publisher": [proc.pid], "broker": [broker.proc.pid]}
                cpu0 = {k: [cpu_seconds(p) for p in v] for k, v in pids.items()}
                t0 = time.perf_counter()
                deadline = time.monotonic() + 600
                while svc.stats.stored + svc.stats.duplicates < total and time.monotonic() < deadline:
                    time.sleep(0.002)
                elapsed = time.perf_counter() - t0
                cpu1 = {k: [cpu_seconds(p) for p in v] for k, v in pids.items()}
                proc.join(60)
                stats = svc.stats
        rate = stats.stored / elapsed
        print(f"ingest: {stats.stored} of {total} records verified and stored in {elapsed:.2f} s = "
              f"{rate:,.0f} readings/s ({stats.batches} batches, {stats.acks_sent} ack messages, "
              f"{stats.quarantined} quarantined; {a.verify_workers} verification processes)")
        print(f"ratio to one core's ES256 verify rate: {rate / verify_rate:.2f} (target >= 0.5)")
        if all(x is not None for v in (*cpu0.values(), *cpu1.values()) for x in v):
            us = {k: (sum(cpu1[k]) - sum(cpu0[k])) / stats.stored * 1e6 for k in pids}
            print(f"CPU per reading: service {us['service']:.0f} us + its verification processes "
                  f"{us['verification']:.0f} us; publisher {us['publisher']:.0f} us, broker {us['broker']:.0f} us "
                  f"({sum(us.values()) * rate / 1e6:.2f} of {os.cpu_count()} cores busy)")
        assert store.count() == total, "not every record was stored"
        store.close()


if __name__ == "__main__":
    main()
