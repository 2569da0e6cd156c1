"""hubctl provision: give a flashed hub its identity and settings for a home.

Seven steps, each recorded (inventory provision_runs, hub steps, audit log):

    1 check firmware        the hub answers, has a factory record, runs the
                            firmware version of this bench (and, with
                            --wifi-ssid, can join that network: nothing
                            unverified is stored)
    2 key and CSR           the hub makes its P-256 key (it never leaves the
                            hub) and a CSR with CN = hub id
    3 issue certificate     the device CA signs it; the certificate is recorded
                            in the inventory as *pending* before it reaches the hub
    4 install               certificate + device-CA chain, then the root CA
                            (trust anchor for the broker) and the settings;
                            the config is written last and names the certificate
    5 broker self-test      the hub connects to the broker over mutual TLS
                            (service.uplink_selftest_json; reported as not
                            available if this firmware has no such function)
    6 record in inventory   the pending certificate becomes the hub's active one
    7 label                 HOME/labels/<hub id>.svg and .png

Interrupted runs (cable pulled, power cut) never leave a half-identity that
looks valid: the inventory admits a hub (Inventory.certificate) only after
step 6; a re-run finds where the hub stands (service.provision_state_json):
no key or a key without certificate -> start again with a new key (any
certificate issued for the old key is superseded and goes to the CRL); a
certificate the inventory holds as pending -> resume at step 4; an active one ->
"already provisioned" unless --reprovision.

Secrets: the WiFi PSK is read from a file or a prompt, never argv; it goes to
the hub only after the hub has joined that network with it, and never to the
screen, a log, the audit log or the inventory.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from . import audit, ca
from . import home as _home
from .errors import HubctlError, UsageError
from .inventory import Inventory, now_iso

STEPS = (
    "check firmware",
    "key and CSR on the hub",
    "issue certificate",
    "install certificate, chain and config",
    "broker self-test",
    "record in inventory",
    "label",
)


class ProvisionError(HubctlError):
    """A step failed; the message names the step and what to do."""

    def __init__(self, step: int, message: str, *, hint: str | None = None, exit_code: int = 4):
        super().__init__(f"step {step} ({STEPS[step - 1]}) failed: {message}", hint=hint)
        self.step = step
        self.exit_code = exit_code


@dataclass
class Settings:
    site: str
    broker: str  # HOST:PORT
    wifi_ssid: str | None = None
    wifi_psk: str | None = field(default=None, repr=False)
    apn: str | None = None

    def broker_host_port(self) -> tuple[str, int]:
        host, sep, port = self.broker.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--broker {self.broker!r} is not HOST:PORT.", hint="Example: --broker 127.0.0.1:8883")
        return host, int(port)


@dataclass
class Result:
    port: str
    hub_id: str | None = None
    ok: bool = False
    steps: list[dict] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0
    resumed: bool = False
    cert_sha256: str | None = None
    label: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"port": self.port, "hub_id": self.hub_id, "ok": self.ok, "steps": self.steps,
                "error": self.error, "resumed": self.resumed, "cert_sha256": self.cert_sha256,
                "label": self.label, "seconds": round(self.seconds, 2)}


Progress = Callable[[str, int, str, "str | None"], None]  # (port, step, status, detail)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _service_functions(con) -> set[str]:
    """The service functions this hub's firmware offers (optional ones come with later issues)."""
    out = con.exec("import hemhub.service as _s\nprint(' '.join(n for n in dir(_s) if n.endswith('_json')))\n")
    return set(out.split())


def _fresh_heap(con) -> None:
    """Soft-reset the hub inside the raw REPL: the next step starts with the whole
    heap (provisioning's imports fragment it; TLS needs large blocks)."""
    con.enter(soft_reset=True, what="while restarting the hub")


