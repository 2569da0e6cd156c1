"""The provisioning CA: `hubctl ca init | show | revoke | crl`, and the
library functions provisioning, the broker set-up and the fleet service call.

Layout under HOME/ca (host/hubctl/home.py), every key file 0600:

    root.crt.pem  root.key.pem            root CA (self-signed, path length 1)
    device-ca.crt.pem  device-ca.key.pem  device-issuing CA (signed by root,
                                          path length 0): issues hub certificates
                                          only (CN = hub id, EKU clientAuth)
    service-ca.crt.pem service-ca.key.pem service CA (signed by root, path length 0):
                                          issues fleet-service client certificates
                                          only (CN = "service:NAME", EKU clientAuth)
    client-ca.pem                         what the broker's `cafile` holds to check
                                          clients: device CA + service CA + root
    crl.pem                               the broker's `crlfile`: one CRL per
                                          client-issuing CA (device CA, service CA)

Why this shape: the root signs only the two issuing CAs and broker *server*
certificates (EKU serverAuth, SAN 127.0.0.1/localhost/...). No client-auth leaf
is ever signed by the root, so a client reaches the broker only through the
device CA (hubs) or the service CA (fleet services); the two are separate so
that a leaked hub certificate can never pass for a service and the broker's ACL
can tell them apart by CN ("service:" is not a valid hub id). The root is
included in client-ca.pem because OpenSSL (Mosquitto) only accepts a chain that
ends at a self-signed certificate. Hubs carry root.der as the trust anchor for
the broker's server certificate.

The CRL file holds a CRL for both client-issuing CAs, because with `crlfile`
set OpenSSL requires a CRL for the issuer of every client it checks.

Keys are P-256. With a passphrase (``ca init --passphrase-file F``) every key
is stored encrypted (cryptography's BestAvailableEncryption); commands that
sign then need the same passphrase (``--passphrase-file`` or
$HEMHUB_CA_PASSPHRASE_FILE).

Library use (the broker and fleet-service set-up)::

    from hubctl import ca
    ca.init_ca(home)                                       # once (tests, demo)
    srv = ca.issue_server_cert(home, out_dir)              # broker: srv.cert_path, srv.key_path
    cli = ca.issue_service_client_cert(home, "fleet", out_dir)
    ca.root_cert_path(home), ca.client_ca_path(home), ca.crl_path(home)
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import home as _home
from .errors import HubctlError, HubNotFoundError, HubStateError, UsageError

ROOT = "root"
DEVICE = "device-ca"
SERVICE = "service-ca"
PASSPHRASE_ENV = "HEMHUB_CA_PASSPHRASE_FILE"

ROOT_DAYS = 20 * 365
ISSUING_DAYS = 10 * 365
DEVICE_CERT_DAYS = 10 * 365  # a hub lives ~10 years; revocation (CRL) ends it earlier
SERVER_CERT_DAYS = 825
SERVICE_CERT_DAYS = 825
CRL_DAYS = 365  # the broker refuses every client once the CRL expires: reissue with `hubctl ca crl`
SERVICE_CN_PREFIX = "service:"


class CAError(HubctlError):
    """The CA is missing, locked, or the passphrase is wrong."""

    exit_code = 4


@dataclass
class IssuedCert:
    """A certificate issued with a key made on the host (broker, service)."""

    cert: x509.Certificate
    cert_path: Path
    key_path: Path
    chain_path: Path  # issuer chain up to and including the root (PEM)
    root_path: Path   # the trust anchor peers need

    @property
    def sha256(self) -> str:
        return fingerprint(self.cert)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# -- paths ---------------------------------------------------------------------------
def ca_path(home) -> Path:
    return _home.ca_dir(_home.home(home))


def cert_path(home, which: str) -> Path:
    return ca_path(home) / f"{which}.crt.pem"


def key_path(home, which: str) -> Path:
    return ca_path(home) / f"{which}.key.pem"


def root_cert_path(home) -> Path:
    """The root CA certificate (PEM): the trust anchor for the broker's server cert."""
    return cert_path(home, ROOT)


def device_ca_cert_path(home) -> Path:
    return cert_path(home, DEVICE)


def client_ca_path(home) -> Path:
    """The broker's `cafile` for client certificates: device CA + service CA + root."""
    return ca_path(home) / "client-ca.pem"


def crl_path(home) -> Path:
    """The broker's `crlfile` (PEM, one CRL per client-issuing CA)."""
    return ca_path(home) / "crl.pem"


def exists(home) -> bool:
    return all(cert_path(home, w).is_file() for w in (ROOT, DEVICE, SERVICE))


