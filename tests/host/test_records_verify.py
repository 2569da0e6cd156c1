"""Signed records on the host: the shared vectors (protocol/vectors/cbor.json,
cose.json, records.json) checked by the independent verifier (hubctl.records:
cbor2 + cryptography), and every class of bad input rejected with its reason.

The firmware codecs also run here under CPython against the same CBOR vectors,
so both interpreters agree on every byte.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from hemhub import record, record_verify
from hemhub.codec import CodecError, cbor
from hemhub.crypto import p256
from hubctl import records as R

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
CBOR = json.loads((VECTORS / "cbor.json").read_text())
COSE = json.loads((VECTORS / "cose.json").read_text())
RECORDS = json.loads((VECTORS / "records.json").read_text())
BY_NAME = {v["name"]: bytes.fromhex(v["cose"]) for v in RECORDS["records"]}
TAMPERED = {v["name"]: bytes.fromhex(v["cose"]) for v in RECORDS["tampered"]}
N = p256.N


def make_cert(public_point: bytes, cn: str, *, extra_cn: str | None = None) -> x509.Certificate:
    """A throwaway CA's certificate for a hub key (what the provisioning CA issues)."""
    ca = ec.generate_private_key(ec.SECP256R1())
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_point)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, extra_cn))
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hemhub test CA")]))
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca, hashes.SHA256())
    )


CERTS = {name: make_cert(bytes.fromhex(k["public_key"]), k["hub_id"]) for name, k in RECORDS["keys"].items()}


def cbor_value(v):
    """cbor.json value_notation -> Python value (firmware Tag for tags)."""
    if isinstance(v, dict):
        if "bytes" in v:
            return bytes.fromhex(v["bytes"])
        if "tag" in v:
            return cbor.Tag(v["tag"], cbor_value(v["value"]))
        if "map" in v:
            return {cbor_value(k): cbor_value(x) for k, x in v["map"]}
        return float(v["float"])
    if isinstance(v, list):
        return [cbor_value(x) for x in v]
    return v


def same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or (a == b and repr(a) == repr(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, cbor.Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


# ---- CBOR vectors: firmware codec under CPython, cross-checked with cbor2 ----


@pytest.mark.parametrize("v", CBOR["deterministic"], ids=lambda v: v["name"])
def test_cbor_deterministic(v):
    data = bytes.fromhex(v["hex"])
    value = cbor_value(v["value"])
    assert cbor.encode(value) == data
    assert same(cbor.decode(data), value)
    # cbor2 reads the same bytes and its canonical mode writes them back, except
    # where it turns a tag into a Python type (dates) or orders mixed map keys
    # length-first (RFC 7049) instead of bytewise (RFC 8949)
    theirs = cbor2.loads(data)
    if v["name"] not in CBOR2_REWRITES:
        assert cbor2.dumps(theirs, canonical=True) == data


CBOR2_REWRITES = {"tag 0 date/time", "tag 1 epoch int", "tag 1 epoch float",
                  "keys sorted bytewise, not length-first: 10, 100, -1", "integer and text keys"}


# Rules of this profile that are not about the encoding: cbor2 decodes these
# and writes them back unchanged; the record schema rejects them instead.
PROFILE_ONLY = {"undefined (RFC 8949 App. A)", "simple(16) (RFC 8949 App. A)", "simple(255) (RFC 8949 App. A)",
                "true as map key", "array as map key", "nesting deeper than 16"}


@pytest.mark.parametrize("v", CBOR["reject"], ids=lambda v: v["name"])
def test_cbor_reject(v):
    data = bytes.fromhex(v["hex"])
    with pytest.raises(CodecError, match=v["error"]):
        cbor.decode(data)
    if v["name"] in PROFILE_ONLY:
        return
    with pytest.raises(R.RecordRejected) as e:
        R._decode(data, "item")
    assert e.value.reason in (R.TRUNCATED, R.MALFORMED, R.NON_DETERMINISTIC)


@pytest.mark.parametrize("hexdata", [
    "d81c81d81d00",      # value sharing: an array that contains itself
    "d81c82d81d000a",    # the same, one level down
    "d9010081616161",    # string references (tag 256)
    "5f41014102ff",      # indefinite byte string
])
def test_host_decoder_refuses_hostile_shapes(hexdata):
    with pytest.raises(R.RecordRejected) as e:
        R._decode(bytes.fromhex(hexdata), "item")
    assert e.value.reason == R.NON_DETERMINISTIC


# ---- COSE vectors: cryptography verifies, r is x(kG) ----


@pytest.mark.parametrize("v", COSE["sign1"], ids=lambda v: v["name"])
def test_cose_sign1_vector(v):
    key = COSE["keys"][v["key"]]
    payload, aad = bytes.fromhex(v["payload"]), bytes.fromhex(v["external_aad"])
    tbs = cbor2.dumps(["Signature1", bytes.fromhex(v["protected"]), aad, payload])
    assert tbs.hex() == v["sig_structure"]
    msg = cbor2.loads(bytes.fromhex(v["cose"]))
    assert msg.tag == 18 and list(msg.value[:3]) == [bytes.fromhex(v["protected"]), {}, payload]
    sig = bytes.fromhex(v["signature"])
    assert msg.value[3] == sig
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(key["public_key"]))
    pub.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
    # the fixed nonce really is k: r = x(kG) mod n, and s is the low one
    kg = ec.derive_private_key(int(v["k"], 16), ec.SECP256R1()).public_key().public_numbers()
    assert r == kg.x % N and s <= N // 2
    d = ec.derive_private_key(int(key["d"], 16), ec.SECP256R1())
    assert d.public_key().public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint).hex() == key["public_key"]


