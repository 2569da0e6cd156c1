"""The generated Mosquitto configuration, run for real on 127.0.0.1: who may connect
(device certificates only on the hub listener, a revoked one not at all), who may
publish and read what (a hub only under its own id), and the fleet service storing
and acknowledging records across a broker restart."""

from __future__ import annotations

import time

import cbor2
import pytest
from e2e.conftest import hub_client, service_client
from e2e.recs import door, reading, sign
from hubctl import home as homedir
from hubctl.errors import TransportError
from hubctl.fleet.ingest import InventoryRegistry
from hubctl.fleet.service import FleetService

HUB_A, HUB_B = "HH1-2026-0000A1", "HH1-2026-0000B2"


def acks_of(messages, topic):
    """seq set acknowledged on an ack topic, checking every ack payload on the way."""
    seqs = set()
    for t, p in messages:
        if t != topic:
            continue
        msg = cbor2.loads(p)
        assert cbor2.dumps(msg, canonical=True) == p and set(msg) == {"acks", "time"}
        for a, b in msg["acks"]:
            seqs.update(range(a, b + 1))
    return seqs


def test_hub_publishes_under_its_own_id_only(pki, broker):
    a, b = pki.device(HUB_A), pki.device(HUB_B)
    with service_client(pki, broker) as obs, hub_client(pki, broker, a) as hub_a:
        assert obs.subscribe("hemhub/+/rec") == [1]
        hub_a.publish(f"hemhub/{HUB_B}/rec", b"posing as B")
        hub_a.publish(f"hemhub/{HUB_A}/rec", b"mine")
        assert obs.wait_for(lambda m: (f"hemhub/{HUB_A}/rec", b"mine") in m)
        # QoS 1 in order on one connection: had the first been forwarded it would be here
        assert obs.messages == [(f"hemhub/{HUB_A}/rec", b"mine")]
        # nor can A read what the fleet sends B
        hub_a.subscribe(f"hemhub/{HUB_B}/ack")
        hub_a.subscribe(f"hemhub/{HUB_A}/ack")
        with hub_client(pki, broker, b) as hub_b:
            hub_b.subscribe(f"hemhub/{HUB_B}/ack")
            with service_client(pki, broker, "fleet-writer") as fl:
                fl.publish(f"hemhub/{HUB_B}/ack", b"for B")
                fl.publish(f"hemhub/{HUB_A}/ack", b"for A")
            assert hub_b.wait_for(lambda m: (f"hemhub/{HUB_B}/ack", b"for B") in m)
        assert hub_a.wait_for(lambda m: (f"hemhub/{HUB_A}/ack", b"for A") in m)
        assert hub_a.messages == [(f"hemhub/{HUB_A}/ack", b"for A")]


def test_client_id_is_forced_to_the_certificate_cn(pki, broker):
    """A hub cannot take over another hub's session by using its client id."""
    a, b = pki.device(HUB_A), pki.device(HUB_B)
    with hub_client(pki, broker, b) as hub_b, hub_client(pki, broker, a, client_id=HUB_B):
        assert not hub_b.disconnected.wait(1.0), "B was kicked off by A using B's client id"
    # mosquitto replaced the client id A asked for with A's CN
    assert f"as {HUB_A} (" in broker.log_path.read_text()


@pytest.mark.parametrize("kind", ["foreign CA", "service CA", "service CA with chain"])
def test_non_device_certificate_cannot_connect_as_hub(pki, broker, kind):
    if kind == "foreign CA":
        client = pki.foreign(HUB_A)
    else:
        client = pki.service_signed("intruder", send_chain=kind.endswith("chain"))
    with pytest.raises(TransportError):
        hub_client(pki, broker, client, client_id=HUB_A).connect(timeout=3)


def test_device_certificate_cannot_connect_as_the_service(pki, broker):
    a = pki.device(HUB_A, send_chain=True)
    with pytest.raises(TransportError):
        service_client(pki, broker, client=a).connect(timeout=3)


def test_revoked_hub_cannot_connect(pki, broker):
    a, b = pki.device(HUB_A), pki.device(HUB_B)
    with hub_client(pki, broker, a):
        pass  # connects before
    broker.update_crl(pki.revoke(HUB_A))
    with pytest.raises(TransportError):
        hub_client(pki, broker, a).connect(timeout=3)
    with hub_client(pki, broker, b):
        pass  # others still do
    # and after a restart, from the CRL file alone
    broker.stop()
    broker.start()
    with pytest.raises(TransportError):
        hub_client(pki, broker, a).connect(timeout=3)