# -- keys ----------------------------------------------------------------------------
def read_passphrase(path: str | os.PathLike | None) -> bytes | None:
    """The CA passphrase from a file (first line), else from $HEMHUB_CA_PASSPHRASE_FILE."""
    path = path or os.environ.get(PASSPHRASE_ENV)
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"The passphrase file {p} does not exist.")
    lines = p.read_bytes().splitlines()
    secret = lines[0] if lines else b""
    if not secret:
        raise UsageError(f"The passphrase file {p} is empty.", hint="Put the passphrase on its first line.")
    return secret


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only (0600 from the first byte)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key, passphrase: bytes | None) -> bytes:
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_key(home, which: str, passphrase: bytes | None):
    """A CA private key; CAError naming the problem and the fix."""
    path = key_path(home, which)
    if not path.is_file():
        raise CAError(f"The {which} key {path} is missing.",
                      hint="Restore it from the CA backup, or create a new CA with hubctl ca init "
                           "(hubs provisioned under the old one must then be reprovisioned).")
    data = path.read_bytes()
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise CAError(f"The {which} key {path} is protected by a passphrase.",
                      hint=f"Pass --passphrase-file FILE (or set ${PASSPHRASE_ENV}).")
    try:
        return serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError:
        if encrypted:
            raise CAError(f"Wrong passphrase for the {which} key {path}.",
                          hint="Check the passphrase file.") from None
        raise CAError(f"The {which} key {path} is damaged (not a PEM private key).",
                      hint="Restore it from the CA backup.") from None


def load_cert(home, which: str) -> x509.Certificate:
    path = cert_path(home, which)
    if not path.is_file():
        raise HubNotFoundError(f"No provisioning CA in {ca_path(home)} ({path.name} is missing).",
                               hint=f"Create one: hubctl ca init --home {_home.home(home)}")
    return x509.load_pem_x509_certificate(path.read_bytes())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hemhub"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(subject_key, subject: x509.Name, issuer_key, issuer: x509.Name, days: int,
             path_length: int, issuer_cert: x509.Certificate | None = None) -> x509.Certificate:
    now = _now()
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
                        critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def init_ca(home=None, passphrase: bytes | None = None, *, force: bool = False) -> dict:
    """Create root, device-issuing and service CAs under HOME/ca (keys 0600),
    client-ca.pem and empty CRLs. Refuses to overwrite an existing CA unless force."""
    d = ca_path(home)
    if exists(home) and not force:
        raise HubStateError(f"A provisioning CA already exists in {d}.",
                            hint="Every hub certificate depends on it: keep it. Use a new --home "
                                 "for a separate CA.")
    d.mkdir(parents=True, exist_ok=True)
    # Keys are 0600 each; the directory stays readable so the broker (which drops
    # to its own user) can read client-ca.pem and crl.pem from it.
    os.chmod(d, 0o755)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("hemhub root CA")
    root = _ca_cert(root_key, root_name, root_key, root_name, ROOT_DAYS, 1)
    certs = {ROOT: root}
    keys = {ROOT: root_key}
    for which, cn in ((DEVICE, "hemhub device CA"), (SERVICE, "hemhub service CA")):
        k = ec.generate_private_key(ec.SECP256R1())
        keys[which] = k
        certs[which] = _ca_cert(k, _name(cn), root_key, root_name, ISSUING_DAYS, 0, root)
    for which in (ROOT, DEVICE, SERVICE):
        _write_private(key_path(home, which), _key_pem(keys[which], passphrase))
        _write_public(cert_path(home, which), certs[which].public_bytes(serialization.Encoding.PEM))
    _write_public(client_ca_path(home), b"".join(
        certs[w].public_bytes(serialization.Encoding.PEM) for w in (DEVICE, SERVICE, ROOT)))
    write_crl(home, [], passphrase=passphrase, _keys=keys)
    return show(home)


def show(home=None) -> dict:
    """What `hubctl ca show` prints: each CA's subject, fingerprint, validity, key protection."""
    out = {"dir": str(ca_path(home)), "cas": {}}
    for which in (ROOT, DEVICE, SERVICE):
        c = load_cert(home, which)
        kp = key_path(home, which)
        head = kp.read_bytes().split(b"\n", 1)[0] if kp.is_file() else b""
        out["cas"][which] = {
            "subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"), "sha256": fingerprint(c),
            "not_after": c.not_valid_after_utc.isoformat(),
            "key": ("missing" if not kp.is_file() else
                    "passphrase" if b"ENCRYPTED" in head else "unencrypted"),
            "key_mode": oct(kp.stat().st_mode & 0o777) if kp.is_file() else None,
        }
    crl = crl_path(home)
    out["crl"] = str(crl) if crl.is_file() else None
    return out


