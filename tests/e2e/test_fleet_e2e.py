"""End to end: virtual hubs provisioned by hubctl provision, a real Mosquitto on
127.0.0.1 (hubctl.broker) and the fleet service (hubctl.fleet), driven through the
simulated world: patients' devices measure, doors open, pendants are pressed, WiFi
and 4G fail. Everything through hubctl.demo.VirtualFleet, the machinery of
`hubctl demo`.

What each test checks is what a user relies on: every reading and alarm reaches the
fleet verified exactly once (VirtualFleet.check_exactly_once: the independent
verifier over the fleet's copies, nothing quarantined, the hub's journal pruned,
each kind counted), whatever fails on the way.

Covered elsewhere, with host-side clients holding device certificates:
a hub publishing under another hub's topic is dropped by the broker's ACL
(tests/e2e/test_broker.py::test_hub_publishes_under_its_own_id_only), a revoked
hub's records are refused by the fleet (tests/host/test_fleet_ingest.py).

Heap: every hub runs the application frozen into its runtime, as the chip's
runtime image carries it (docs/decisions/0007), with six enrolled devices, WiFi,
4G and the uplink in the firmware's heap (decision 0004). A MemoryError on a
hub's console fails the test like any other failure.
"""

from __future__ import annotations

import base64
import time

import pytest
from hubctl import ca
from hubctl import home as homedir
from hubctl.demo import GATT_KINDS, VirtualFleet
from hubctl.fleet.ingest import InventoryRegistry
from hubctl.records import verify_record


