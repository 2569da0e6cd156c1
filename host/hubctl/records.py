"""Verifying signed hub records on the host (protocol/record.md).

This is the second, independent implementation of the record format: it uses
cbor2 and cryptography and none of the firmware's code, and the shared vectors
in protocol/vectors/ keep the two byte-compatible.

    verify_record(data, cert) -> VerifiedRecord        raises RecordRejected(reason, detail)
    RecordVerifier(cert)(data) -> VerifiedRecord       the same, for many records of one certificate
    check_stream(records, cert) -> StreamReport        per-record results, gaps, duplicates
    load_certificate(data) -> x509.Certificate         PEM or DER
    certificate_serial(cert) -> str                    serial in hex, as the inventory keeps it
    first_verifying(data, certs) -> (cert, VerifiedRecord) | None   which certificate signed it
    split_sequence(data) -> list[bytes]                a file of concatenated records (RFC 8742)
    check_file(records_path, cert_path) -> StreamReport    the two above from files, for the CLI
    format_report(report) -> str                       what `hubctl verify` prints

The certificate is trusted as given: checking it against the fleet CA is the
caller's job (the fleet service does that when it registers a hub).

Rejection reasons (RecordRejected.reason), one word each, the detail says more:

    truncated          the data ends before the record does
    malformed          not CBOR, not a COSE_Sign1 of this profile, trailing bytes
    non-deterministic  valid CBOR, but not the one deterministic encoding
    unsupported        another signature algorithm or record format version
    schema             the payload breaks the record schema
    hub-mismatch       the record names another hub than the certificate
    bad-signature      the signature does not verify (or its s is not low)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

TRUNCATED = "truncated"
MALFORMED = "malformed"
NON_DETERMINISTIC = "non-deterministic"
UNSUPPORTED = "unsupported"
SCHEMA = "schema"
HUB_MISMATCH = "hub-mismatch"
BAD_SIGNATURE = "bad-signature"
REASONS = (TRUNCATED, MALFORMED, NON_DETERMINISTIC, UNSUPPORTED, SCHEMA, HUB_MISMATCH, BAD_SIGNATURE)

RECORD_VERSION = 1
MAX_PAYLOAD = 1024  # record.md section 3
MAX_RECORD = MAX_PAYLOAD + 128
_COSE_SIGN1 = 18
_PROTECTED_ES256 = b"\xa1\x01\x26"  # {1: -7}
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
KINDS = ("observations", "event", "health", "gap")


class RecordRejected(Exception):
    """A record failed verification; reason is one of REASONS, detail says what and where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VerifiedRecord:
    """A record whose signature, encoding and schema checked out.

    fields holds the payload by name (record.md section 3); observation
    values are int, Decimal or None.
    """

    hub_id: str
    seq: int
    kind: str
    fields: dict
    payload: bytes = field(repr=False)
    data: bytes = field(repr=False)

    @property
    def gap_range(self) -> tuple[int, int] | None:
        gap = self.fields.get("gap")
        if gap and "first" in gap:
            return gap["first"], gap["last"]
        return None


# ---- payload schema (independent of firmware/hemhub/record.py) ----


class _Bad(Exception):
    pass


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _uint(v):
    if type(v) is not int or v < 0:
        raise _Bad(f"expected an unsigned integer, got {_short(v)}")
    return v


def _int(v):
    if type(v) is not int:
        raise _Bad(f"expected an integer, got {_short(v)}")
    return v


def _text(v):
    if type(v) is not str or not 0 < len(v) <= 64:
        raise _Bad(f"expected text of 1..64 characters, got {_short(v)}")
    return v


def _true(v):
    if v is not True:
        raise _Bad(f"expected true (or the key absent), got {_short(v)}")
    return v


def _address(v):
    if (type(v) is bytes and len(v) == 6) or (type(v) is str and 0 < len(v) <= 64):
        return v
    raise _Bad(f"expected a 6-byte BLE address or text, got {_short(v)}")


def _value(v):
    if v is None or type(v) is int:
        return v
    if isinstance(v, Decimal):
        sign, digits, exp = v.as_tuple()
        mantissa = int(v.scaleb(-exp)) if isinstance(exp, int) else None
        if isinstance(exp, int) and -30 <= exp < 0 and -(2**64) <= mantissa < 2**64:
            return v
    raise _Bad(f"expected an integer, a decimal fraction 4([exp < 0, mantissa]) or null, got {_short(v)}")


