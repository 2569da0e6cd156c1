"""The hub's CSR (hemhub.crypto.csr) and certificate check (hemhub.crypto.x509).

The CSR must load and verify with `cryptography`; a throwaway CA issues a
certificate for it; the hub-side reader must then find the right key and CN,
and refuse certificates for another hub or another key. The same runs once
inside the real MicroPython interpreter: the CSR is made there, the
certificate is read there.
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hemhub.codec import CodecError
from hemhub.crypto import csr, p256
from hemhub.crypto import x509 as hub_x509
from hubctl.vhub.interp import micropython_command

ROOT = Path(__file__).resolve().parents[2]
HUB = "HH1-2026-00042"


def point(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def issue(req: x509.CertificateSigningRequest, *, subject: x509.Name | None = None, key=None) -> bytes:
    """What the provisioning CA does: a DER certificate for the CSR."""
    ca = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject or req.subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hemhub provisioning CA")]))
        .public_key(key or req.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def signer():
    return p256.Signer(p256.generate_private_key())


def test_csr_loads_and_verifies(signer):
    req = x509.load_der_x509_csr(csr.make_csr(signer, HUB, org="hemhub", unit="hubs"))
    assert req.is_signature_valid
    assert req.signature_hash_algorithm.name == "sha256"
    assert req.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"
    assert req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HUB
    assert req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "hemhub"
    assert req.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "hubs"
    assert isinstance(req.public_key().curve, ec.SECP256R1)
    assert point(req.public_key()) == signer.public_key
    assert len(req.attributes) == 0


def test_csr_with_cn_only(signer):
    req = x509.load_der_x509_csr(csr.make_csr(signer, HUB))
    assert req.is_signature_valid and req.subject.rfc4514_string() == "CN=" + HUB
    with pytest.raises(ValueError):
        csr.make_csr(signer, "")


def test_ca_certificate_matches_hub(signer):
    req = x509.load_der_x509_csr(csr.make_csr(signer, HUB, org="hemhub"))
    der = issue(req)
    info = hub_x509.check_certificate(der, signer.public_key, HUB)
    assert info.subject_cn == HUB and info.public_key == signer.public_key


def test_certificate_for_another_hub_or_key_is_refused(signer):
    req = x509.load_der_x509_csr(csr.make_csr(signer, HUB))
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HH1-2026-00043")])
    with pytest.raises(CodecError, match="not this hub"):
        hub_x509.check_certificate(issue(req, subject=other), signer.public_key, HUB)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(CodecError, match="not this hub's key"):
        hub_x509.check_certificate(issue(req, key=stranger), signer.public_key, HUB)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(CodecError, match="not an EC P-256"):
        hub_x509.check_certificate(issue(req, key=rsa_key), signer.public_key, HUB)
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hemhub")])
    with pytest.raises(CodecError, match="no CN"):
        hub_x509.certificate_info(issue(req, subject=no_cn))


def test_damaged_certificate_gives_codec_error(signer):
    der = issue(x509.load_der_x509_csr(csr.make_csr(signer, HUB)))
    for n in range(len(der)):
        with pytest.raises(CodecError):
            hub_x509.certificate_info(der[:n])
    with pytest.raises(CodecError, match="trailing"):
        hub_x509.certificate_info(der + b"\x00")
    # every single-byte corruption either still parses (a value byte) or raises CodecError
    for i in range(len(der)):
        bad = bytearray(der)
        bad[i] ^= 0xFF
        try:
            hub_x509.certificate_info(bytes(bad))
        except CodecError:
            pass


def test_der_writer():
    assert csr.integer(0) == bytes.fromhex("020100")
    assert csr.integer(127) == bytes.fromhex("02017f")
    assert csr.integer(128) == bytes.fromhex("02020080")
    assert csr.integer(256) == bytes.fromhex("02020100")
    assert csr.tlv(b"\x04", b"\x00" * 127)[:2] == bytes.fromhex("047f")
    assert csr.tlv(b"\x04", b"\x00" * 128)[:3] == bytes.fromhex("048180")
    assert csr.tlv(b"\x04", b"\x00" * 256)[:4] == bytes.fromhex("04820100")
    sig = (1).to_bytes(32, "big") + (p256.N - 1).to_bytes(32, "big")
    assert csr.ecdsa_signature(sig) == bytes.fromhex("3026020101022100") + (p256.N - 1).to_bytes(32, "big")
    with pytest.raises(CodecError, match="not minimal"):
        hub_x509.read_tlv(bytes.fromhex("30810100"), 0, 4)
    with pytest.raises(CodecError, match="indefinite"):
        hub_x509.read_tlv(bytes.fromhex("308000"), 0, 3)


_MP_MAKE_CSR = """
import sys
sys.path.insert(0, "firmware")
from hemhub.crypto import csr, p256
s = p256.Signer(p256.generate_private_key())
print(csr.make_csr(s, sys.argv[1], "hemhub").hex())
print(s.public_key.hex())
"""

_MP_CHECK_CERT = """
import sys
sys.path.insert(0, "firmware")
from hemhub.codec import CodecError
from hemhub.crypto import x509
with open(sys.argv[1], "rb") as f:
    der = f.read()
info = x509.check_certificate(der, bytes.fromhex(sys.argv[2]), sys.argv[3])
print("OK", info.subject_cn)
try:
    x509.check_certificate(der, bytes.fromhex(sys.argv[2]), "someone-else")
except CodecError as e:
    print("REFUSED", e)
"""


def run_micropython(script: str, *args: str) -> list[str]:
    # under -c, MicroPython's sys.argv is ["-c", *args]
    proc = subprocess.run([*micropython_command(), "-c", script, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split("\n")


def test_under_micropython(tmp_path):
    csr_hex, pub_hex = run_micropython(_MP_MAKE_CSR, HUB)[:2]
    req = x509.load_der_x509_csr(bytes.fromhex(csr_hex))
    assert req.is_signature_valid and point(req.public_key()).hex() == pub_hex
    assert req.subject.rfc4514_string() == "CN=%s,O=hemhub" % HUB
    der = issue(req)
    # a file, not an argument: this MicroPython build dies on very long argv strings
    (tmp_path / "cert.der").write_bytes(der)
    out = run_micropython(_MP_CHECK_CERT, str(tmp_path / "cert.der"), pub_hex, HUB)
    assert out[0] == "OK " + HUB
    assert out[1].startswith("REFUSED certificate is for")