@pytest.mark.parametrize("v", COSE["reject"], ids=lambda v: v["name"])
def test_cose_reject_vector_firmware_parser(v):
    from hemhub.codec import cose_verify

    with pytest.raises(CodecError, match=v["error"]):
        cose_verify.parse_sign1(bytes.fromhex(v["hex"]))


# ---- record vectors ----


def json_field(v):
    """records.json fields_notation -> what the verifier returns (Decimal for decimals and floats)."""
    if isinstance(v, dict):
        if set(v) == {"bytes"}:
            return bytes.fromhex(v["bytes"])
        if set(v) == {"decimal"}:
            m, e = v["decimal"]
            return Decimal(m).scaleb(e)
        return {k: json_field(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_field(x) for x in v]
    if isinstance(v, float):
        return Decimal(repr(v))
    return v


@pytest.mark.parametrize("v", RECORDS["records"], ids=lambda v: v["name"])
def test_record_vector_verifies(v):
    rec = R.verify_record(bytes.fromhex(v["cose"]), CERTS[v["key"]])
    want = json_field(v["fields"])
    assert rec.fields == {"v": 1, **want}
    assert rec.hub_id == want["hub"] and rec.seq == want["seq"] and rec.kind == want["kind"]
    assert rec.payload.hex() == v["payload"] and len(rec.data) == v["size"]
    # the firmware's own reader agrees
    fields, _ = record_verify.open_record(rec.data, bytes.fromhex(RECORDS["keys"][v["key"]]["public_key"]))
    assert fields["seq"] == rec.seq and fields["hub"] == rec.hub_id


def test_typical_weight_record_size():
    assert len(BY_NAME["weight"]) <= 256
    assert all(len(d) <= 256 for d in BY_NAME.values())


@pytest.mark.parametrize("v", RECORDS["tampered"], ids=lambda v: v["name"])
def test_tampered_vector_rejected(v):
    with pytest.raises(R.RecordRejected) as e:
        R.verify_record(bytes.fromhex(v["cose"]), CERTS[v["verify_with"]])
    assert e.value.reason == v["reason"], e.value


def stream_records(names):
    return [TAMPERED[n.split(":", 1)[1]] if n.startswith("tampered:") else BY_NAME[n] for n in names]


@pytest.mark.parametrize("v", RECORDS["streams"], ids=lambda v: v["name"])
def test_stream_vector(v):
    report = R.check_stream(stream_records(v["records"]), CERTS[v["verify_with"]])
    want = v["expect"]
    assert [list(g) for g in report.gaps] == want["gaps"]
    assert [list(g) for g in report.declared_gaps] == want["declared_gaps"]
    assert {str(k): x for k, x in report.duplicates.items()} == want["duplicates"]
    assert {str(k): x for k, x in report.reused.items()} == want["reused"]
    assert [[r.index, r.reason] for r in report.rejected] == want["rejected"]
    assert report.ok is want["ok"]
    text = R.format_report(report)
    assert ("stream OK" in text) is want["ok"]


# ---- every bad-input class, beyond the vectors ----


def test_every_flipped_bit_is_rejected():
    data = BY_NAME["weight"]
    cert = CERTS["hub1"]
    seen = set()
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(R.RecordRejected) as e:
            R.verify_record(bytes(bad), cert)
        assert e.value.reason in R.REASONS
        seen.add(e.value.reason)
    # flips land in structure, encoding, schema, hub id and signature alike
    assert {R.BAD_SIGNATURE, R.MALFORMED, R.NON_DETERMINISTIC}.issubset(seen), seen


def test_every_truncation_is_rejected():
    data = BY_NAME["blood_pressure"]
    for n in range(len(data)):
        with pytest.raises(R.RecordRejected) as e:
            R.verify_record(data[:n], CERTS["hub1"])
        assert e.value.reason == R.TRUNCATED, (n, e.value)


def fresh_hub(hub_id: str):
    signer = p256.Signer(p256.generate_private_key())
    return signer, make_cert(signer.public_key, hub_id)


def reading(hub_id: str, seq: int, kg=72.35) -> dict:
    return {"hub": hub_id, "seq": seq, "kind": "observations", "hub_time": 1767225605,
            "peripheral": {"addr": b"\x00\x01\x02\x03\x04\x05", "kind": "scale"},
            "observations": [{"mdc": 188736, "value": kg, "unit": "kg"}]}


def test_relabelled_hub_id_is_rejected():
    a, cert_a = fresh_hub("HH1-A")
    _, cert_b = fresh_hub("HH1-B")
    data = record.sign_record(reading("HH1-A", 1), a)
    relabelled = data.replace(b"HH1-A", b"HH1-B")
    assert R.verify_record(data, cert_a).hub_id == "HH1-A"
    with pytest.raises(R.RecordRejected, match="bad-signature"):
        R.verify_record(relabelled, cert_b)
    with pytest.raises(R.RecordRejected, match="hub-mismatch"):
        R.verify_record(relabelled, cert_a)


def test_record_signed_by_another_hubs_key_is_rejected():
    a, cert_a = fresh_hub("HH1-A")
    b, _ = fresh_hub("HH1-B")
    with pytest.raises(R.RecordRejected, match="bad-signature"):
        R.verify_record(record.sign_record(reading("HH1-A", 1), b), cert_a)
    with pytest.raises(R.RecordRejected, match="hub-mismatch"):
        R.verify_record(record.sign_record(reading("HH1-B", 1), b), cert_a)


def test_reused_sequence_number_and_duplicates():
    a, cert = fresh_hub("HH1-A")
    first = record.sign_record(reading("HH1-A", 1), a)
    again = record.sign_record(reading("HH1-A", 1), a)  # same payload, new k
    other = record.sign_record(reading("HH1-A", 1, kg=80.1), a)
    second = record.sign_record(reading("HH1-A", 2), a)
    report = R.check_stream([first, second, first, again, other], cert)
    assert [r.status for r in report.results] == ["reused-seq", "ok", "duplicate", "duplicate", "reused-seq"]
    assert report.duplicates == {1: [0, 2, 3]} and report.reused == {1: [0, 4]}
    assert report.results[3].detail == "same payload, signed again"
    assert not report.ok and report.gaps == []


def test_gaps_and_gap_markers():
    a, cert = fresh_hub("HH1-A")
    recs = [record.sign_record(reading("HH1-A", s), a) for s in (3, 4, 8, 12)]
    marker = {"hub": "HH1-A", "seq": 13, "kind": "gap", "hub_time": 1,
              "gap": {"first": 5, "last": 6, "count": 2, "reason": "journal_full"}}
    recs.append(record.sign_record(marker, a))
    report = R.check_stream(recs, cert, first_seq=1, last_seq=15)
    assert report.gaps == [(1, 2), (7, 7), (9, 11), (14, 15)]
    assert report.declared_gaps == [(5, 6, 13)]
    assert R.check_stream([], cert).ok


def test_non_deterministic_cbor_is_rejected():
    a, cert = fresh_hub("HH1-A")
    from hemhub.codec import cose

    good = record.encode_payload(reading("HH1-A", 1))
    assert good[0] == 0xA7 and good[1:3] == b"\x00\x01"
    # the same map with the version written 18 01, validly signed
    bad = b"\xa7\x00\x18\x01" + good[3:]
    with pytest.raises(R.RecordRejected, match="non-deterministic"):
        R.verify_record(cose.sign1(bad, a), cert)
    # an indefinite-length map around the same pairs
    bad = b"\xbf" + good[1:] + b"\xff"
    with pytest.raises(R.RecordRejected, match="non-deterministic"):
        R.verify_record(cose.sign1(bad, a), cert)
    # a float where the schema wants a decimal
    doc = cbor2.loads(good)
    doc[9][0][1] = 72.35
    with pytest.raises(R.RecordRejected, match="schema"):
        R.verify_record(cose.sign1(cbor2.dumps(doc, canonical=True), a), cert)


def test_oversized_payload_is_rejected():
    a, cert = fresh_hub("HH1-A")
    from hemhub.codec import cose

    big = cbor2.dumps({0: 1, 1: "HH1-A", 2: 1, 3: 2, 4: 0, 11: {0: "x" * 1020}})
    assert 1024 < len(big) < R.MAX_RECORD - 80
    with pytest.raises(R.RecordRejected, match="malformed: payload of 10"):
        R.verify_record(cose.sign1(big, a), cert)
    with pytest.raises(CodecError, match="exceeds"):
        record_verify.open_record(cose.sign1(big, a))


def test_certificate_must_be_a_p256_hub_certificate():
    signer, cert = fresh_hub("HH1-A")
    data = record.sign_record(reading("HH1-A", 1), signer)
    with pytest.raises(ValueError, match="exactly one subject CN"):
        R.verify_record(data, make_cert(signer.public_key, "HH1-A", extra_cn="HH1-B"))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HH1-A")])
    rsa_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(rsa_key.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .sign(rsa_key, hashes.SHA256()))
    with pytest.raises(ValueError, match="P-256"):
        R.verify_record(data, rsa_cert)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert R.load_certificate(pem) == R.load_certificate(der) == cert
    assert R.public_key_bytes(cert) == signer.public_key


def test_split_sequence():
    data = b"".join(BY_NAME[n] for n in ("weight", "door_open", "gap_marker"))
    parts = R.split_sequence(data + b"\xd2\x84\x43")
    assert parts[:3] == [BY_NAME["weight"], BY_NAME["door_open"], BY_NAME["gap_marker"]]
    assert parts[3] == b"\xd2\x84\x43"
    report = R.check_stream(parts, CERTS["hub1"])
    assert report.rejected[0].reason == R.TRUNCATED


def test_check_file(tmp_path):
    (tmp_path / "records.cbor").write_bytes(b"".join(BY_NAME[n] for n in ("weight", "blood_pressure", "door_open")))
    (tmp_path / "hub.pem").write_bytes(CERTS["hub1"].public_bytes(serialization.Encoding.PEM))
    report = R.check_file(tmp_path / "records.cbor", tmp_path / "hub.pem")
    assert [r.seq for r in report.results] == [1, 2, 5]
    assert report.gaps == [(3, 4)] and not report.ok
    assert "gap: seq 3..4 missing (2 records)" in R.format_report(report)
    assert R.check_file(tmp_path / "records.cbor", tmp_path / "hub.pem", last_seq=2).gaps == [(3, 4)]