def _scalar(v):
    if type(v) in (int, bool) or (type(v) is str and len(v) <= 64):
        return v
    raise _Bad(f"expected an integer, boolean or short text, got {_short(v)}")


def _detail(v):
    if not isinstance(v, dict) or len(v) > 16 or not all(type(k) is str for k in v):
        raise _Bad("expected a map of at most 16 text keys")
    return {k: _scalar(x) for k, x in v.items()}


def _kind(v):
    if type(v) is not int or not 0 <= v < len(KINDS):
        raise _Bad(f"expected a record kind 0..{len(KINDS) - 1}, got {_short(v)}")
    return KINDS[v]


def _map(schema: dict, required: tuple) -> Callable[[Any], dict]:
    def check(m):
        if not isinstance(m, dict):
            raise _Bad(f"expected a map, got {type(m).__name__}")
        out = {}
        for k, v in m.items():
            if k not in schema:
                raise _Bad(f"unknown key {_short(k)}")
            name, conv = schema[k]
            try:
                out[name] = conv(v)
            except _Bad as e:
                raise _Bad(f"{name}: {e}") from None
        missing = [n for n in required if n not in out]
        if missing:
            raise _Bad(f"lacks {', '.join(missing)}")
        return out

    return check


def _observations(v):
    if not isinstance(v, list) or not 0 < len(v) <= 16:
        raise _Bad("expected a list of 1..16 observations")
    out = []
    for i, o in enumerate(v):
        obs = _observation(o)
        if (obs["value"] is None) != ("reason" in obs):
            raise _Bad(f"[{i}] needs a reason exactly when its value is null")
        out.append(obs)
    return out


# Key numbers and types: protocol/record.md section 3.
_observation = _map(
    {0: ("mdc", _uint), 1: ("value", _value), 2: ("unit", _text), 3: ("reason", _text)},
    ("mdc", "value", "unit"),
)
_device_info = _map({i: (n, _text) for i, n in enumerate(
    ("manufacturer", "model", "serial", "firmware", "hardware", "software"))}, ())
_peripheral = _map(
    {0: ("addr", _address), 1: ("addr_type", _uint), 2: ("kind", _text), 3: ("info", _device_info)},
    ("addr", "kind"),
)
_event = _map({0: ("type", _text), 1: ("source", _text), 2: ("value", _scalar)}, ("type",))
_health = _map(
    {0: ("type", _text), 1: ("uptime_s", _uint), 2: ("boot", _uint), 3: ("fw", _text),
     4: ("reset_cause", _text), 5: ("detail", _detail)},
    ("type",),
)
_gap = _map(
    {0: ("first", _uint), 1: ("last", _uint), 2: ("count", _uint), 3: ("what", _text), 4: ("reason", _text)},
    ("count",),
)
_payload = _map(
    {0: ("v", _uint), 1: ("hub", _text), 2: ("seq", _uint), 3: ("kind", _kind), 4: ("hub_time", _uint),
     5: ("unsynced", _true), 6: ("device_time", _int), 7: ("peripheral", _peripheral), 8: ("user", _uint),
     9: ("observations", _observations), 10: ("event", _event), 11: ("health", _health), 12: ("gap", _gap)},
    ("v", "hub", "seq", "kind", "hub_time"),
)


def _check_payload(m) -> dict:
    if isinstance(m, dict) and 0 in m and m[0] != RECORD_VERSION:
        raise RecordRejected(UNSUPPORTED, f"record format version {m.get(0)!r}; this verifier knows {RECORD_VERSION}")
    try:
        f = _payload(m)
    except _Bad as e:
        raise RecordRejected(SCHEMA, f"payload {e}") from None
    kind = f["kind"]
    present = [k for k in KINDS if k in f]
    if present != [kind]:
        raise RecordRejected(SCHEMA, f"{kind} record must carry exactly its {kind} field, has {present}")
    if kind in ("observations", "event") and "peripheral" not in f:
        raise RecordRejected(SCHEMA, f"{kind} record lacks its peripheral")
    gap = f.get("gap")
    if gap is not None:
        if ("first" in gap) != ("last" in gap):
            raise RecordRejected(SCHEMA, "gap must give both first and last or neither")
        if "first" in gap and not gap["first"] <= gap["last"] < f["seq"]:
            raise RecordRejected(SCHEMA, f"gap {gap['first']}..{gap['last']} must end before its own seq {f['seq']}")
    return f