# -- issuing -------------------------------------------------------------------------
def _leaf(subject_cn: str, public_key, issuer_key, issuer_cert: x509.Certificate, days: int,
          eku, san: list | None = None) -> x509.Certificate:
    now = _now()
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(issuer_cert.subject).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                        critical=False))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def issue_device_cert(home, csr_der: bytes, hub_id: str, *, passphrase: bytes | None = None
                      ) -> x509.Certificate:
    """Issue a hub certificate from the device CA for a CSR made on the hub.

    The CSR's signature must verify and its CN must be ``hub_id``; the
    certificate carries only the CN (the broker maps it to the MQTT username)."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError as e:
        raise HubStateError(f"The hub's CSR is not valid DER ({e}).") from None
    if not csr.is_signature_valid:
        raise HubStateError("The hub's CSR signature does not verify.",
                            hint="Run provisioning again; the hub makes a new key.")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != hub_id:
        raise HubStateError(f"The hub's CSR names {cns[0].value if cns else 'nobody'!r}, "
                            f"not its hub id {hub_id!r}.")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey) or \
            csr.public_key().curve.name != "secp256r1":
        raise HubStateError("The hub's CSR key is not P-256.")
    key = load_key(home, DEVICE, passphrase)
    return _leaf(hub_id, csr.public_key(), key, load_cert(home, DEVICE), DEVICE_CERT_DAYS,
                 ExtendedKeyUsageOID.CLIENT_AUTH)


def _issue_with_host_key(home, which: str, cn: str, out_dir: Path, stem: str, days: int, eku,
                         san, passphrase) -> IssuedCert:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    issuer_key = load_key(home, which, passphrase)
    issuer = load_cert(home, which)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(cn, key.public_key(), issuer_key, issuer, days, eku, san)
    pem = serialization.Encoding.PEM
    kp, cp, chp, rp = (out_dir / f"{stem}.key.pem", out_dir / f"{stem}.crt.pem",
                       out_dir / f"{stem}.chain.pem", out_dir / "root.crt.pem")
    _write_private(kp, _key_pem(key, None))
    root = load_cert(home, ROOT)
    chain = [issuer] if which == ROOT else [issuer, root]
    _write_public(cp, cert.public_bytes(pem))
    _write_public(chp, b"".join(c.public_bytes(pem) for c in chain))
    _write_public(rp, root.public_bytes(pem))
    return IssuedCert(cert, cp, kp, chp, rp)


def issue_server_cert(home, out_dir, *, hosts=("127.0.0.1", "localhost"), name: str = "broker",
                      passphrase: bytes | None = None, days: int = SERVER_CERT_DAYS) -> IssuedCert:
    """Issue the broker's TLS server certificate, signed by the root CA.

    Writes OUT_DIR/NAME.key.pem (0600, unencrypted: Mosquitto reads it at
    start), NAME.crt.pem, NAME.chain.pem (the root) and root.crt.pem. ``hosts``
    become the SubjectAltName (IP addresses as iPAddress, others as dNSName;
    the first is also the CN). Hubs check it against HOME/ca/root.crt.pem
    (installed on each hub as /data/identity/root.der)."""
    if not hosts:
        raise UsageError("A server certificate needs at least one host name or address.")
    san = []
    for h in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            san.append(x509.DNSName(h))
    return _issue_with_host_key(home, ROOT, hosts[0], out_dir, name, days,
                                ExtendedKeyUsageOID.SERVER_AUTH, san, passphrase)


def issue_service_client_cert(home, name: str, out_dir, *, passphrase: bytes | None = None,
                              days: int = SERVICE_CERT_DAYS) -> IssuedCert:
    """Issue a client certificate for a fleet service, signed by the service CA.

    CN = "service:NAME" (never a valid hub id, so the broker's ACL can grant
    services their own rights). Writes OUT_DIR/service-NAME.key.pem (0600),
    .crt.pem, .chain.pem (service CA + root) and root.crt.pem (to check the
    broker)."""
    if not name or any(c in name for c in "/#+ \t\n"):
        raise UsageError(f"Service name {name!r} must be non-empty without '/', '#', '+' or spaces.")
    return _issue_with_host_key(home, SERVICE, SERVICE_CN_PREFIX + name, out_dir, f"service-{name}",
                                days, ExtendedKeyUsageOID.CLIENT_AUTH, None, passphrase)


# -- revocation ----------------------------------------------------------------------
def write_crl(home, revoked: list[tuple[int, datetime.datetime]], *,
              passphrase: bytes | None = None, _keys: dict | None = None) -> Path:
    """(Re)write HOME/ca/crl.pem: the device CA's CRL listing ``revoked``
    (serial, revocation time) plus the service CA's (empty) CRL, each valid
    CRL_DAYS."""
    now = _now()
    pem = b""
    for which in (DEVICE, SERVICE):
        key = (_keys or {}).get(which) or load_key(home, which, passphrase)
        issuer = load_cert(home, which)
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
             .last_update(now).next_update(now + datetime.timedelta(days=CRL_DAYS)))
        for serial, when in revoked if which == DEVICE else ():
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        pem += b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    _write_public(crl_path(home), pem)
    return crl_path(home)


def revoke_hub(home, hub_id: str, *, reason: str = "revoked", technician: str | None = None,
               passphrase: bytes | None = None) -> dict:
    """Revoke every certificate issued to ``hub_id``, record it in the
    inventory and rewrite the CRL. The broker reads the CRL at start (reload
    it: SIGHUP to mosquitto)."""
    from .inventory import Inventory

    inv = Inventory(_home.db_path(_home.home(home)))
    if inv.hub(hub_id) is None and not inv.certificates_of(hub_id):
        raise HubNotFoundError(f"Hub {hub_id} is not in the inventory {inv.path}.",
                               hint="hubctl inventory list shows the hubs it knows.")
    load_key(home, DEVICE, passphrase)  # fail before recording anything if the key is locked
    serials = inv.revoke_hub(hub_id, reason=reason, technician=technician)
    path = refresh_crl(home, passphrase=passphrase)
    return {"hub_id": hub_id, "revoked_serials": serials, "crl": str(path)}


def refresh_crl(home, *, passphrase: bytes | None = None) -> Path:
    """Rewrite crl.pem from the inventory's revoked certificates (also renews its validity)."""
    from .inventory import Inventory

    inv = Inventory(_home.db_path(_home.home(home)))
    return write_crl(home, [(int(s, 16), when) for s, when in inv.revoked_serials()],
                     passphrase=passphrase)


