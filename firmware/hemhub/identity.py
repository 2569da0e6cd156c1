"""Device identity, made on the hub (SYSTEM.md section 5).

A P-256 key pair is generated from os.urandom during provisioning; the private
key lives only in /data/identity/key and never leaves the hub: no function
here returns, prints or logs it. The hub emits a PKCS#10 CSR (RFC 2986) with
CN = its hub id (the factory serial); it installs the certificate it is given
only if that certificate names this hub and holds this hub's public key.

Files: key (32-byte scalar), csr.der, cert.der, chain.der (issuer
certificates, DER, concatenated). Each is written to a temporary name and
renamed, so a power cut leaves the old file or the new one.
"""
import os

from hemhub import factory
from hemhub.crypto import p256

DIR = "/data/identity"


class IdentityError(Exception):
    pass


def _path(name, base=DIR):
    return base + "/" + name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def hub_id():
    rec, problem = factory.read()
    if rec is None or not rec.get("serial"):
        raise IdentityError("no hub id: %s" % (problem or "factory record has no serial"))
    return rec["serial"]


def state(base=DIR):
    """none | csr (key made, waiting for a certificate) | certified."""
    if not _exists(_path("key", base)):
        return "none"
    return "certified" if _exists(_path("cert.der", base)) else "csr"


def _key(base):
    return p256.private_key_from_bytes(_read(_path("key", base)))


def generate_csr(hid, base=DIR, replace=False):
    """Make a new key pair and return the CSR (DER) for it.

    A certified hub keeps its identity unless replace=True (reprovisioning):
    then the old key and certificate are removed before the new key is made,
    so a half-done run never pairs a new key with an old certificate."""
    try:
        os.mkdir(base)
    except OSError:
        pass
    if state(base) == "certified" and not replace:
        raise IdentityError("hub is already certified; reprovisioning must ask to replace its identity")
    for name in ("cert.der", "chain.der", "csr.der"):
        try:
            os.remove(_path(name, base))
        except OSError:
            pass
    from hemhub.crypto.csr import make_csr  # provisioning only: not kept loaded

    d = p256.generate_private_key()
    _write(_path("key", base), p256.private_key_to_bytes(d))
    signer = p256.Signer(d, pool_size=1)
    try:
        csr = make_csr(signer, hid)
    finally:
        signer.close()
    _write(_path("csr.der", base), csr)
    return csr


def install_certificate(cert_der, hid, chain_der=b"", base=DIR):
    """Install this hub's certificate; IdentityError if it is not ours."""
    if state(base) == "none":
        raise IdentityError("no key on this hub: generate a CSR first")
    from hemhub.crypto.x509 import check_certificate

    d = _key(base)
    try:
        info = check_certificate(cert_der, p256.public_key(d), hid)
    except ValueError as e:
        raise IdentityError("certificate rejected: %s" % e) from None
    if chain_der:
        _write(_path("chain.der", base), chain_der)
    _write(_path("cert.der", base), cert_der)
    return info


def signer(pool_size=2, base=DIR):
    """A p256.Signer over the hub's key (precomputed nonces kept in RAM only)."""
    if state(base) == "none":
        raise IdentityError("no key on this hub")
    return p256.Signer(_key(base), pool_size=pool_size)


def public_key(base=DIR):
    return p256.public_key(_key(base))