# ---- one record ----


def _decode(data: bytes, what: str):
    mixed = _MixedKeyMaps()
    try:
        item = cbor2.loads(data, max_depth=16, object_hook=mixed)
    except cbor2.CBORDecodeEOF:
        raise RecordRejected(TRUNCATED, f"{what} ends early ({len(data)} bytes)") from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as e:
        raise RecordRejected(MALFORMED, f"{what} is not valid CBOR: {e}") from None
    try:
        again = cbor2.dumps(item, canonical=True)
    except (cbor2.CBOREncodeError, RecursionError, ValueError, TypeError) as e:
        raise RecordRejected(NON_DETERMINISTIC, f"{what} does not re-encode: {e}") from None
    if again != data:
        if data.startswith(again):
            raise RecordRejected(MALFORMED, f"{what} has {len(data) - len(again)} trailing bytes")
        raise RecordRejected(NON_DETERMINISTIC, f"{what} is not in deterministic CBOR encoding")
    # cbor2's canonical mode sorts map keys length-first (RFC 7049 section 3.9);
    # RFC 8949 section 4.2.1 sorts them bytewise. The two differ only when one
    # map mixes key types (e.g. 24 and -1), so check the bytewise order too.
    for m in mixed.maps:
        keys = [cbor2.dumps(k, canonical=True) for k in m]
        if not all(keys[i] < keys[i + 1] for i in range(len(keys) - 1)):
            raise RecordRejected(NON_DETERMINISTIC, f"{what} has map keys out of bytewise order (RFC 8949 4.2.1)")
    return item


class _MixedKeyMaps:
    """object_hook for cbor2.loads that keeps the maps whose keys are not all of one
    major type: only there can bytewise order differ from the length-first order the
    re-encoding checks. A hook sees every map as it is decoded, which costs a
    fraction of walking the decoded item again (the walk was a quarter of the
    verifier's time)."""

    __slots__ = ("maps",)

    def __init__(self):
        self.maps: list = []

    def __call__(self, m, immutable):
        if len(m) > 1 and not _one_major_type(m):
            self.maps.append(m)
        return m


def _one_major_type(keys) -> bool:
    it = iter(keys)
    first = next(it)
    t = type(first)
    if t is int:
        negative = first < 0
        for k in it:
            if type(k) is not int or (k < 0) != negative:
                return False
        return True
    if t is str or t is bytes:
        for k in it:
            if type(k) is not t:
                return False
        return True
    return False  # anything unusual (bool, tagged, a map): compare the slow, exact way


def certificate_identity(cert: x509.Certificate) -> tuple[str, ec.EllipticCurvePublicKey]:
    """(CN, P-256 public key) of a hub certificate; ValueError if it is not one."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    key = cert.public_key()
    if len(cns) != 1:
        raise ValueError("the hub certificate must have exactly one subject CN (the hub id)")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the hub certificate must hold a P-256 (prime256v1) key")
    return str(cns[0].value), key


def certificate_serial(cert: x509.Certificate) -> str:
    """The certificate's serial as the inventory and `hubctl inventory show` write it
    (lower-case hex): which life of a hub a record belongs to."""
    return format(cert.serial_number, "x")


def first_verifying(data: bytes, certs) -> tuple[x509.Certificate, VerifiedRecord] | None:
    """(certificate, record) for the first of certs that verifies the record, else None:
    which of a hub's certificates (lives) signed it."""
    for cert in certs:
        try:
            return cert, verify_record(data, cert)
        except RecordRejected:
            continue
    return None


def verify_record(data: bytes, cert: x509.Certificate) -> VerifiedRecord:
    """Check one COSE_Sign1 record against the hub's certificate; RecordRejected if it fails.

    Order: structure, deterministic encoding, schema, hub id = certificate CN,
    then the ES256 signature (low s) with the certificate's key.
    """
    return RecordVerifier(cert)(data)


