"""hubctl provision end to end on virtual hubs (issue 6): the seven steps, the
inventory, labels, the audit log, batches, and every bad input of the issue."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from hubctl import ca
from hubctl import provision as pv
from hubctl.build import build
from hubctl.inventory import Inventory
from hubctl.transport import HubConsole
from vhubtest import run_hub

HUBCTL = [str(Path(sys.executable).parent / "hubctl")]
BROKER = "127.0.0.1:8883"
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    ca.init_ca(h)
    return h


def settings(site="Home 1"):
    return pv.Settings(site=site, broker=BROKER)


# No broker in these tests: step 5 (on-hub broker self-test) is skipped on
# request, except in test_broker_unreachable.
NO_SELFTEST = {"selftest": False}


def hub_state(port) -> dict:
    with HubConsole(port) as con:
        return con.call("service", "provision_state_json")


def hub_file(port, path) -> bytes | None:
    with HubConsole(port) as con:
        out = con.exec(f"import binascii\ntry:\n with open({path!r},'rb') as f: print(binascii.hexlify(f.read()).decode())\n"
                       "except OSError:\n print('-')\n").strip()
    return None if out == "-" else bytes.fromhex(out)


def assert_provisioned(home: Path, port, hub_id: str) -> x509.Certificate:
    """The inventory admits the hub with exactly the certificate the hub holds,
    issued by the device CA for its hub id; every other certificate is on the CRL."""
    inv = Inventory(home / "fleet.db")
    der = inv.certificate(hub_id)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == f"CN={hub_id}"
    device_ca = ca.load_cert(home, ca.DEVICE)
    cert.verify_directly_issued_by(device_ca)
    st = hub_state(port)
    assert st["identity"] == "certified" and st["cert_sha256"] == ca.fingerprint(cert)
    assert st["config_cert_sha256"] == st["cert_sha256"] and st["trust_anchor"]
    assert hub_file(port, "/data/identity/root.der") == ca.load_cert(home, ca.ROOT).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
    crl = x509.load_pem_x509_crl((home / "ca" / "crl.pem").read_bytes().split(b"-----END X509 CRL-----")[0]
                                 + b"-----END X509 CRL-----\n")
    assert crl.is_signature_valid(device_ca.public_key())
    revoked = {r.serial_number for r in crl}
    for c in inv.certificates_of(hub_id):
        if c["status"] == "active":
            assert int(c["serial"], 16) == cert.serial_number and cert.serial_number not in revoked
        else:
            assert int(c["serial"], 16) in revoked, c
    return cert


def test_provision_one_hub_with_the_cli(vhub, home, tmp_path):
    r = subprocess.run(HUBCTL + ["provision", "--port", str(vhub.path), "--site", "Storgatan 1",
                                 "--broker", BROKER, "--home", str(home), "--technician", "anna", "--json", "--no-selftest"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)["results"][0]
    hub_id = vhub.hub.serial
    assert out["ok"] and out["hub_id"] == hub_id
    assert [s["result"] for s in out["steps"]][:4] == ["ok"] * 4
    assert out["steps"][4]["result"] == "skipped" and "--no-selftest" in out["steps"][4]["detail"]
    assert [s["result"] for s in out["steps"]][5:] == ["ok", "ok"]
    cert = assert_provisioned(home, vhub.port, hub_id)
    # Inventory: facts, technician, site, each step.
    h = Inventory(home / "fleet.db").hub(hub_id)
    assert h["status"] == "provisioned" and h["site"] == "Storgatan 1" and h["technician"] == "anna"
    assert h["hw_rev"] == "r1" and h["firmware"] == out["steps"][0]["detail"].split()[-1]
    assert h["cert_sha256"] == ca.fingerprint(cert) and len(h["steps"]) == 7
    # Label: SVG names the hub, PNG is a PNG.
    svg = (home / "labels" / f"{hub_id}.svg").read_text()
    assert hub_id in svg and ca.fingerprint(cert)[:16] in svg
    assert (home / "labels" / f"{hub_id}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The hub's settings, and the audit log.
    with HubConsole(vhub.port) as con:
        cfg = json.loads(con.exec("print(open('/data/config.json').read())"))
    assert cfg["site"] == "Storgatan 1" and cfg["broker_host"] == "127.0.0.1" and cfg["broker_port"] == 8883
    assert "wifi" not in cfg  # no WiFi asked for: none stored
    r = subprocess.run(HUBCTL + ["audit", "--home", str(home), "--json"], capture_output=True, text=True)
    entries = json.loads(r.stdout)
    assert [(e["action"], e["unit"], e["result"], e["who"]) for e in entries] == \
        [("provision", hub_id, "ok", "anna")]
    r = subprocess.run(HUBCTL + ["inventory", "show", hub_id, "--home", str(home)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "provisioned" in r.stdout and "Storgatan 1" in r.stdout


def test_already_provisioned_needs_reprovision(vhub, home):
    first = pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST)
    assert first.ok, first.error
    again = pv.provision(vhub.port, settings("Home 2"), home=home, **NO_SELFTEST)
    assert not again.ok and again.exit_code == 4
    assert "step 1 (check firmware) failed" in again.error and "already provisioned" in again.error
    assert "--reprovision" in again.error
    assert hub_state(vhub.port)["cert_sha256"] == first.cert_sha256  # untouched
    re = pv.provision(vhub.port, settings("Home 2"), home=home, **NO_SELFTEST, reprovision=True)
    assert re.ok, re.error
    assert re.cert_sha256 != first.cert_sha256
    assert_provisioned(home, vhub.port, vhub.hub.serial)
    inv = Inventory(home / "fleet.db")
    assert [c["status"] for c in inv.certificates_of(vhub.hub.serial)] == ["superseded", "active"]
    assert inv.hub(vhub.hub.serial)["site"] == "Home 2"


def test_wrong_port_or_no_hub(tmp_path, home):
    r = pv.provision("/dev/ttyUSB-none", settings(), home=home, **NO_SELFTEST)
    assert not r.ok and r.exit_code == 3 and "step 1 (check firmware) failed" in r.error
    assert "There is no serial port /dev/ttyUSB-none" in r.error
    (tmp_path / "notahub").write_text("x")
    r = pv.provision(str(tmp_path / "notahub"), settings(), home=home, **NO_SELFTEST)
    assert not r.ok and "not a serial port" in r.error
    r = subprocess.run(HUBCTL + ["provision", "--port", "/dev/ttyUSB-none", "--site", "x", "--broker", BROKER,
                                 "--home", str(home)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "step 1 (check firmware) failed: There is no serial port" in r.stdout


def test_wrong_firmware_version(tmp_path, home):
    src = tmp_path / "fw"
    shutil.copytree(FIRMWARE, src)
    v = src / "hemhub" / "version.py"
    v.write_text(v.read_text().replace('VERSION = "', 'VERSION = "0.0.0-old+'))
    old = build(tmp_path / "old", src)
    with run_hub(tmp_path / "hub", old) as rh:
        r = pv.provision(rh.port, settings(), home=home, **NO_SELFTEST)
        assert not r.ok and "step 1 (check firmware) failed" in r.error
        assert f"runs firmware {old.version}" in r.error and "hubctl deploy" in r.error
        assert hub_state(rh.port)["identity"] == "none"


def test_ca_key_missing_or_wrong_passphrase(vhub, tmp_path):
    h = tmp_path / "locked"
    ca.init_ca(h, b"correct horse")
    r = pv.provision(vhub.port, settings(), home=h, **NO_SELFTEST)
    assert not r.ok and "step 3 (issue certificate) failed" in r.error and "passphrase" in r.error
    r = pv.provision(vhub.port, settings(), home=h, **NO_SELFTEST, passphrase=b"wrong")
    assert not r.ok and "Wrong passphrase for the device-ca key" in r.error
    (h / "ca" / "device-ca.key.pem").unlink()
    r = pv.provision(vhub.port, settings(), home=h, **NO_SELFTEST, passphrase=b"correct horse")
    assert not r.ok and "device-ca key" in r.error and "is missing" in r.error
    r = pv.provision(vhub.port, settings(), home=tmp_path / "no-ca", **NO_SELFTEST)
    assert not r.ok and "No provisioning CA" in r.error and "hubctl ca init" in r.error
    # Nothing changed on the hub while the CA was unusable.
    assert hub_state(vhub.port)["identity"] == "none"
    pf = tmp_path / "pass"
    pf.write_text("wrong\n")
    r = subprocess.run(HUBCTL + ["provision", "--port", vhub.port, "--site", "x", "--broker", BROKER,
                                 "--home", str(h), "--passphrase-file", str(pf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "step 3 (issue certificate) failed" in r.stdout


def test_power_cut_mid_provision_then_rerun(vhub, home, sim_only):
    """Power cut when step 4 starts (certificate issued, not installed): the run
    fails naming the step, the hub is not admitted, and re-running starts clean
    with a new key; the first certificate goes to the CRL."""
    cut = []

    def progress(port, step, status, detail):
        if step == 4 and status == "running" and not cut:
            cut.append(step)
            with vhub.world() as w:
                w.power_cut(off_ms=100)

    r = pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST, progress=progress)
    assert cut and not r.ok and "step 4 " in r.error
    inv = Inventory(home / "fleet.db")
    assert inv.certificate(vhub.hub.serial) is None  # a half-provisioned hub is not admitted
    assert inv.hub(vhub.hub.serial)["status"] == "failed"
    vhub.wait_ready()
    r2 = pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST)
    assert r2.ok, r2.error
    assert not r2.resumed
    assert [c["status"] for c in inv.certificates_of(vhub.hub.serial)] == ["superseded", "active"]
    assert_provisioned(home, vhub.port, vhub.hub.serial)


def test_host_killed_after_install_then_rerun_resumes(vhub, home):
    """hubctl dies (Ctrl-C, laptop closed) after the hub holds its certificate
    but before the inventory records it: the certificate stays pending (not
    admitted), and re-running resumes with it instead of making a new key."""

    def progress(port, step, status, detail):
        if step == 6 and status == "running":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST, progress=progress)
    inv = Inventory(home / "fleet.db")
    assert inv.certificate(vhub.hub.serial) is None
    assert [c["status"] for c in inv.certificates_of(vhub.hub.serial)] == ["pending"]
    assert inv.runs()[-1]["result"] == "failed"
    r2 = pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST)
    assert r2.ok and r2.resumed, r2.error
    assert [s["result"] for s in r2.steps][1:3] == ["skipped", "skipped"]
    assert [c["status"] for c in inv.certificates_of(vhub.hub.serial)] == ["active"]
    assert_provisioned(home, vhub.port, vhub.hub.serial)


def test_broker_unreachable(vhub, home):
    """Step 5 fails naming the broker; the hub is not admitted; once the broker
    question is settled, re-running resumes with the installed certificate."""
    with HubConsole(vhub.port) as con:
        if "uplink_selftest_json" not in pv._service_functions(con):
            pytest.skip("this firmware has no broker self-test")
    r = pv.provision(vhub.port, pv.Settings(site="x", broker="127.0.0.1:1"), home=home)
    assert not r.ok and "step 5 (broker self-test) failed" in r.error
    assert "could not reach the broker 127.0.0.1:1" in r.error
    inv = Inventory(home / "fleet.db")
    assert inv.certificate(vhub.hub.serial) is None
    r2 = pv.provision(vhub.port, settings(), home=home, **NO_SELFTEST)
    assert r2.ok and r2.resumed, r2.error
    assert_provisioned(home, vhub.port, vhub.hub.serial)


def test_wifi_psk_is_never_stored_unverified_nor_shown(vhub, home, tmp_path):
    secret = "psk-" + base64.b16encode(__import__("os").urandom(6)).decode()
    pf = tmp_path / "psk"
    pf.write_text(secret + "\n")
    r = subprocess.run(HUBCTL + ["provision", "--port", vhub.port, "--site", "x", "--broker", BROKER,
                                 "--home", str(home), "--wifi-ssid", "no-such-network", "--wifi-psk-file",
                                 str(pf), "--json"], capture_output=True, text=True, timeout=120)
    # The hub cannot see that network (or this firmware cannot check WiFi): refused at step 1.
    assert r.returncode != 0, r.stdout
    res = json.loads(r.stdout)["results"][0]
    assert res["steps"][0]["result"] == "failed" and "WiFi" in res["error"]
    assert secret not in r.stdout + r.stderr
    for f in home.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    with HubConsole(vhub.port) as con:
        assert con.exec("import os\nprint('config.json' in os.listdir('/data'))").strip() == "False"
    assert hub_state(vhub.port)["identity"] == "none"
    r = subprocess.run(HUBCTL + ["provision", "--port", vhub.port, "--site", "x", "--broker", BROKER,
                                 "--home", str(home), "--wifi-ssid", "net"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "never taken from the command line" in r.stderr


def test_batch_of_four_in_parallel(tmp_path, bundle, home):
    with contextlib.ExitStack() as stack:
        hubs = [stack.enter_context(run_hub(tmp_path / f"hub{i}", bundle)) for i in range(4)]
        ports = [str(h.path) for h in hubs] + ["/dev/ttyUSB-none"]
        r = subprocess.run(HUBCTL + ["provision", "--ports", ",".join(ports), "--site", "bench",
                                     "--broker", BROKER, "--home", str(home), "--json", "--no-selftest"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr  # one unit failed, the others did not stop
        assert r.stdout, r.stderr
        out = json.loads(r.stdout)
        assert out["ok"] == 4 and out["failed"] == 1
        by_port = {x["port"]: x for x in out["results"]}
        assert not by_port["/dev/ttyUSB-none"]["ok"]
        fps = set()
        for h in hubs:
            res = by_port[str(h.path)]
            assert res["ok"] and res["hub_id"] == h.hub.serial, res
            fps.add(assert_provisioned(home, h.port, h.hub.serial).fingerprint(
                __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()))
        assert len(fps) == 4
    inv = Inventory(home / "fleet.db")
    assert sorted(h["hub_id"] for h in inv.hubs()) == sorted(h.hub.serial for h in hubs)
    assert len(inv.runs()) == 5


def test_an_unexpected_error_in_one_unit_of_a_batch_is_that_units_result(monkeypatch):
    """A failure provision() does not turn into a Result itself (a bug, a full disk)
    fails only that unit: the batch still returns one Result per port."""
    def fake(port, settings, **kw):
        if port == "bad":
            raise OSError(28, "No space left on device")
        return pv.Result(port, hub_id=f"hub-{port}", ok=True)

    monkeypatch.setattr(pv, "provision", fake)
    results = pv.provision_many(["a", "bad", "b"], pv.Settings(site="bench", broker="127.0.0.1:8883"))
    assert [r.port for r in results] == ["a", "bad", "b"]
    assert [r.ok for r in results] == [True, False, True]
    assert "No space left on device" in results[1].error and results[1].exit_code == 1
