"""The provisioning CA, inventory, audit log and labels (issue 6), host side."""

from __future__ import annotations

import sqlite3
import stat
import struct
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hubctl import audit, ca, label
from hubctl.cli import main
from hubctl.inventory import Inventory


def csr_for(cn: str):
    k = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(k, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def eku(cert):
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_makes_three_cas_with_private_keys(tmp_path):
    info = ca.init_ca(tmp_path, b"pass phrase")
    assert set(info["cas"]) == {"root", "device-ca", "service-ca"}
    for which in ("root", "device-ca", "service-ca"):
        kp = ca.key_path(tmp_path, which)
        assert stat.S_IMODE(kp.stat().st_mode) == 0o600
        assert b"ENCRYPTED" in kp.read_bytes()
        assert info["cas"][which]["key"] == "passphrase"
    root = ca.load_cert(tmp_path, ca.ROOT)
    for which in (ca.DEVICE, ca.SERVICE):
        c = ca.load_cert(tmp_path, which)
        c.verify_directly_issued_by(root)
        assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    with pytest.raises(ca.HubStateError, match="already exists"):
        ca.init_ca(tmp_path)


def test_passphrase_errors_name_the_fix(tmp_path):
    ca.init_ca(tmp_path, b"right")
    with pytest.raises(ca.CAError, match="protected by a passphrase.*--passphrase-file"):
        ca.issue_device_cert(tmp_path, csr_for("HH1-1"), "HH1-1")
    with pytest.raises(ca.CAError, match="Wrong passphrase for the device-ca key"):
        ca.issue_device_cert(tmp_path, csr_for("HH1-1"), "HH1-1", passphrase=b"wrong")
    ca.key_path(tmp_path, ca.DEVICE).unlink()
    with pytest.raises(ca.CAError, match="device-ca key .* is missing"):
        ca.issue_device_cert(tmp_path, csr_for("HH1-1"), "HH1-1", passphrase=b"right")
    with pytest.raises(ca.HubNotFoundError, match="No provisioning CA.*hubctl ca init"):
        ca.load_cert(tmp_path / "none", ca.ROOT)


def test_device_server_and_service_certificates(tmp_path):
    ca.init_ca(tmp_path)
    dev = ca.issue_device_cert(tmp_path, csr_for("HH1-2026-000001"), "HH1-2026-000001")
    dev.verify_directly_issued_by(ca.load_cert(tmp_path, ca.DEVICE))
    assert dev.subject.rfc4514_string() == "CN=HH1-2026-000001"
    assert eku(dev) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(ca.HubStateError, match="names 'HH1-OTHER', not its hub id"):
        ca.issue_device_cert(tmp_path, csr_for("HH1-OTHER"), "HH1-2026-000001")
    srv = ca.issue_server_cert(tmp_path, tmp_path / "broker")
    srv.cert.verify_directly_issued_by(ca.load_cert(tmp_path, ca.ROOT))
    san = srv.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert eku(srv.cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert stat.S_IMODE(srv.key_path.stat().st_mode) == 0o600
    svc = ca.issue_service_client_cert(tmp_path, "fleet", tmp_path / "broker")
    svc.cert.verify_directly_issued_by(ca.load_cert(tmp_path, ca.SERVICE))
    assert svc.cert.subject.rfc4514_string() == "CN=service:fleet"
    # The broker's client cafile: both issuing CAs and the root, nothing else.
    bundle = x509.load_pem_x509_certificates(ca.client_ca_path(tmp_path).read_bytes())
    assert [c.subject for c in bundle] == [ca.load_cert(tmp_path, w).subject
                                           for w in (ca.DEVICE, ca.SERVICE, ca.ROOT)]


def test_inventory_lifecycle_and_crl(tmp_path):
    ca.init_ca(tmp_path)
    inv = Inventory(tmp_path / "fleet.db")
    facts = {"serial": "HH1-1", "hw_rev": "r1", "firmware": "0.1.0", "site": "A", "technician": "t"}

    def issue():
        c = ca.issue_device_cert(tmp_path, csr_for("HH1-1"), "HH1-1")
        der = c.public_bytes(serialization.Encoding.DER)
        inv.record_issued("HH1-1", facts, c.serial_number, ca.fingerprint(c), der)
        return c

    first = issue()
    assert inv.certificate("HH1-1") is None  # pending: not admitted
    second = issue()  # a re-run with a new key supersedes the pending one
    inv.complete("HH1-1", facts, ca.fingerprint(second), [{"n": 1, "name": "x", "result": "ok"}])
    assert inv.certificate("HH1-1") == second.public_bytes(serialization.Encoding.DER)
    assert [c["status"] for c in inv.certificates_of("HH1-1")] == ["superseded", "active"]
    ca.refresh_crl(tmp_path)
    crl = x509.load_pem_x509_crl(ca.crl_path(tmp_path).read_bytes())
    assert [r.serial_number for r in crl] == [first.serial_number]
    r = ca.revoke_hub(tmp_path, "HH1-1")
    assert r["revoked_serials"] == [format(second.serial_number, "x")]
    assert inv.is_revoked("HH1-1") and inv.certificate("HH1-1") is None
    pems = ca.crl_path(tmp_path).read_bytes().split(b"-----END X509 CRL-----")
    crl = x509.load_pem_x509_crl(pems[0] + b"-----END X509 CRL-----\n")
    assert {r.serial_number for r in crl} == {first.serial_number, second.serial_number}
    assert crl.is_signature_valid(ca.load_cert(tmp_path, ca.DEVICE).public_key())
    with pytest.raises(ca.HubNotFoundError, match="not in the inventory"):
        ca.revoke_hub(tmp_path, "HH1-NOPE")


def test_audit_log_is_append_only(tmp_path, capsys):
    db = tmp_path / "fleet.db"
    audit.record(db, "flash", "HH1-1", "ok", who="anna", detail={"runtime_sha256": "ab"})
    audit.record(db, "provision", "HH1-1", "failed", who="bo")
    assert [(e["action"], e["who"], e["result"]) for e in audit.entries(db)] == \
        [("flash", "anna", "ok"), ("provision", "bo", "failed")]
    con = sqlite3.connect(db, isolation_level=None)
    for sql in ("DELETE FROM audit", "UPDATE audit SET result='ok'"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()
    assert main(["audit", "--home", str(tmp_path), "--unit", "HH1-1", "--action", "flash"]) == 0
    out = capsys.readouterr().out
    assert "anna" in out and "flash" in out and "bo" not in out


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return w, h, zlib.decompress(idat)


def test_label_svg_and_png(tmp_path):
    facts = {"hub_id": "HH1-2026-ABC123", "serial": "HH1-2026-ABC123", "hw_rev": "r1",
             "firmware": "0.1.0", "cert_sha256": "0123456789abcdef" * 4}
    svg, png = label.write_label(tmp_path, facts)
    text = svg.read_text()
    assert "HH1-2026-ABC123" in text and "0123456789abcdef" in text and "<path" in text
    w, h, raw = _png_pixels(png.read_bytes())
    assert len(raw) == h * (w + 1)  # one filter byte per row, 8-bit grey
    assert set(raw[1:w + 1]) == {255}  # white margin
    assert 0 in raw  # the QR code and the text are drawn
    assert label.qr_payload("HH1-1", "HH1-1", "abcdef0123456789ff") == "HEMHUB:HH1-1:HH1-1:ABCDEF0123456789"



def _start_runs_at_once(inv: Inventory, n: int) -> tuple[list[int], list[str]]:
    import threading

    barrier = threading.Barrier(n)
    ids: list[int] = []
    errors: list[str] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            ids.append(inv.start_run(f"/dev/ttyUSB{i}", "tech", "bench"))
        except Exception as e:  # collected: the assertion names it
            errors.append(repr(e))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, errors


def test_a_fresh_inventory_opened_by_many_threads_at_once(tmp_path):
    """A batch's first units all open a new inventory at the same moment (WAL
    switch, schema): none may fail with "database is locked"."""
    for round_ in range(10):
        ids, errors = _start_runs_at_once(Inventory(tmp_path / f"round{round_}" / "inventory.db"), 8)
        assert errors == [], errors
        assert sorted(ids) == list(range(1, 9))
