"""hubctl readings / hubctl verify: the signed records a hub holds, and checking them.

Verification itself is hubctl.records (cbor2 + cryptography, independent of the
firmware's code); this module reads records from a hub or a file.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from .errors import UsageError
from .records import load_certificate, split_sequence


def fetch(console, page: int = 16) -> list[tuple[int, bytes]]:
    """All records in the hub's journal, (seq, COSE bytes), oldest first."""
    out: list[tuple[int, bytes]] = []
    after = 0
    while True:
        reply = console.call("service", "journal_json", after, page)
        recs = reply["records"]
        out += [(seq, base64.b64decode(b64)) for seq, b64 in recs]
        if len(recs) < page:
            return out
        after = reply["last"]


def read_records_file(path: str) -> list[bytes]:
    """Records from a file: a CBOR sequence of COSE_Sign1 (as `readings --out`
    writes), or text with one base64 record per line (as `readings` prints)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"There is no records file {path}.")
    data = p.read_bytes()
    if data[:1] == b"\xd2":  # tag 18: COSE_Sign1, binary
        return split_sequence(data)
    recs = []
    for n, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token = line.split()[-1]
        try:
            recs.append(base64.b64decode(token, validate=True))
        except (binascii.Error, ValueError):
            raise UsageError(f"{path} line {n} is neither base64 nor part of a CBOR sequence.",
                             hint="Give the file written by: hubctl readings --port PORT --out FILE") from None
    return recs


def load_cert_file(path: str):
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"There is no certificate file {path}.")
    try:
        return load_certificate(p.read_bytes())
    except ValueError as e:
        raise UsageError(f"{path} is not an X.509 certificate ({e}).",
                         hint="Give the hub's device certificate (PEM or DER).") from None
