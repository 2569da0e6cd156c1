"""The hub's uplink on a virtual hub through a real Mosquitto with mutual TLS
(protocol/uplink.md): provisioned with the project's CA (hubctl.ca, hubctl
provision), the broker from hubctl.broker, and a minimal fleet stand-in
(paho-mqtt on the service listener) that acks every record it receives.

Byte-level behaviour (DUP resend on PUBACK timeout, keep alive, hostile
frames) is tested against a scripted stream in tests/firmware/test_mqtt_client.py.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from hubctl import broker as brk
from hubctl import ca
from hubctl import provision as pv
from hubctl.transport import HubConsole

ROOT = Path(__file__).resolve().parents[2]

DOOR = 25


class Fleet:
    """Subscribes to every hub's records and status; acks each record at once."""

    def __init__(self, home, port, ack=True):
        cert, key, root = brk.service_client_cert(home)
        self.records: list[tuple[str, int]] = []
        self.status: list[dict] = []
        self.ack = ack
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-test", clean_session=True)
        ctx = ssl.create_default_context(cafile=str(root))
        ctx.load_cert_chain(str(cert), str(key))
        c.tls_set_context(ctx)
        c.on_message = self._on_message
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(
            [("hemhub/+/rec", 1), ("hemhub/+/alarm", 1), ("hemhub/+/status", 1)])
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.c = c

    def _on_message(self, cl, ud, msg):
        _, hub, kind = msg.topic.split("/", 2)
        if kind == "status":
            with self.lock:
                self.status.append(json.loads(msg.payload))
            return
        payload = cbor2.loads(cbor2.loads(msg.payload).value[2])
        assert payload[1] == hub
        with self.lock:
            self.records.append((kind, payload[2]))
        if self.ack:
            cl.publish(f"hemhub/{hub}/ack", cbor2.dumps({"acks": [[payload[2], payload[2]]],
                                                        "time": int(time.time())}, canonical=True), qos=1)

    def seqs(self) -> set[int]:
        with self.lock:
            return {s for _, s in self.records}

    def wait(self, pred, timeout=30.0, what="fleet state"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: records={self.records} status={self.status[-1:]}")

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def setup(vhub, tmp_path, sim_only):
    home = tmp_path / "home"
    ca.init_ca(home)
    b = brk.Broker(home, port=brk.free_port())
    b.start()
    try:
        with vhub.world() as w:
            w.net_ap("home", psk="secret-psk", rssi=-55)
        r = pv.provision(str(vhub.path), pv.Settings(site="uplink test", broker=f"127.0.0.1:{b.port}",
                                                     wifi_ssid="home", wifi_psk="secret-psk"), home=home)
        assert r.ok, r.error
        fleet = Fleet(home, b.service_port)
        try:
            yield vhub, b, fleet
        finally:
            fleet.close()
    finally:
        b.stop()


def _door_events(rh, n):
    with rh.world() as w:
        for _ in range(n):
            w.pin(DOOR, 1)
            time.sleep(0.12)
            w.pin(DOOR, 0)
            time.sleep(0.12)


def _restart_app(rh):
    with rh.world() as w:
        w.reset()
        w.wait_ready(20)


def _journal(rh) -> dict:
    with HubConsole(rh.port) as con:
        return con.call("service", "journal_json")


def test_selftest_connects_with_mutual_tls(setup):
    rh, b, _ = setup
    with HubConsole(rh.port) as con:
        ok = con.call("service", "uplink_selftest_json")
        assert ok["ok"] is True and ok["error"] is None, ok
        # a port where nothing listens: a clear reason, not a traceback
        bad = con.call("service", "uplink_selftest_json", "127.0.0.1", brk.free_port())
    assert bad["ok"] is False and bad["error"].startswith("unreachable"), bad


def test_records_published_acked_and_pruned_then_broker_outage_loses_nothing(setup):
    rh, b, fleet = setup
    _restart_app(rh)
    try:
        fleet.wait(lambda: any(s.get("online") for s in fleet.status), what="status online")
    except AssertionError:
        raise AssertionError(rh.console_log()[-3000:].decode(errors="replace")) from None
    _door_events(rh, 3)  # 6 alarms (open + close)
    fleet.wait(lambda: len(fleet.seqs()) >= 6, what="6 records")
    kinds = {k for k, _ in fleet.records}
    assert kinds == {"alarm"}
    # heap with TLS and MQTT up, as the hub reports it in its status
    fleet.wait(lambda: len(fleet.status) >= 2 or fleet.status[-1]["pending"] == 0, what="status")
    assert fleet.status[-1]["heap_free"] > 8 * 1024, fleet.status[-1]
    # every key protocol/uplink.md 3.3 requires, and no alarm given up
    required = json.loads((ROOT / "protocol/vectors/uplink.json").read_text())["status_required"]
    assert not [k for k in required if k not in fleet.status[-1]], fleet.status[-1]
    assert fleet.status[-1]["alarms_lost"] == 0, fleet.status[-1]

    b.stop()
    _door_events(rh, 2)  # 4 more alarms while the broker is down
    time.sleep(2)
    seen = fleet.seqs()
    b.start()
    fleet.wait(lambda: len(fleet.seqs()) >= len(seen) + 4, timeout=90, what="records after the outage")
    seqs = sorted(fleet.seqs())
    # no loss: every seq the hub signed reached the fleet (no holes from first to last)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    time.sleep(1.5)  # the last acks applied
    with HubConsole(rh.port) as con:
        left = json.loads(con.exec("import json\nfrom hemhub.journal import Journal\n"
                                   "from hemhub.recorder import PATH\nj = Journal(PATH)\n"
                                   "print(json.dumps({'pending': j.pending(64)}))"))
    # Everything was acknowledged; segments the acks cover completely are deleted
    # (the open segment goes once it is sealed and acknowledged: docs/journal.md).
    assert left["pending"] == [], left