class _Run:
    def __init__(self, port: str, settings: Settings, *, home, reprovision: bool, technician: str,
                 passphrase: bytes | None, expected_version: str, progress: Progress | None,
                 selftest: bool = True):
        self.selftest = selftest
        self.port = port
        self.s = settings
        self.home = _home.home(home)
        self.inv = Inventory(_home.db_path(self.home))
        self.reprovision = reprovision
        self.technician = technician
        self.passphrase = passphrase
        self.expected_version = expected_version
        self.progress = progress
        self.result = Result(port)
        self.facts: dict = {}
        self.steps = [{"n": i + 1, "name": n, "result": "not run", "detail": None}
                      for i, n in enumerate(STEPS)]
        self.result.steps = self.steps

    def _mark(self, n: int, result: str, detail: str | None = None) -> None:
        self.steps[n - 1]["result"] = result
        self.steps[n - 1]["detail"] = detail
        if self.progress:
            self.progress(self.port, n, result, detail)

    def run(self) -> Result:
        from .transport import HubConsole

        t0 = time.monotonic()
        run_id = self.inv.start_run(self.port, self.technician, self.s.site)
        step = 1
        try:
            host, port = self.s.broker_host_port()
            # The CA must be usable before anything changes on the hub.
            try:
                ca.load_cert(self.home, ca.ROOT)
                ca.load_key(self.home, ca.DEVICE, self.passphrase)
            except HubctlError as e:
                step = 3
                raise ProvisionError(3, str(e), exit_code=e.exit_code) from None
            self._mark(1, "running")
            try:
                con = HubConsole(self.port)
            except HubctlError as e:
                raise ProvisionError(1, str(e), exit_code=e.exit_code) from None
            with con:
                mode, state = self._check(con)
                step = 2
                if mode == "resume":
                    cert_der, fp = self._resume(state)
                else:
                    csr = self._csr(con)
                    step = 3
                    cert_der, fp = self._issue(csr)
                step = 4
                _fresh_heap(con)
                self._install(con, cert_der, fp, mode, host, port)
                step = 5
                _fresh_heap(con)
                self._selftest(con, host, port)
            step = 6
            self._mark(6, "running")
            self.inv.complete(self.result.hub_id, self.facts, fp, self.steps)
            self._mark(6, "ok")
            step = 7
            self._mark(7, "running")
            from .label import write_label

            paths = write_label(_home.labels_dir(self.home), {**self.facts, "cert_sha256": fp})
            self.result.label = [str(p) for p in paths]
            self._mark(7, "ok", str(paths[0].with_suffix(".{svg,png}")))
            self.result.ok = True
            self.result.cert_sha256 = fp
        except ProvisionError as e:
            self._fail(e.step, e)
        except HubctlError as e:  # lost the console mid-step, and the like
            self._fail(step, ProvisionError(step, str(e), exit_code=e.exit_code))
        except Exception as e:  # the hub raised, or a bug: still recorded, never half-reported
            from mpremote.transport import TransportExecError

            if isinstance(e, TransportExecError):
                lines = e.error_output.strip().splitlines()
                msg = f"the hub raised {lines[-1] if lines else 'an error'}"
            else:
                msg = f"{type(e).__name__}: {e}"
            self._fail(step, ProvisionError(step, msg, exit_code=1))
        finally:
            self.result.seconds = time.monotonic() - t0
            failed = next((s["name"] for s in self.steps if s["result"] == "failed"), None)
            self.inv.finish_run(run_id, hub_id=self.result.hub_id, firmware=self.facts.get("firmware"),
                                result="ok" if self.result.ok else "failed", failed_step=failed,
                                steps=self.steps)
            if self.result.hub_id and not self.result.ok:
                self.inv.record_failure(self.result.hub_id, self.facts, self.steps)
            audit.record(_home.db_path(self.home), "provision", self.result.hub_id or self.port,
                         "ok" if self.result.ok else "failed", who=self.technician,
                         detail={"port": self.port, "site": self.s.site,
                                 "firmware": self.facts.get("firmware"),
                                 "cert_sha256": self.result.cert_sha256,
                                 "failed_step": failed, "resumed": self.result.resumed,
                                 "reprovision": self.reprovision})
        return self.result

    def _fail(self, step: int, e: ProvisionError) -> None:
        self.result.error = str(e)
        self.result.exit_code = e.exit_code
        self._mark(step, "failed", str(e).split(": ", 1)[-1])

    # -- steps --------------------------------------------------------------------
    def _check(self, con) -> tuple[str, dict]:
        try:
            st = con.call("service", "status_json")
        except HubctlError as e:
            raise ProvisionError(1, str(e), exit_code=e.exit_code) from None
        if st.get("factory") != "ok" or not st.get("serial"):
            raise ProvisionError(1, f"the hub on {self.port} has no valid factory record "
                                    f"({st.get('factory')}).",
                                 hint="Flash it first: hubctl flash --port PORT --runtime IMAGE.bin")
        self.result.hub_id = st["serial"]
        self.facts = {"hub_id": st["serial"], "serial": st["serial"], "hw_rev": st.get("hw_rev"), "board": st.get("board"),
                      "mac": st.get("mac"), "firmware": st.get("firmware"), "site": self.s.site,
                      "broker": self.s.broker, "technician": self.technician}
        if st.get("firmware") != self.expected_version:
            raise ProvisionError(1, f"the hub runs firmware {st.get('firmware')}, this bench provisions "
                                    f"{self.expected_version}.",
                                 hint=f"Install the current firmware: hubctl deploy --port {self.port}")
        self.functions = _service_functions(con)
        if "provision_state_json" not in self.functions:
            raise ProvisionError(1, "this firmware has no provisioning service.",
                                 hint=f"Install the current firmware: hubctl deploy --port {self.port}")
        state = con.call("service", "provision_state_json")
        if state.get("hub_id") != st["serial"]:
            raise ProvisionError(1, f"the hub's id {state.get('hub_id')!r} does not match its serial.")
        mode = "new"
        if state["identity"] == "certified":
            known = self.inv.certificate_by_sha256(state["cert_sha256"])
            if self.reprovision:
                mode = "new"
            elif known and known["hub_id"] == st["serial"] and known["status"] == "pending":
                mode = "resume"
            elif known and known["status"] == "active":
                h = self.inv.hub(st["serial"]) or {}
                raise ProvisionError(1, f"hub {st['serial']} is already provisioned (site "
                                        f"{h.get('site')}, by {h.get('technician')} at "
                                        f"{h.get('provisioned_at')}).",
                                     hint="To give it a new identity and settings, run again with "
                                          "--reprovision (its old certificate is revoked).")
            elif known:
                raise ProvisionError(1, f"hub {st['serial']} holds a certificate the inventory lists as "
                                        f"{known['status']}.",
                                     hint="Give it a new identity: run again with --reprovision.")
            else:
                raise ProvisionError(1, f"hub {st['serial']} holds a certificate this inventory "
                                        f"({self.inv.path}) never issued (another CA or bench?).",
                                     hint="Check --home; to replace that identity, run again with "
                                          "--reprovision.")
        if self.s.wifi_ssid:
            if "wifi_check_json" not in self.functions:
                raise ProvisionError(1, "this firmware cannot check WiFi credentials, so they are not "
                                        "stored.", hint="Provision without --wifi-ssid (cellular), or "
                                                        "install firmware with WiFi support.")
            r = con.call("service", "wifi_check_json", self.s.wifi_ssid, self.s.wifi_psk or "")
            if not r.get("ok"):
                raise ProvisionError(1, f"the hub could not join WiFi {self.s.wifi_ssid!r}: "
                                        f"{r.get('error') or 'no reason given'}. Nothing was stored.",
                                     hint="Check the network name, that the hub is in range, and the "
                                          "PSK file.")
        self._mark(1, "ok", f"{st['serial']} firmware {st['firmware']}"
                            + (", WiFi joined" if self.s.wifi_ssid else "")
                            + (", resuming an interrupted run" if mode == "resume" else ""))
        return mode, state

    def _resume(self, state: dict) -> tuple[bytes, str]:
        known = self.inv.certificate_by_sha256(state["cert_sha256"])
        self.result.resumed = True
        self._mark(2, "skipped", "key already made (interrupted run)")
        self._mark(3, "skipped", f"certificate {known['serial']} already issued and installed")
        return known["der"], known["sha256"]

    def _csr(self, con) -> bytes:
        self._mark(2, "running")
        if self.reprovision:
            old = self.inv.supersede_active(self.result.hub_id, "superseded by reprovisioning")
            if old:
                ca.refresh_crl(self.home, passphrase=self.passphrase)
        reply = con.call("service", "identity_csr_json", bool(self.reprovision))
        if reply.get("hub_id") != self.result.hub_id:
            raise ProvisionError(2, f"the CSR names {reply.get('hub_id')!r}, not {self.result.hub_id!r}.")
        self._mark(2, "ok")
        return base64.b64decode(reply["csr"])

    def _issue(self, csr: bytes) -> tuple[bytes, str]:
        self._mark(3, "running")
        try:
            cert = ca.issue_device_cert(self.home, csr, self.result.hub_id, passphrase=self.passphrase)
        except HubctlError as e:
            raise ProvisionError(3, str(e), exit_code=e.exit_code) from None
        der = cert.public_bytes(Encoding.DER)
        fp = ca.fingerprint(cert)
        superseded = self.inv.record_issued(self.result.hub_id, self.facts, cert.serial_number, fp, der)
        if superseded:
            ca.refresh_crl(self.home, passphrase=self.passphrase)
        self._mark(3, "ok", f"serial {cert.serial_number:x}, sha256 {fp[:16]}")
        return der, fp

    def _install(self, con, cert_der: bytes, fp: str, mode: str, host: str, port: int) -> None:
        self._mark(4, "running")
        root = ca.load_cert(self.home, ca.ROOT).public_bytes(Encoding.DER)
        if mode != "resume":
            chain = ca.load_cert(self.home, ca.DEVICE).public_bytes(Encoding.DER)
            con.call("service", "identity_install_json", _b64(cert_der), _b64(chain))
        settings = {"site": self.s.site, "broker_host": host, "broker_port": port,
                    "wifi": {"ssid": self.s.wifi_ssid, "psk": self.s.wifi_psk} if self.s.wifi_ssid else None,
                    "apn": self.s.apn,
                    "provisioned": {"cert_sha256": fp, "at": now_iso()}}
        con.call("service", "provision_install_json", json.dumps(settings), _b64(root))
        state = con.call("service", "provision_state_json")
        if state.get("cert_sha256") != fp or state.get("config_cert_sha256") != fp:
            raise ProvisionError(4, "the hub does not report the certificate and config just installed.",
                                 hint="Run provisioning again.")
        self._mark(4, "ok")

    def _selftest(self, con, host: str, port: int) -> None:
        self._mark(5, "running")
        if not self.selftest:
            self._mark(5, "skipped", "skipped on request (--no-selftest)")
            return
        if "uplink_selftest_json" not in self.functions:
            self._mark(5, "skipped", "not available in this firmware (no service.uplink_selftest_json)")
            return
        r = con.call("service", "uplink_selftest_json", host, port)
        if not r.get("ok"):
            raise ProvisionError(5, f"the hub could not reach the broker {host}:{port} over mutual TLS: "
                                    f"{r.get('error') or 'no reason given'}.",
                                 hint="Check --broker, that the broker runs and trusts this CA "
                                      "(HOME/ca/client-ca.pem), and the hub's network; then run "
                                      "provisioning again (it resumes).")
        self._mark(5, "ok", r.get("detail") or "CONNACK accepted")