def test_fleet_stores_and_acks_a_record(pki, broker, fleet, store):
    a = pki.device(HUB_A)
    rec = sign(reading(HUB_A, 1), a)
    alarm = sign(door(HUB_A, 2), a)
    with hub_client(pki, broker, a) as hub:
        hub.subscribe(f"hemhub/{HUB_A}/ack")
        hub.publish(f"hemhub/{HUB_A}/rec", rec)
        hub.publish(f"hemhub/{HUB_A}/alarm", alarm)
        assert hub.wait_for(lambda m: acks_of(m, f"hemhub/{HUB_A}/ack") == {1, 2})
    got = store.readings(HUB_A)
    assert [(r.seq, r.kind, r.record) for r in got] == [(1, "observations", rec), (2, "event", alarm)]
    assert all(r.status == "verified" for r in got)


def test_forged_record_is_quarantined_and_not_acked(pki, broker, fleet, store):
    a = pki.device(HUB_A)
    impostor = pki.device("HH1-2026-0000C3")  # a real hub key, not A's
    forged = sign(reading(HUB_A, 7, kg=150), impostor)
    genuine = sign(reading(HUB_A, 8), a)
    with hub_client(pki, broker, a) as hub:
        hub.subscribe(f"hemhub/{HUB_A}/ack")
        hub.publish(f"hemhub/{HUB_A}/rec", forged)
        hub.publish(f"hemhub/{HUB_A}/rec", genuine)
        assert hub.wait_for(lambda m: 8 in acks_of(m, f"hemhub/{HUB_A}/ack"))
        assert fleet.wait_idle()
        assert acks_of(hub.messages, f"hemhub/{HUB_A}/ack") == {8}
    assert [r.seq for r in store.readings(HUB_A)] == [8]
    q = store.quarantined(HUB_A)
    assert [(x.reason, x.record) for x in q] == [("bad-signature", forged)]


def test_broker_down_and_back_no_loss_no_duplicates(pki, broker, fleet, store):
    a = pki.device(HUB_A)
    recs = {s: sign(reading(HUB_A, s, kg=70 + s), a) for s in range(1, 21)}
    with hub_client(pki, broker, a) as hub:
        for s in range(1, 11):
            hub.publish(f"hemhub/{HUB_A}/rec", recs[s])
        assert fleet.wait_idle() and store.count(HUB_A) == 10
    broker.stop()
    for _ in range(100):
        if not fleet.connected.is_set():
            break
        time.sleep(0.05)
    assert not fleet.connected.is_set(), "the fleet service did not notice the broker going away"
    broker.start()
    # the hub had no acks for 6..10 yet (say) and sends them again with the rest
    with hub_client(pki, broker, a, clean_session=False) as hub:
        hub.subscribe(f"hemhub/{HUB_A}/ack")
        for s in range(6, 21):
            hub.publish(f"hemhub/{HUB_A}/rec", recs[s])
        assert fleet.wait_connected(15)
        assert hub.wait_for(lambda m: set(range(6, 21)) <= acks_of(m, f"hemhub/{HUB_A}/ack"), timeout=20)
    assert fleet.stats.connects >= 2
    assert [r.seq for r in store.readings(HUB_A)] == list(range(1, 21))
    assert [r.record for r in store.readings(HUB_A)] == [recs[s] for s in range(1, 21)]
    assert store.quarantined() == []


def test_fleet_with_verification_processes_stores_acks_and_quarantines(pki, broker, store):
    """The same service with its records verified in a process pool (fleet serve's default)."""
    a = pki.device(HUB_A)
    impostor = pki.device("HH1-2026-0000C3")
    forged = sign(reading(HUB_A, 1, kg=150), impostor)
    genuine = [sign(reading(HUB_A, s), a) for s in (2, 3)] + [sign(door(HUB_A, 4), a)]
    svc = FleetService(store, InventoryRegistry(homedir.db_path(pki.home), ttl=0), "127.0.0.1",
                       broker.service_port, certfile=pki.service.certfile, keyfile=pki.service.keyfile,
                       cafile=pki.root_file, verify_workers=2)
    with svc, hub_client(pki, broker, a) as hub:
        assert svc.wait_connected(10)
        hub.subscribe(f"hemhub/{HUB_A}/ack")
        for data in (forged, *genuine):
            hub.publish(f"hemhub/{HUB_A}/rec", data)
        assert hub.wait_for(lambda m: acks_of(m, f"hemhub/{HUB_A}/ack") == {2, 3, 4})
        assert svc.wait_idle()
        assert acks_of(hub.messages, f"hemhub/{HUB_A}/ack") == {2, 3, 4}
    assert [r.record for r in store.readings(HUB_A)] == genuine
    assert [(q.reason, q.record) for q in store.quarantined(HUB_A)] == [("bad-signature", forged)]
