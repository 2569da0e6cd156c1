"""Uplink costs: heap taken by the uplink on the virtual hub, and bytes on the
wire per record (MQTT + TLS 1.2) through a real Mosquitto with mutual TLS.

    .venv/bin/python benchmarks/bench_uplink.py [--records 200]

1. Heap: a virtual hub (application imported in place from ROMFS, 96 KiB heap)
   imports each module of the application; prints what each takes and what is
   left.
2. Wire: the hub's forwarder (MicroPython, the compiled firmware) sends N
   signed-size records (146 bytes, the weight vector's size) through a
   byte-counting TCP proxy to Mosquitto; a fleet stand-in acks each record.
   Prints bytes up/down per record, excluding the TLS handshake (measured
   separately).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODULES = ("asyncio", "hemhub.sense.sink", "hemhub.sense.central", "hemhub.journal", "hemhub.record",
           "hemhub.recorder", "hemhub.link.manager", "hemhub.codec.mqtt", "hemhub.uplink.ack",
           "hemhub.uplink.mqtt", "hemhub.uplink.forward", "hemhub.uplink.tls")


def heap(bundle, tmp: Path) -> None:
    from hubctl.transport import HubConsole
    from vhubtest import run_hub

    code = ("import gc\ngc.collect()\nprint('free at start', gc.mem_free())\n"
            f"for m in {MODULES!r}:\n"
            "    gc.collect(); a = gc.mem_free(); __import__(m); gc.collect(); print(m, a - gc.mem_free())\n"
            "gc.collect(); print('free after imports', gc.mem_free())\n")
    with run_hub(tmp / "hub", bundle) as rh, HubConsole(rh.port) as con:
        print(con.exec(code))


class Proxy(threading.Thread):
    def __init__(self, target: int):
        super().__init__(daemon=True)
        self.target = target
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.up = self.down = 0
        self.marks: list[tuple[int, int]] = []

    def run(self):
        while True:
            c, _ = self.srv.accept()
            s = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(c, s, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, "down"), daemon=True).start()

    def _pump(self, a, b, d):
        try:
            while data := a.recv(65536):
                setattr(self, d, getattr(self, d) + len(data))
                b.sendall(data)
        except OSError:
            pass
        finally:
            b.close()


HUB_SCRIPT = r'''
import sys, gc
sys.path.insert(0, sys.argv[1])
import asyncio, time
from hemhub.journal import Journal, KIND_MEASUREMENT
from hemhub.codec.cbor import encode, Tag
from hemhub.uplink.forward import Forwarder, open_tls
class R: pass
rec = R()
rec.journal = Journal(sys.argv[2], capacity_bytes=4 << 20)
rec.last_seq = None
N = int(sys.argv[5])
def mk(seq):
    body = encode({2: seq, 1: "HH1-TEST-0001", 0: 1, 3: 0, 4: 1767225605, 9: b"x" * 40})
    return encode(Tag(18, [b"\xa1\x01&", {}, body, bytes(64)]))
size = len(mk(1))
cfg = {"broker_host": "127.0.0.1", "broker_port": int(sys.argv[3]), "status_interval_s": 3600}
fw = Forwarder(cfg, rec, hub_id="HH1-TEST-0001", open_stream=open_tls("127.0.0.1", int(sys.argv[3]), "127.0.0.1", sys.argv[4])[0])
async def main():
    t = asyncio.create_task(fw.run())
    while not (fw.client and fw.client.connected):
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(500)
    print("MARK", flush=True) if False else print("MARK")
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
    await asyncio.sleep_ms(1500)
    for i in range(N):
        rec.journal.append_with(KIND_MEASUREMENT, mk)
    rec.last_seq = N
    while rec.journal.stats()["records"]:
        await asyncio.sleep_ms(50)
    await asyncio.sleep_ms(300)
    print("DONE", size, fw.counters["published"])
asyncio.run(main())
'''


def wire(bundle, tmp: Path, n: int) -> None:
    import cbor2
    import paho.mqtt.client as mqtt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from hubctl import broker as brk
    from hubctl import ca
    from hubctl.vhub.interp import micropython_command

    home = tmp / "home"
    ca.init_ca(home)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HH1-TEST-0001")]))
           .sign(key, hashes.SHA256()))
    cert = ca.issue_device_cert(home, csr.public_bytes(serialization.Encoding.DER), "HH1-TEST-0001")
    ident = tmp / "identity"
    ident.mkdir()
    (ident / "key").write_bytes(key.private_numbers().private_value.to_bytes(32, "big"))
    (ident / "cert.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (ident / "root.der").write_bytes(ca.load_cert(home, ca.ROOT).public_bytes(serialization.Encoding.DER))
    b = brk.Broker(home, port=brk.free_port())
    b.start()
    fleet = None
    try:
        scert, skey, root = brk.service_client_cert(home)
        fleet = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fleet")
        ctx = ssl.create_default_context(cafile=str(root))
        ctx.load_cert_chain(str(scert), str(skey))
        fleet.tls_set_context(ctx)

        def on_message(cl, ud, msg):
            if msg.topic.endswith("/status"):
                return
            seq = cbor2.loads(cbor2.loads(msg.payload).value[2])[2]
            cl.publish(msg.topic.rsplit("/", 1)[0] + "/ack", cbor2.dumps({"acks": [[seq, seq]]}), qos=1)

        fleet.on_message = on_message
        fleet.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe([("hemhub/+/rec", 1), ("hemhub/+/status", 1)])
        fleet.connect("127.0.0.1", b.service_port)
        fleet.loop_start()
        proxy = Proxy(b.port)
        proxy.start()
        script = tmp / "hub.py"
        script.write_text(HUB_SCRIPT)
        cmd = micropython_command(heapsize=256 * 1024) + [str(script), str(bundle.app_dir), str(tmp / "j"),
                                                           str(proxy.port), str(ident), str(n)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        base = None
        for line in p.stdout:
            if line.startswith("MARK"):
                time.sleep(1.0)
                base = (proxy.up, proxy.down)
            if line.startswith("DONE"):
                _, size, published = line.split()
                up, down = proxy.up - base[0], proxy.down - base[1]
                print(f"handshake + CONNECT + SUBSCRIBE + status: {base[0]} bytes up, {base[1]} down")
                print(f"{published} records of {size} bytes: {up / n:.1f} bytes up, {down / n:.1f} down per record "
                      f"(MQTT+TLS overhead up {up / n - int(size):.1f} bytes)")
                break
        p.terminate()
        p.wait(10)
    finally:
        if fleet is not None:
            fleet.loop_stop()
            fleet.disconnect()
        b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200)
    args = ap.parse_args()
    from hubctl.build import build

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bundle = build(tmp / "b")
        print("== heap (virtual hub, ROMFS, 96 KiB) ==")
        heap(bundle, tmp)
        print("== bytes on the wire (loopback, TLS 1.2, mutual) ==")
        wire(bundle, tmp, args.records)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
