"""Certificates for broker and fleet tests, made by the project's own provisioning CA
(hubctl.ca) and registered in its inventory the way provisioning does it; plus a
certificate from a CA the broker does not know. Keys of the test hubs are made on
the host (the virtual-hub tests make them on the hub)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hemhub.crypto import p256
from hubctl import ca
from hubctl import home as homedir
from hubctl.broker import service_client_cert
from hubctl.inventory import Inventory


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Client:
    """A client certificate and key on disk; signer signs records with the same key (hubs)."""

    cn: str
    cert: x509.Certificate
    certfile: Path
    keyfile: Path
    signer: p256.Signer | None = None


class FleetPKI:
    def __init__(self, home: Path):
        self.home = Path(home)
        ca.init_ca(self.home)
        self.dir = self.home / "clients"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.inventory = Inventory(homedir.db_path(self.home))
        cert, key, self.root_file = service_client_cert(self.home)
        self.service = Client(x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
                              .removeprefix("CN="), None, cert, key)

    def _files(self, cn: str, cert: x509.Certificate, key, chain: bytes = b"") -> tuple[Path, Path]:
        stem = self.dir / f"{cn.replace(':', '_')}.{cert.serial_number:x}"
        certfile, keyfile = stem.with_suffix(".crt.pem"), stem.with_suffix(".key.pem")
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + chain)
        keyfile.write_bytes(key_pem(key))
        return certfile, keyfile

    def device(self, hub_id: str, *, register: bool = True, send_chain: bool = False) -> Client:
        """A hub: key, CSR, certificate from the device CA, registered as provisioned."""
        d = p256.generate_private_key()
        key = ec.derive_private_key(d, ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_id)]))
               .sign(key, hashes.SHA256()))
        cert = ca.issue_device_cert(self.home, csr.public_bytes(serialization.Encoding.DER), hub_id)
        der = cert.public_bytes(serialization.Encoding.DER)
        if register:
            sha = ca.fingerprint(cert)
            self.inventory.record_issued(hub_id, {}, cert.serial_number, sha, der)
            self.inventory.complete(hub_id, {}, sha, [])
        chain = ca.cert_path(self.home, ca.DEVICE).read_bytes() if send_chain else b""
        certfile, keyfile = self._files(hub_id, cert, key, chain)
        return Client(hub_id, cert, certfile, keyfile, p256.Signer(d))

    def revoke(self, hub_id: str) -> Path:
        """Revoke the hub in the inventory and rewrite the CRL (ca.revoke_hub); returns the CRL path."""
        return Path(ca.revoke_hub(self.home, hub_id)["crl"])

    def service_signed(self, name: str, *, send_chain: bool = False) -> Client:
        """Another service's certificate (service CA): not a device certificate."""
        issued = ca.issue_service_client_cert(self.home, name, self.dir)
        if send_chain:
            issued.cert_path.write_bytes(issued.cert_path.read_bytes()
                                         + ca.cert_path(self.home, ca.SERVICE).read_bytes())
        return Client(ca.SERVICE_CN_PREFIX + name, issued.cert, issued.cert_path, issued.key_path)

    def foreign(self, cn: str) -> Client:
        """A certificate for cn from a CA the broker does not know."""
        now = datetime.datetime.now(datetime.timezone.utc)
        other = ec.generate_private_key(ec.SECP256R1())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(other, hashes.SHA256()))
        certfile, keyfile = self._files(cn, cert, key)
        return Client(cn, cert, certfile, keyfile)
