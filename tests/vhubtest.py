"""Helpers for tests that run virtual hubs (imported by conftest and tests)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from hubctl.vhub.hubdir import HubDir
from hubctl.vhub.supervisor import Supervisor
from hubctl.vhub.world import WorldClient


class RunningHub:
    """A virtual hub booted by an in-process supervisor."""

    def __init__(self, hub: HubDir, sup: Supervisor):
        self.hub = hub
        self.sup = sup
        self.port = sup.pty_path

    @property
    def path(self) -> Path:
        return self.hub.path

    def world(self) -> WorldClient:
        return WorldClient.for_hub(self.hub)

    def wait_ready(self, timeout: float = 15.0) -> dict:
        with self.world() as w:
            return w.wait_ready(timeout)

    def boot_count(self) -> int:
        """How many times the hub's interpreter has started (the supervisor counts)."""
        with self.world() as w:
            return w.state()["boot_count"]

    def wait_app(self, after_boot: int | None = None, timeout: float = 15.0) -> None:
        """The application has lit the status LED (GPIO 2), in a boot after boot
        number `after_boot` when given. The LED pin keeps its level across a soft
        reset, so after a console session only `after_boot` proves a new start."""
        deadline = time.monotonic() + timeout
        with self.world() as w:
            while after_boot is not None and w.state()["boot_count"] <= after_boot:
                assert time.monotonic() < deadline, (
                    f"the hub did not restart after its console session (still boot {after_boot})")
                time.sleep(0.05)
            w.wait_ready(max(0.1, deadline - time.monotonic()))
            while w.state()["pins"].get("2") != 1:
                assert time.monotonic() < deadline, "the application did not start"
                time.sleep(0.02)

    def console_log(self) -> bytes:
        return self.hub.console_log.read_bytes()


@contextlib.contextmanager
def run_hub(path: Path, bundle, **kw):
    hub = HubDir.create(path, bundle) if not (path / "hub.json").exists() else HubDir.open(path)
    sup = Supervisor(hub, **kw)
    sup.start()
    rh = RunningHub(hub, sup)
    try:
        rh.wait_ready()
        yield rh
    finally:
        sup.stop()


def write_config(rh: RunningHub, cfg: dict) -> None:
    """Store /data/config.json on the hub through its console."""
    from hubctl.transport import HubConsole

    with HubConsole(rh.port) as con:
        con.exec(f"import json\nwith open('/data/config.json', 'w') as f:\n json.dump({cfg!r}, f)\n")


def throwaway_ca():
    """A CA made with cryptography, for tests of the hub's identity (not the product's CA)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hemhub test device CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_certificate(ca, csr_der: bytes):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key, ca_cert = ca
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))


def provision_identity(rh, ca):
    """Drive the hub's identity service: key + CSR on the hub, certificate back."""
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding
    from hubctl.transport import HubConsole

    with HubConsole(rh.port) as con:
        reply = con.call("service", "identity_csr_json")
        cert = issue_certificate(ca, base64.b64decode(reply["csr"]))
        der = cert.public_bytes(Encoding.DER)
        con.call("service", "identity_install_json", base64.b64encode(der).decode())
    return reply, cert
