"""The MQTT broker: a generated Mosquitto 2.x configuration and the process that runs it.

Two TLS listeners on 127.0.0.1 (docs/broker.md, the uplink contract in protocol/uplink.md):

    hubs     mutual TLS; the client certificate must chain to the device-issuing CA
             (cafile = device CA + its root, nothing else); CRL checked; the certificate
             CN becomes the username *and* the client id (use_identity_as_username,
             use_username_as_clientid), so a hub can neither act under another hub's
             name nor take over its session. ACL patterns let a hub write only
             hemhub/<CN>/{alarm,rec,status,cmd/result} and read only hemhub/<CN>/{ack,cmd}.
    service  mutual TLS against the *service* CA only (a device certificate does not
             chain to it, so no hub can connect here); its ACL names the fleet
             service's CN alone: read hemhub/+/{alarm,rec,status,cmd/result},
             write hemhub/+/{ack,cmd}.

TLS 1.2 is the minimum on both. Queued QoS 1 messages persist across a broker
restart (persistence true), so "broker down, then back" loses nothing.

    Broker(home, port=8883, service_port=8884, material=None)
        write_config() -> Path     the .conf, ACL files and copies of the TLS material
        start() / stop() / reload_crl() (SIGHUP) / running / with-statement; start() writes the config first
    broker_material(home) -> BrokerMaterial   from the provisioning CA (hubctl.ca)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import home as homedir
from .errors import HubctlError, HubStateError, UsageError

MOSQUITTO = "/usr/sbin/mosquitto"
DEFAULT_PORT = 8883
SERVICE_NAME = "fleet"
SERVICE_CN = "service:" + SERVICE_NAME  # hubctl.ca.issue_service_client_cert
TOPIC_ROOT = "hemhub"

# What a hub may do under its own id (the uplink contract), and what the fleet may do for all.
HUB_WRITE = ("alarm", "rec", "status", "cmd/result")
HUB_READ = ("ack", "cmd")


class BrokerError(HubctlError):
    """The broker could not be configured or started."""

    exit_code = 4


@dataclass(frozen=True)
class BrokerMaterial:
    """PEM files the broker needs; write_config() copies them into HOME/broker/tls.

    device_ca / service_ca  the device-issuing CA and the service CA (one certificate each)
    root                    the root above both (OpenSSL needs the chain to end at it)
    certfile / keyfile      the broker's server certificate and key (the hubs check it
                            against the root they hold)
    crlfile                 one CRL per client-issuing CA (ca.crl_path); each listener gets
                            only the CRL of its own CA, see docs/broker.md
    service_cn              the CN of the fleet service's client certificate
    """

    device_ca: Path
    service_ca: Path
    root: Path
    certfile: Path
    keyfile: Path
    crlfile: Path
    service_cn: str = SERVICE_CN


def broker_material(home: Path, passphrase: bytes | None = None) -> BrokerMaterial:
    """The broker's TLS material from the provisioning CA in HOME/ca (hubctl.ca).

    Issues the broker's server certificate (HOME/broker/tls/broker.*) the first time.
    """
    from . import ca

    home = Path(home)
    if not ca.exists(home):
        raise BrokerError(f"No provisioning CA in {ca.ca_path(home)}.",
                          hint=f"Create it first: hubctl ca init --home {home}")
    tls = homedir.broker_dir(home) / "tls"
    cert, key = tls / "broker.crt.pem", tls / "broker.key.pem"
    if not (cert.is_file() and key.is_file()):
        ca.issue_server_cert(home, tls, name="broker", passphrase=passphrase)
    return BrokerMaterial(device_ca=ca.cert_path(home, ca.DEVICE), service_ca=ca.cert_path(home, ca.SERVICE),
                          root=ca.root_cert_path(home), certfile=cert, keyfile=key, crlfile=ca.crl_path(home),
                          service_cn=SERVICE_CN)


def service_client_cert(home: Path, passphrase: bytes | None = None) -> tuple[Path, Path, Path]:
    """(certfile, keyfile, root) of the fleet service's client certificate, issued once
    by the service CA into HOME/broker/tls."""
    from . import ca

    tls = homedir.broker_dir(Path(home)) / "tls"
    cert, key = tls / f"service-{SERVICE_NAME}.crt.pem", tls / f"service-{SERVICE_NAME}.key.pem"
    if not (cert.is_file() and key.is_file()):
        ca.issue_service_client_cert(home, SERVICE_NAME, tls, passphrase=passphrase)
    return cert, key, ca.root_cert_path(home)


def split_crls(pem: bytes) -> dict[str, bytes]:
    """{issuer (RFC 4514): PEM} of every CRL in a PEM file."""
    from cryptography import x509

    out = {}
    for block in re.findall(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n?", pem, re.S):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as e:
            raise BrokerError(f"A CRL in the CRL file does not parse ({e}).",
                              hint="Rewrite it: hubctl ca crl.") from None
        out[crl.issuer.rfc4514_string()] = block if block.endswith(b"\n") else block + b"\n"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Mosquitto process on 127.0.0.1 with the configuration this module writes."""

    def __init__(self, home: Path | str, port: int = DEFAULT_PORT, service_port: int | None = None,
                 material: BrokerMaterial | None = None, mosquitto: str = MOSQUITTO):
        self.home = Path(home)
        self.dir = homedir.broker_dir(self.home)
        self.port = port or free_port()
        self.service_port = service_port or (self.port + 1 if port else free_port())
        if self.port == self.service_port:
            raise UsageError(f"The hub port and the service port are both {self.port}.",
                             hint="Give the service listener its own port (--service-port).")
        self._material = material
        self.mosquitto = mosquitto
        self.proc: subprocess.Popen | None = None

    # -- files ------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def material(self) -> BrokerMaterial:
        if self._material is None:
            self._material = broker_material(self.home)
        return self._material

    def tls_paths(self) -> dict[str, Path]:
        """Where the listeners' copies of the TLS material live under HOME/broker/tls."""
        d = self.dir / "tls"
        return {"hub_ca": d / "hub-ca.pem", "service_ca": d / "service-ca.pem", "cert": d / "server.pem",
                "key": d / "server.key", "hub_crl": d / "hub-crl.pem", "service_crl": d / "service-crl.pem"}

    def write_config(self) -> Path:
        """Write mosquitto.conf, the two ACL files and the TLS material; return the .conf path."""
        m = self.material
        for name, p in (("device CA", m.device_ca), ("service CA", m.service_ca), ("root CA", m.root),
                        ("server certificate", m.certfile), ("server key", m.keyfile), ("CRL", m.crlfile)):
            if not Path(p).is_file():
                raise BrokerError(f"The broker's {name} file {p} does not exist.",
                                  hint="Create the CA first: hubctl ca init --home DIR.")
        tls = self.tls_paths()
        tls["cert"].parent.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        root = Path(m.root).read_bytes()
        # Each listener trusts its own issuing CA (plus the root OpenSSL needs as anchor).
        _write(tls["hub_ca"], Path(m.device_ca).read_bytes() + root)
        _write(tls["service_ca"], Path(m.service_ca).read_bytes() + root)
        shutil.copyfile(m.certfile, tls["cert"])
        shutil.copyfile(m.keyfile, tls["key"])
        os.chmod(tls["key"], 0o600)
        self.update_crl(m.crlfile, reload=False)
        _write(self.dir / "hubs.acl", hub_acl().encode())
        _write(self.dir / "service.acl", service_acl(m.service_cn).encode())
        _write(self.conf_path, self.config_text().encode())
        return self.conf_path

    def config_text(self) -> str:
        tls = self.tls_paths()
        user = pwd.getpwuid(os.geteuid()).pw_name

        def listener(port, cafile, crlfile, acl, *extra):
            return [f"listener {port} 127.0.0.1", "protocol mqtt", f"cafile {cafile}", f"crlfile {crlfile}",
                    f"certfile {tls['cert']}", f"keyfile {tls['key']}", "tls_version tlsv1.2",
                    "require_certificate true", "use_identity_as_username true", *extra,
                    "allow_anonymous false", f"acl_file {acl}"]

        return "\n".join([
            "# Generated by hubctl broker (host/hubctl/broker.py); edits are overwritten.",
            "# docs/broker.md explains every line.",
            "per_listener_settings true",
            f"user {user}",  # never drop to another user: the files here belong to this one
            "persistence true",
            f"persistence_location {self.dir / 'data'}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_queued_messages 100000",
            "max_inflight_messages 50",
            "set_tcp_nodelay true",
            "",
            "# Hubs: device certificates only (the CRL names only the device CA: a certificate",
            "# from any other CA fails with 'unable to get certificate CRL'); CN = username = client id.",
            *listener(self.port, tls["hub_ca"], tls["hub_crl"], self.dir / "hubs.acl",
                      "use_username_as_clientid true"),
            "",
            "# The fleet service: service CA only; the ACL names only the service's CN.",
            *listener(self.service_port, tls["service_ca"], tls["service_crl"], self.dir / "service.acl"),
            "",
        ])

    def update_crl(self, crlfile: Path | bytes, *, reload: bool = True) -> None:
        """Install the CA's CRL file (path or PEM bytes): the device CA's CRL for the hub
        listener, the service CA's for the service listener; SIGHUP mosquitto if running."""
        from cryptography import x509

        data = crlfile if isinstance(crlfile, bytes) else Path(crlfile).read_bytes()
        crls = split_crls(data)
        m = self.material
        tls = self.tls_paths()
        for which, ca_file, dest in (("device", m.device_ca, tls["hub_crl"]),
                                     ("service", m.service_ca, tls["service_crl"])):
            issuer = x509.load_pem_x509_certificate(Path(ca_file).read_bytes()).subject.rfc4514_string()
            if issuer not in crls:
                raise BrokerError(f"The CRL file has no CRL from the {which} CA ({issuer}); without it "
                                  "the broker would refuse every client of that CA.",
                                  hint="Rewrite it: hubctl ca crl.")
            _write(dest, crls[issuer])
        if reload and self.running:
            self.reload_crl()

    # -- process ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Broker:
        if self.running:
            return self
        if not Path(self.mosquitto).exists():
            raise BrokerError(f"Mosquitto is not installed ({self.mosquitto} is missing).",
                              hint="Run tools/setup (it installs the Debian package mosquitto).")
        # From the current ports, ACLs and CRL: a .conf left by an earlier run may name other ports.
        self.write_config()
        for port in (self.port, self.service_port):
            if _accepts(port):
                raise BrokerError(f"Port {port} on 127.0.0.1 is already in use.",
                                  hint="Stop what listens there or choose another --port.")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.mosquitto, "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with code {self.proc.returncode}: {self.log_tail()}",
                                  hint=f"See {self.log_path}.")
            if _accepts(self.port) and _accepts(self.service_port) and self._tls_ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections within {timeout:g} s: {self.log_tail()}")

    def _tls_ready(self) -> bool:
        """A TLS handshake on the hub port completes: the server side is loaded and answering."""
        ctx = ssl.create_default_context(cafile=str(self.tls_paths()["hub_ca"]))
        ctx.check_hostname = False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                with ctx.wrap_socket(s) as t:
                    t.version()
            return True
        except (OSError, ssl.SSLError):
            return False

    def reload_crl(self, timeout: float = 10.0) -> None:
        """SIGHUP: mosquitto re-reads its configuration, ACLs, certificates and CRL.

        Returns once mosquitto has logged the reload; it reloads in its one event
        thread right after that line, so every connection it accepts later is
        checked against the new CRL. Connections already open stay open (a revoked
        hub is cut off at its next connect; docs/broker.md)."""
        if not self.running:
            raise HubStateError("The broker is not running.", hint="Start it: hubctl broker run.")
        before = self.log_path.read_bytes().count(b"Reloading config.")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_path.read_bytes().count(b"Reloading config.") <= before:
            if time.monotonic() > deadline or not self.running:
                raise BrokerError(f"mosquitto did not reload its configuration: {self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def hub_acl() -> str:
    lines = ["# Hubs: each under its own id (%u = certificate CN) only.",
             "# mosquitto refuses a pattern substitution for a username with + or # in it."]
    lines += [f"pattern write {TOPIC_ROOT}/%u/{t}" for t in HUB_WRITE]
    lines += [f"pattern read {TOPIC_ROOT}/%u/{t}" for t in HUB_READ]
    return "\n".join(lines) + "\n"


def service_acl(service_cn: str) -> str:
    lines = ["# The fleet service only (by its certificate CN); nobody else has any topic here.",
             f"user {service_cn}"]
    lines += [f"topic read {TOPIC_ROOT}/+/{t}" for t in HUB_WRITE]
    lines += [f"topic write {TOPIC_ROOT}/+/{t}" for t in HUB_READ]
    return "\n".join(lines) + "\n"


# -- CLI ------------------------------------------------------------------------------
def _cli_broker(args) -> Broker:
    from .ca import read_passphrase

    h = homedir.home(args.home)
    return Broker(h, port=args.port, service_port=args.service_port,
                  material=broker_material(h, read_passphrase(args.passphrase_file)))


def cmd_broker_config(args) -> int:
    b = _cli_broker(args)
    path = b.write_config()
    print(f"wrote {path} (hubs on 127.0.0.1:{b.port}, fleet service on 127.0.0.1:{b.service_port})")
    return 0


def cmd_broker_run(args) -> int:
    b = _cli_broker(args)
    b.start()
    print(f"mosquitto running (pid {b.proc.pid}): hubs on 127.0.0.1:{b.port}, "
          f"fleet service on 127.0.0.1:{b.service_port}; log {b.log_path}; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGHUP, lambda *_: b.reload_crl())

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)  # never leave mosquitto running without us
    try:
        while b.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        code = b.proc.returncode if b.proc and b.proc.poll() is not None else None
        b.stop()
    if code not in (None, 0):
        raise BrokerError(f"mosquitto exited with code {code}: {b.log_tail()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("broker", help="the MQTT broker: write its Mosquitto configuration, run it")
    bs = p.add_subparsers(dest="bcmd", metavar="VERB", required=True)
    for name, func, helptext in (
        ("config", cmd_broker_config, "write HOME/broker/mosquitto.conf, ACLs and TLS material"),
        ("run", cmd_broker_run, "write the configuration and run mosquitto in the foreground"),
    ):
        x = bs.add_parser(name, help=helptext)
        x.add_argument("--home", help="hubctl home (default $HEMHUB_HOME or ~/.local/share/hemhub)")
        x.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"hub listener port (default {DEFAULT_PORT})")
        x.add_argument("--service-port", type=int, help="fleet service listener port (default port + 1)")
        x.add_argument("--passphrase-file", help="CA passphrase (only to issue the broker's certificate "
                                                 "the first time)")
        x.set_defaults(func=func)