def impostor_client(vf: VirtualFleet, hub_id: str):
    """A host MQTT client with a device certificate in hub_id's name and a key that is not the
    hub's (a stolen or mis-issued certificate): the broker lets it publish under that id."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from e2e.pki import key_pem
    from hubctl.fleet.mqtt import BlockingClient

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_id)])).sign(key, hashes.SHA256()))
    cert = ca.issue_device_cert(vf.home, csr.public_bytes(serialization.Encoding.DER), hub_id)
    certfile, keyfile = vf.home / "impostor.crt.pem", vf.home / "impostor.key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key_pem(key))
    return BlockingClient("127.0.0.1", vf.broker.port, hub_id, certfile=certfile, keyfile=keyfile,
                          cafile=ca.root_cert_path(vf.home), clean_session=False)


@pytest.fixture
def fleet(tmp_path, bundle):
    vf = VirtualFleet(tmp_path / "home")
    with vf:
        yield vf


def running(vf: VirtualFleet, bundle, n: int, *, apn: bool = True, **cfg):
    """n hubs provisioned (WiFi, APN), devices enrolled, application running and online."""
    hubs = vf.add_hubs(n, bundle, apn=apn)
    vf.provision(hubs)
    for h in hubs:
        vf.enrol(h)
        vf.configure(h, **cfg)
    for h in hubs:
        vf.wait_online(h, 60)
    return hubs


def measure_all(vf, h, **overrides):
    for kind in GATT_KINDS:
        vf.measure(h, kind, **overrides.get(kind, {}))


def observations(vf, h):
    return sum(r.kind == "observations" for r in vf.stored(h))


def assert_exactly_once(vf, h, **expect):
    r = vf.check_exactly_once(h, expect)
    assert not r["problems"], r


def test_readings_and_alarms_arrive_verified_exactly_once_pruned_only_on_the_fleets_ack(fleet, bundle):
    a, b = running(fleet, bundle, 2)
    for h in (a, b):
        measure_all(fleet, h)
        fleet.wait_alarm(h, fleet.door(h))
        fleet.wait_alarm(h, fleet.press(h))
    for h in (a, b):
        fleet.wait_records(h, lambda rows: sum(r.kind == "observations" for r in rows) == 4, 60, "4 readings")
        assert_exactly_once(fleet, h, observations=4, event=2)

    # The fleet service is down: the broker takes (and PUBACKs) the alarm, the hub keeps it.
    fleet.stop_service()
    fleet.wired_door(a, 1)
    time.sleep(5)  # signed, journaled, published and PUBACKed by the broker; no application ack
    held = fleet.journal(a)["records"]  # (reading it restarts the application; it resends)
    # Besides the alarm the hub may hold a gap record: each console session
    # (check_exactly_once reads the journal) restarts the application, and the
    # seqs the last boot reserved but did not use are declared at the next boot.
    cert = InventoryRegistry(homedir.db_path(fleet.home), ttl=0).certificate(a.hub_id)
    payloads = [verify_record(base64.b64decode(rec), cert).fields for _seq, rec in held]
    alarms = [f for f in payloads if "gap" not in f]
    assert len(alarms) == 1, f"the hub pruned a record the fleet never acknowledged: {held}"
    fleet.start_service()
    fleet.wait_records(a, lambda rows: sum(r.kind == "event" for r in rows) == 3, 60, "the queued alarm")
    assert_exactly_once(fleet, a, observations=4, event=3)


def test_broker_down_then_back_loses_nothing_and_duplicates_nothing(fleet, bundle):
    (h,) = running(fleet, bundle, 1)
    fleet.wait_alarm(h, fleet.press(h))
    fleet.broker.stop()
    measure_all(fleet, h)
    fleet.door(h)
    fleet.wired_door(h, 1)
    time.sleep(10)  # everything signed and journaled while the broker is away
    fleet.broker.start()
    fleet.wait_records(h, lambda rows: len([r for r in rows if r.kind in ("event", "observations")]) == 7, 120,
                       "the backlog after the broker came back")
    assert_exactly_once(fleet, h, observations=4, event=3)


def test_wifi_lost_mid_publish_fails_over_to_4g_without_loss(fleet, bundle):
    (h,) = running(fleet, bundle, 1)
    fleet.door(h)
    fleet.press(h)
    with h.world() as w:
        w.net_ap(h.ssid, up=False)  # while those are being published
    measure_all(fleet, h)
    fleet.wait_online(h, 60, link="cellular")
    fleet.wait_records(h, lambda rows: len(rows) >= 6, 90, "everything over 4G")
    with h.world() as w:
        st = w.net()
    assert st["route"] == "cellular" and st["links"]["cellular"]["bytes_up"] > 0, st
    assert_exactly_once(fleet, h, observations=4, event=2)


def test_both_links_down_then_restored_drains_the_journal_alarms_first(fleet, bundle):
    (h,) = running(fleet, bundle, 1)
    with h.world() as w:
        w.net_modem(reg="none")  # no 4G to fall back to
        w.net_ap(h.ssid, up=False)
    time.sleep(1)
    measure_all(fleet, h)  # the backlog (each GATT session takes a couple of seconds) ...
    time.sleep(12)
    fleet.door(h)  # ... and alarms after it
    fleet.press(h)
    fleet.wired_door(h, 1)
    time.sleep(3)
    assert not fleet.stored(h), "records arrived with both links down"
    with h.world() as w:
        w.net_ap(h.ssid, up=True)
        w.net_modem(reg="registered")
    rows = fleet.wait_records(h, lambda rows: len(rows) >= 7, 120, "the journal drained")
    assert_exactly_once(fleet, h, observations=4, event=3)
    alarms = [r.received_at for r in rows if r.kind == "event"]
    readings = [r.received_at for r in rows if r.kind == "observations"]
    # alarms were signed last but arrive first
    assert max(alarms) <= min(readings), sorted((r.received_at, r.seq, r.kind) for r in rows)
    assert min(r.seq for r in rows if r.kind == "event") > max(r.seq for r in rows if r.kind == "observations")


def test_revoked_hub_cannot_connect(fleet, bundle):
    """The hub's own uplink code (hemhub.service.uplink_selftest_json: mutual
    TLS, CONNECT) from its console, before and after revocation."""
    from hubctl.transport import HubConsole

    def selftest(h):
        with HubConsole(h.console) as con:
            return con.call("service", "uplink_selftest_json")

    a, b = fleet.add_hubs(2, bundle, apn=False)
    fleet.provision([a, b])  # includes the broker self-test: both connect
    crl = ca.revoke_hub(fleet.home, b.hub_id)["crl"]
    fleet.broker.update_crl(crl)  # SIGHUP: new connections are checked against it
    refused = selftest(b)
    still = selftest(a)
    assert still["ok"] is True, still  # the broker is up and the other hub still gets in
    assert refused["ok"] is False and not refused["error"].startswith("unreachable"), refused


def test_revoked_hub_records_are_not_stored(fleet, bundle):
    a, b = running(fleet, bundle, 2)
    fleet.wait_alarm(b, fleet.press(b))
    crl = ca.revoke_hub(fleet.home, b.hub_id)["crl"]
    fleet.broker.update_crl(crl)
    with b.world() as w:
        w.reset()  # the hub reconnects: refused from now on
    time.sleep(3)
    fleet.press(b)
    fleet.wait_alarm(a, fleet.press(a))
    time.sleep(5)
    assert [r.kind for r in fleet.stored(b)] == ["event"]  # only the one from before the revocation


def test_forged_and_replayed_records_are_quarantined_not_acked(fleet, bundle):
    (h,) = running(fleet, bundle, 1)
    seq, _ = fleet.wait_alarm(h, fleet.press(h))
    genuine = next(r for r in fleet.stored(h) if r.seq == seq)
    # Someone holding a certificate in the hub's name, but not the hub's key.
    impostor = impostor_client(fleet, h.hub_id)
    forged = bytearray(genuine.record)
    forged[-70] ^= 1  # one bit of the signed payload: the signature no longer matches
    with impostor as c:
        c.publish(f"hemhub/{h.hub_id}/alarm", bytes(forged))
        c.publish(f"hemhub/{h.hub_id}/alarm", genuine.record)  # an exact replay: a resend, stored once
    deadline = time.monotonic() + 20
    while not fleet.store.quarantined(h.hub_id):
        assert time.monotonic() < deadline, "the forgery was not quarantined"
        time.sleep(0.1)
    (q,) = fleet.store.quarantined(h.hub_id)
    assert q.reason == "bad-signature", q
    assert [r.seq for r in fleet.stored(h)] == [seq]
    # the hub goes on, and its next alarm is stored and acked as usual
    nxt, _ = fleet.wait_alarm(h, fleet.press(h), timeout=60)
    assert nxt > seq