def provision(port: str, settings: Settings, *, home=None, reprovision: bool = False,
              technician: str | None = None, passphrase: bytes | None = None,
              expected_version: str | None = None, progress: Progress | None = None,
              selftest: bool = True) -> Result:
    """Provision the hub on ``port`` (a serial port, a pty, or a virtual hub's
    DIR). Never raises for a hub-side failure: the Result says which step failed."""
    from .build import firmware_version
    from .cli import _resolve_port

    settings.broker_host_port()
    try:
        real_port = _resolve_port(port)
    except HubctlError as e:
        r = Result(port, error=f"step 1 ({STEPS[0]}) failed: {e}", exit_code=e.exit_code)
        r.steps = [{"n": i + 1, "name": n, "result": "failed" if i == 0 else "not run",
                    "detail": str(e) if i == 0 else None} for i, n in enumerate(STEPS)]
        audit.record(_home.db_path(_home.home(home)), "provision", port, "failed", who=technician,
                     detail={"port": port, "failed_step": STEPS[0]})
        return r
    run = _Run(real_port, settings, home=home, reprovision=reprovision,
               technician=audit.technician(technician), passphrase=passphrase,
               expected_version=expected_version or firmware_version(), progress=progress,
               selftest=selftest)
    run.result.port = port
    return run.run()


