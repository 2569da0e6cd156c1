"""hubctl verify: records signed by the hub's own code (run here under CPython)
checked by the independent host verifier, through the command line."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hemhub import record
from hemhub.crypto import p256

HUBCTL = [str(Path(sys.executable).parent / "hubctl")]
HUB = "HH1-2026-00042"


def _hub_cert(d: int, hub_id: str = HUB) -> x509.Certificate:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256.public_key(d))
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_id)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(pub).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))


def _records(d: int, seqs, value=72.35) -> list[bytes]:
    signer = p256.Signer(d)
    out = []
    for seq in seqs:
        out.append(record.sign_record({
            "v": 1, "hub": HUB, "seq": seq, "kind": "observations", "hub_time": 1795392000 + seq,
            "peripheral": {"addr": "a4c138000001", "kind": "scale"},
            "observations": [{"mdc": 188736, "value": value, "unit": "kg"}]}, signer))
    return out


def _verify(tmp_path, cert, recs, *extra):
    c = tmp_path / "hub.pem"
    c.write_bytes(cert.public_bytes(Encoding.PEM))
    f = tmp_path / "records.cbor"
    f.write_bytes(b"".join(recs))
    return subprocess.run(HUBCTL + ["verify", "--cert", str(c), str(f), *extra],
                          capture_output=True, text=True, timeout=60)


def test_a_good_stream_verifies(tmp_path):
    d = p256.generate_private_key()
    r = _verify(tmp_path, _hub_cert(d), _records(d, range(1, 6)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 of 5 records verified; stream OK" in r.stdout


def test_forgery_gap_and_reuse_are_reported(tmp_path):
    d = p256.generate_private_key()
    recs = _records(d, [1, 2, 4])
    other = p256.generate_private_key()
    recs += _records(other, [5])  # signed by another hub's key
    flipped = bytearray(recs[1])
    flipped[-10] ^= 1
    recs[1] = bytes(flipped)  # a flipped bit in a signature
    recs += _records(d, [4], value=80)  # seq 4 again for another reading: reused sequence number
    r = _verify(tmp_path, _hub_cert(d), recs)
    assert r.returncode == 1
    out = r.stdout
    assert "record 1: rejected (bad-signature)" in out  # the flipped bit
    assert "record 3: rejected" in out  # the other hub's key
    assert "record 4 (seq 4): reused-seq" in out
    assert "gap: seq 2..3 missing" in out  # 3 never sent, 2 not verifiable
    assert "1 of 5 records verified; stream has problems" in out  # both copies of seq 4 are suspect


def test_bad_inputs_name_the_file(tmp_path):
    d = p256.generate_private_key()
    r = subprocess.run(HUBCTL + ["verify", "--cert", str(tmp_path / "none.pem"), str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no certificate file" in r.stderr
    (tmp_path / "junk.pem").write_text("not a certificate")
    (tmp_path / "x").write_bytes(b"".join(_records(d, [1])))
    r = subprocess.run(HUBCTL + ["verify", "--cert", str(tmp_path / "junk.pem"), str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not an X.509 certificate" in r.stderr and "Traceback" not in r.stderr