_ES256 = ec.ECDSA(hashes.SHA256())


class RecordVerifier:
    """verify_record for one certificate: `RecordVerifier(cert)(data)`. The
    certificate's CN and key are taken out once, not for every record (the fleet
    checks many records per certificate). ValueError if cert is not a hub certificate."""

    def __init__(self, cert: x509.Certificate):
        self.cert = cert
        self.hub_id, self.key = certificate_identity(cert)

    def __call__(self, data: bytes) -> VerifiedRecord:
        return _verify(bytes(data), self.hub_id, self.key)


def _verify(data: bytes, hub_cn: str, key: ec.EllipticCurvePublicKey) -> VerifiedRecord:
    if len(data) > MAX_RECORD:
        raise RecordRejected(MALFORMED, f"record of {len(data)} bytes exceeds {MAX_RECORD}")
    item = _decode(data, "record")
    if not isinstance(item, cbor2.CBORTag) or item.tag != _COSE_SIGN1:
        raise RecordRejected(MALFORMED, "not a COSE_Sign1 (CBOR tag 18)")
    msg = item.value
    if not isinstance(msg, (list, tuple)) or len(msg) != 4:
        raise RecordRejected(MALFORMED, "COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = msg
    if not isinstance(protected, bytes):
        raise RecordRejected(MALFORMED, "COSE protected header must be a byte string")
    if protected != _PROTECTED_ES256:
        try:
            hdr = cbor2.loads(protected)
        except (cbor2.CBORDecodeError, ValueError):
            hdr = None
        if isinstance(hdr, dict) and hdr.get(1) not in (None, -7):
            raise RecordRejected(UNSUPPORTED, f"COSE algorithm {hdr.get(1)!r}; records use ES256 (-7)")
        raise RecordRejected(MALFORMED, "COSE protected header must be exactly {1: -7}")
    if not isinstance(unprotected, (dict, cbor2.frozendict)) or len(unprotected):
        raise RecordRejected(MALFORMED, "COSE unprotected header must be an empty map")
    if not isinstance(payload, bytes):
        raise RecordRejected(MALFORMED, "COSE payload must be an attached byte string")
    if len(payload) > MAX_PAYLOAD:
        raise RecordRejected(MALFORMED, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise RecordRejected(MALFORMED, "ES256 signature must be 64 bytes (r || s)")
    fields = _check_payload(_decode(payload, "payload"))
    if fields["hub"] != hub_cn:
        raise RecordRejected(HUB_MISMATCH, f"record names hub {fields['hub']!r}, the certificate is for {hub_cn!r}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _P256_N and 0 < s <= _P256_N // 2):
        raise RecordRejected(BAD_SIGNATURE, "r or s out of range (s must be the low one)")
    tbs = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    try:
        key.verify(encode_dss_signature(r, s), tbs, _ES256)
    except InvalidSignature:
        raise RecordRejected(BAD_SIGNATURE, f"signature does not verify with the certificate of {hub_cn}") from None
    return VerifiedRecord(hub_id=fields["hub"], seq=fields["seq"], kind=fields["kind"], fields=fields,
                          payload=payload, data=data)


# ---- a stream of records ----


@dataclass
class RecordResult:
    """status: ok, duplicate (same seq, same payload), reused-seq (same seq, other payload) or rejected."""

    index: int
    status: str
    seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    record: VerifiedRecord | None = None


@dataclass
class StreamReport:
    results: list[RecordResult] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing and not declared
    declared_gaps: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, marker seq)
    duplicates: dict[int, list[int]] = field(default_factory=dict)  # seq -> indexes
    reused: dict[int, list[int]] = field(default_factory=dict)  # seq -> indexes

    @property
    def rejected(self) -> list[RecordResult]:
        return [r for r in self.results if r.status == "rejected"]

    @property
    def ok(self) -> bool:
        """No rejected record, no reused sequence number, no undeclared gap (duplicates are harmless)."""
        return not (self.rejected or self.reused or self.gaps)


def _subtract(lo: int, hi: int, covers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, b in sorted(covers):
        if b < lo or a > hi:
            continue
        if a > lo:
            out.append((lo, a - 1))
        lo = max(lo, b + 1)
        if lo > hi:
            return out
    out.append((lo, hi))
    return out


def check_stream(records: Iterable[bytes], cert: x509.Certificate, *,
                 first_seq: int | None = None, last_seq: int | None = None) -> StreamReport:
    """Verify every record and check sequence continuity for one hub.

    Records may come in any order. A missing sequence number is a gap unless a
    verified gap marker declares it dropped. first_seq / last_seq, when known
    (e.g. from the previous batch and the hub's status), extend the range checked.
    """
    report = StreamReport()
    by_seq: dict[int, RecordResult] = {}
    for i, data in enumerate(records):
        try:
            rec = verify_record(data, cert)
        except RecordRejected as e:
            report.results.append(RecordResult(i, "rejected", reason=e.reason, detail=e.detail))
            continue
        res = RecordResult(i, "ok", seq=rec.seq, record=rec)
        first = by_seq.get(rec.seq)
        if first is None:
            by_seq[rec.seq] = res
        elif first.record.payload == rec.payload:
            res.status = "duplicate"
            res.detail = "same record again" if first.record.data == rec.data else "same payload, signed again"
            report.duplicates.setdefault(rec.seq, [first.index]).append(i)
        else:
            res.status = "reused-seq"
            res.detail = f"seq {rec.seq} also used by record {first.index} with other content"
            first.status = "reused-seq"
            first.detail = f"seq {rec.seq} also used by record {i} with other content"
            report.reused.setdefault(rec.seq, [first.index]).append(i)
        report.results.append(res)
        if rec.gap_range and res.status != "duplicate":
            report.declared_gaps.append((*rec.gap_range, rec.seq))

    seqs = sorted(by_seq)
    if not seqs:
        return report
    lo = seqs[0] if first_seq is None else min(first_seq, seqs[0])
    hi = seqs[-1] if last_seq is None else max(last_seq, seqs[-1])
    covers = [(a, b) for a, b, _ in report.declared_gaps]
    expected = lo
    for s in seqs + [hi + 1]:
        if s > expected:
            report.gaps.extend(_subtract(expected, s - 1, covers))
        expected = max(expected, s + 1)
    return report


# ---- helpers for the CLI ----


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def split_sequence(data: bytes) -> list[bytes]:
    """Split concatenated CBOR items (a CBOR sequence, RFC 8742) into records.

    Splitting stops at the first item that does not parse; the rest is returned
    as one last element, which verify_record then rejects with its reason.
    """
    out = []
    fp = io.BytesIO(data)
    pos = 0
    while pos < len(data):
        try:
            cbor2.CBORDecoder(fp).decode()
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError):
            out.append(data[pos:])
            break
        end = fp.tell()
        out.append(data[pos:end])
        pos = end
    return out


def check_file(records_path, cert_path, *, first_seq: int | None = None,
               last_seq: int | None = None) -> StreamReport:
    """check_stream over a file of concatenated records, with the hub certificate from a file.

    Raises OSError for unreadable files and ValueError for a certificate that
    is not a hub certificate (both are the caller's input, not a record's fault).
    """
    cert = load_certificate(Path(cert_path).read_bytes())
    certificate_identity(cert)
    records = split_sequence(Path(records_path).read_bytes())
    return check_stream(records, cert, first_seq=first_seq, last_seq=last_seq)


def public_key_bytes(cert: x509.Certificate) -> bytes:
    """The certificate's key as a 65-byte uncompressed point (what the hub holds)."""
    return cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def format_report(report: StreamReport) -> str:
    lines = []
    for r in report.results:
        if r.status == "ok":
            continue
        where = f"record {r.index}" + (f" (seq {r.seq})" if r.seq is not None else "")
        lines.append(f"{where}: {r.status}" + (f" ({r.reason})" if r.reason else "") + (f": {r.detail}" if r.detail else ""))
    for a, b in report.gaps:
        lines.append(f"gap: seq {a}..{b} missing ({b - a + 1} records), not declared by any gap marker")
    for a, b, marker in report.declared_gaps:
        lines.append(f"declared gap: seq {a}..{b} dropped by the hub (gap marker seq {marker})")
    good = sum(1 for r in report.results if r.status == "ok")
    lines.append(f"{good} of {len(report.results)} records verified; "
                 + ("stream OK" if report.ok else "stream has problems"))
    return "\n".join(lines)