def provision_many(ports: list[str], settings: Settings, *, progress: Progress | None = None,
                   **kw) -> list[Result]:
    """Provision several hubs in parallel, one thread each; one failure never
    stops the others."""
    results: list[Result | None] = [None] * len(ports)

    def one(i: int) -> None:
        try:
            results[i] = provision(ports[i], settings, progress=progress, **kw)
        except Exception as e:  # a bug or a host failure (disk, inventory): this unit only
            results[i] = Result(ports[i], error=f"provisioning stopped on an unexpected error: "
                                                f"{type(e).__name__}: {e}", exit_code=1)

    threads = [threading.Thread(target=one, args=(i,), name=f"provision-{p}") for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


# -- CLI -----------------------------------------------------------------------------
class _Table:
    """One live table (rich, TTY only): a row per unit, its current step."""

    def __init__(self, ports: list[str]):
        from rich.console import Console
        from rich.live import Live

        self.rows = {p: {"step": 0, "status": "waiting", "detail": ""} for p in ports}
        self.lock = threading.Lock()
        self.console = Console(stderr=True)
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def _render(self):
        from rich.table import Table

        t = Table(title="hubctl provision", expand=False)
        for col in ("unit", "step", "status", "detail"):
            t.add_column(col)
        for p, r in self.rows.items():
            colour = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(r["status"], "cyan")
            step = f"{r['step']}/7 {STEPS[r['step'] - 1]}" if r["step"] else "-"
            t.add_row(p, step, f"[{colour}]{r['status']}[/]", (r["detail"] or "")[:70])
        return t

    def update(self, port: str, step: int, status: str, detail: str | None) -> None:
        with self.lock:
            self.rows[port] = {"step": step, "status": status, "detail": detail or ""}
            self.live.update(self._render())


def _read_psk(args) -> str | None:
    if not args.wifi_ssid:
        if args.wifi_psk_file:
            raise UsageError("--wifi-psk-file without --wifi-ssid.")
        return None
    if args.wifi_psk_file:
        p = Path(args.wifi_psk_file)
        if not p.is_file():
            raise UsageError(f"The PSK file {p} does not exist.")
        lines = p.read_text().splitlines()
        psk = lines[0] if lines else ""
    elif sys.stdin.isatty():
        import getpass

        psk = getpass.getpass(f"WiFi PSK for {args.wifi_ssid!r}: ")
    else:
        raise UsageError("--wifi-ssid needs the PSK from --wifi-psk-file FILE (or a prompt on a terminal); "
                         "it is never taken from the command line.")
    if not 8 <= len(psk) <= 63:
        raise UsageError("A WPA2 PSK is 8 to 63 characters; the one given is not.",
                         hint="Check the PSK file (first line only).")
    return psk


def _cmd_provision(args) -> int:
    if bool(args.port) == bool(args.ports):
        raise UsageError("Give --port PORT for one hub or --ports P1,P2,... for a batch.")
    ports = [args.port] if args.port else [p.strip() for p in args.ports.split(",") if p.strip()]
    if len(set(ports)) != len(ports):
        raise UsageError("A port appears twice in --ports.")
    settings = Settings(site=args.site, broker=args.broker, wifi_ssid=args.wifi_ssid,
                        wifi_psk=_read_psk(args), apn=args.apn)
    settings.broker_host_port()
    if not args.site.strip():
        raise UsageError("--site must name the home or site.")
    expected = None
    if args.bundle:
        mf = Path(args.bundle) / "app" / "manifest.json"
        if not mf.is_file():
            raise UsageError(f"{args.bundle} is not a firmware build (no app/manifest.json).",
                             hint="Build one: hubctl build --out DIR")
        expected = json.loads(mf.read_text())["version"]
    kw = dict(home=args.home, reprovision=args.reprovision, technician=args.technician,
              passphrase=ca.read_passphrase(args.passphrase_file), expected_version=expected,
              selftest=not args.no_selftest)
    table = _Table(ports) if sys.stderr.isatty() and not args.json else None

    def plain(port, step, status, detail):
        if status != "running":
            print(f"{port}: step {step}/7 {STEPS[step - 1]}: {status}" + (f" ({detail})" if detail else ""),
                  file=sys.stderr, flush=True)

    progress = table.update if table else (None if args.json else plain)
    if table:
        table.live.start()
    try:
        results = provision_many(ports, settings, progress=progress, **kw)
    finally:
        if table:
            table.live.stop()
    if args.json:
        print(json.dumps({"results": [r.as_dict() for r in results],
                          "ok": sum(r.ok for r in results), "failed": sum(not r.ok for r in results)},
                         indent=1, sort_keys=True))
    else:
        for r in results:
            if r.ok:
                print(f"{r.port}: provisioned {r.hub_id} in {r.seconds:.1f} s"
                      + (" (resumed)" if r.resumed else "") + f"; label {r.label[0] if r.label else '-'}")
            else:
                print(f"{r.port}: FAILED: {r.error}")
        if len(results) > 1:
            print(f"{sum(r.ok for r in results)} of {len(results)} hubs provisioned")
    failed = [r for r in results if not r.ok]
    if not failed:
        return 0
    return failed[0].exit_code if len(results) == 1 else 1


def register(sub) -> None:
    p = sub.add_parser("provision", help="give hubs their identity and settings (one, or a batch in parallel)")
    p.add_argument("--port", help="serial port, a virtual hub's console pty, or its DIR")
    p.add_argument("--ports", help="several ports, comma-separated: provisioned in parallel")
    p.add_argument("--site", required=True, help="the home or site the hub goes to")
    p.add_argument("--broker", required=True, help="the MQTT broker as HOST:PORT")
    p.add_argument("--wifi-ssid", help="WiFi network (verified by the hub before it is stored)")
    p.add_argument("--wifi-psk-file", help="file whose first line is the WiFi PSK (else a prompt)")
    p.add_argument("--apn", help="cellular APN")
    p.add_argument("--reprovision", action="store_true",
                   help="replace the identity of an already provisioned hub (old certificate revoked)")
    p.add_argument("--no-selftest", action="store_true",
                   help="skip step 5, the on-hub broker self-test (bench without a broker); recorded")
    p.add_argument("--technician", help="who provisions (default $USER)")
    p.add_argument("--bundle", help="firmware build whose version the hub must run (default: the source tree's)")
    p.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    p.add_argument("--passphrase-file", help=f"the CA passphrase (or ${ca.PASSPHRASE_ENV})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_provision)
