"""The TLS context for the uplink: mutual TLS with the hub's device identity.

    ctx, checker = context(base="/data/identity", clock=time.time)

* client certificate: cert.der, key from the 32-byte scalar in `key` (given to
  mbedTLS as an RFC 5915 ECPrivateKey, DER, built here in RAM and dropped);
* server verification: chain to root.der, name checked by mbedTLS against
  `server_hostname`; CERT_REQUIRED always (no CERT_NONE anywhere);
* validity dates: MicroPython's mbedTLS builds do not check them (no
  MBEDTLS_HAVE_TIME_DATE), so `checker` (the verify callback) does, when the
  hub's clock is set: protocol/uplink.md section 5.
"""
import tls

from hemhub.uplink import x509time

DIR = "/data/identity"
CLOCK_SET_AFTER = 1577836800  # 2020-01-01: an RTC below this was never set
SLACK_S = 600


class TlsSetupError(Exception):
    """The hub's identity files cannot make a TLS context (names the file and the fix)."""


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise TlsSetupError("%s %s is missing: provision the hub (hubctl provision)" % (what, path))  # noqa: B904


# RFC 5915 ECPrivateKey { version 1, privateKey OCTET STRING (32), [0] prime256v1 }
_SEC1_HEAD = b"\x30\x31\x02\x01\x01\x04\x20"
_SEC1_TAIL = b"\xa0\x0a\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"


def sec1_der(scalar):
    if len(scalar) != 32:
        raise TlsSetupError("the device key is %d bytes, not 32: reprovision the hub" % len(scalar))
    return _SEC1_HEAD + scalar + _SEC1_TAIL


class DateCheck:
    # The verify callback: mbedTLS calls it for each certificate of the
    # server's chain (depth 0 = the server's own). Returns 0 to accept.
    def __init__(self, clock):
        self.clock = clock
        self.error = None  # why the last handshake was refused by this check
        self.not_before = 0  # of the server certificate: a lower bound of true time

    def __call__(self, cert, depth):
        try:
            nb, na = x509time.validity(cert)
        except ValueError:
            self.error = "cert-unparsable"
            return -1
        if depth == 0:
            self.not_before = nb
        now = self.clock()
        if now < CLOCK_SET_AFTER:
            return 0  # clock not set: dates cannot be checked (protocol/uplink.md 5)
        # Not yet valid by our clock means our clock is behind (our root signed
        # it): accepted, and the fleet's time corrects the clock (uplink.md 5).
        if now - SLACK_S > na:
            self.error = "cert-expired"
            return -1
        return 0


def context(base=DIR, clock=None):
    import time

    cert = _read(base + "/cert.der", "device certificate")
    key = sec1_der(_read(base + "/key", "device key"))
    root = _read(base + "/root.der", "root CA certificate")
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    try:
        ctx.load_cert_chain(cert, key)
    except (ValueError, OSError) as e:
        raise TlsSetupError("device certificate or key rejected by TLS (%s): reprovision the hub" % e)  # noqa: B904
    try:
        ctx.load_verify_locations(root)
    except (ValueError, OSError) as e:
        raise TlsSetupError("root.der rejected by TLS (%s): reinstall it (hubctl provision)" % e)  # noqa: B904
    check = DateCheck(clock or time.time)
    ctx.verify_callback = check
    return ctx, check