# -- CLI -----------------------------------------------------------------------------
def _cmd_init(args) -> int:
    info = init_ca(args.home, read_passphrase(args.passphrase_file))
    return _print_show(info, args.json, created=True)


def _cmd_show(args) -> int:
    return _print_show(show(args.home), args.json)


def _print_show(info: dict, as_json: bool, created: bool = False) -> int:
    if as_json:
        import json

        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    print(f"{'created' if created else 'provisioning'} CA in {info['dir']}")
    for which, c in info["cas"].items():
        print(f"  {which:<10} {c['subject']}")
        print(f"  {'':<10} sha256 {c['sha256']}  until {c['not_after'][:10]}  key: {c['key']}"
              f" ({c['key_mode']})")
    print(f"  crl        {info['crl']}")
    return 0


def _cmd_revoke(args) -> int:
    import getpass

    r = revoke_hub(args.home, args.hub_id, reason=args.reason,
                   technician=args.technician or getpass.getuser(),
                   passphrase=read_passphrase(args.passphrase_file))
    from . import audit

    audit.record(_home.db_path(_home.home(args.home)), "revoke", args.hub_id, "ok",
                 who=args.technician, detail={"serials": r["revoked_serials"]})
    if args.json:
        import json

        print(json.dumps(r, indent=1, sort_keys=True))
    else:
        print(f"revoked {len(r['revoked_serials'])} certificate(s) of {args.hub_id}; CRL {r['crl']} "
              f"(reload the broker: kill -HUP its pid)")
    return 0


def _cmd_crl(args) -> int:
    p = refresh_crl(args.home, passphrase=read_passphrase(args.passphrase_file))
    print(f"wrote {p}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ca", help="the provisioning CA: init, show, revoke a hub, renew the CRL")
    vs = p.add_subparsers(dest="cacmd", metavar="VERB", required=True)

    def common(x, passphrase=True):
        x.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
        if passphrase:
            x.add_argument("--passphrase-file", help="file whose first line is the CA passphrase "
                                                     f"(or ${PASSPHRASE_ENV})")
        x.add_argument("--json", action="store_true")

    x = vs.add_parser("init", help="create the root, device-issuing and service CAs in HOME/ca")
    common(x)
    x.set_defaults(func=_cmd_init)
    x = vs.add_parser("show", help="show the CAs: subjects, fingerprints, validity, key protection")
    common(x, passphrase=False)
    x.set_defaults(func=_cmd_show)
    x = vs.add_parser("revoke", help="revoke a hub's certificates (CRL for the broker)")
    x.add_argument("hub_id")
    x.add_argument("--reason", default="revoked", help="why (recorded in the inventory)")
    x.add_argument("--technician", help="who (default $USER)")
    common(x)
    x.set_defaults(func=_cmd_revoke)
    x = vs.add_parser("crl", help="rewrite HOME/ca/crl.pem (renews its validity)")
    common(x)
    x.set_defaults(func=_cmd_crl)
