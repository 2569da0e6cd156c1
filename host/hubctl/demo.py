"""hubctl demo: the main job end to end on this machine, a virtual fleet.

In one home directory (default var/demo): the provisioning CA (hubctl.ca), a real
Mosquitto (hubctl.broker), the fleet service (hubctl.fleet) and N virtual hubs, each
provisioned through hubctl.provision over its console as a real hub is, given WiFi
and a 4G APN in its simulated world, with simulated patients' devices enrolled. The
devices measure, a door opens and a pendant is pressed; the readings and alarms reach
the fleet verified; then one hub's WiFi goes away and it carries on over 4G.

`VirtualFleet` is the same machinery as a library: tests/e2e/test_fleet_e2e.py and
benchmarks/bench_alarm_latency.py drive it.

    with VirtualFleet(home) as vf:          # CA, broker, fleet service
        hubs = vf.add_hubs(2, bundle)       # virtual hubs booted (detached supervisors)
        vf.provision(hubs)                  # hubctl.provision, in parallel
        for h in hubs: vf.configure(h)      # link timings, devices; app restarts
        t0 = vf.door(hubs[0]); vf.wait_alarm(hubs[0], t0)   # latency to stored-and-acked
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import home as homedir
from .errors import HubctlError, HubStateError, UsageError

PSK = "demo-wifi-psk"  # the simulated access points' key
APN = "iot.demo"
DOOR_GPIO = 25
# Short link timings so a lost WiFi fails over in about a second (defaults: docs/link.md).
LINK_TIMINGS = {"check_ms": 100, "wifi_connect_ms": 1500, "backoff_ms": 200, "backoff_max_ms": 800,
                "modem_cmd_ms": 300, "modem_boot_ms": 800, "modem_reg_ms": 1000, "modem_pwrkey_ms": 120,
                "modem_guard_ms": 300, "ppp_ms": 1000}
# The simulated patients' devices of each home (docs/vhub.md, Radio; docs/sensing.md).
GATT_KINDS = ("scale", "oximeter", "bp", "thermometer")
BTHOME_KINDS = ("door", "pendant")
MEASUREMENTS = {"scale": {"kg": 72.35}, "oximeter": {"spo2": 97, "pr": 64},
                "bp": {"sys": 128, "dia": 84, "pulse": 66}, "thermometer": {"celsius": 37.2}}


class DemoError(HubctlError):
    """The virtual fleet did not do what it should; the message says what was seen."""

    exit_code = 1


class HeapBlocked(DemoError):
    """The hub's application ran out of heap blocks (MemoryError on its console;
    docs/decisions/0004-heap-on-a-64-bit-interpreter.md)."""


def _timed_out(h, message: str) -> DemoError:
    """The error for a hub that did not do something in time: HeapBlocked when
    its console shows a MemoryError since its application started, else a plain
    DemoError."""
    log = h.console_log()
    if b"MemoryError" in log[h.app_mark:]:
        return HeapBlocked(message + " (the hub reported MemoryError: decision 0004)")
    return DemoError(message)


@dataclass
class DemoHub:
    """One virtual hub of the fleet, with its home network and patients' devices."""

    name: str
    dir: Path
    hub_id: str
    ssid: str
    apn: str | None = APN
    devices: dict[str, dict] = field(default_factory=dict)  # kind -> {"addr", "key"}
    proc: subprocess.Popen | None = None
    pid: int | None = None
    app_mark: int = 0  # console log length when the application was last (re)started

    def world(self):
        from .vhub.world import WorldClient

        return WorldClient.for_hub(self.dir)

    @property
    def console(self) -> str:
        return (self.dir / "console").read_text().strip()

    def console_log(self) -> bytes:
        try:
            return (self.dir / "console.log").read_bytes()
        except OSError:
            return b""


class VirtualFleet:
    """CA, broker, fleet service and virtual hubs in one home directory."""

    #: how a hub's supervisor is started (DIR is appended); its own process, so it can outlive us
    SUPERVISOR = (sys.executable, "-m", "hubctl.vhub.supervisor")

    def __init__(self, home: Path | str, *, log=None, batch: int = 512):
        self.home = Path(home).absolute()
        self.log = log or (lambda msg: None)
        self.batch = batch
        self.broker = None
        self.store = None
        self.service = None
        self.hubs: list[DemoHub] = []
        self.acked_at: dict[tuple[str, int], float] = {}  # first ack sent by the fleet, host clock
        self._acks = threading.Condition()

    # -- the fleet side ------------------------------------------------------------------------
    def start(self) -> VirtualFleet:
        from . import ca
        from .broker import Broker, broker_material, free_port

        self.home.mkdir(parents=True, exist_ok=True)
        if not ca.exists(self.home):
            ca.init_ca(self.home)
            self.log(f"created the provisioning CA in {ca.ca_path(self.home)}")
        self.broker = Broker(self.home, port=free_port(), service_port=free_port(),
                             material=broker_material(self.home))
        self.broker.start()
        self.log(f"mosquitto (pid {self.broker.proc.pid}): hubs on 127.0.0.1:{self.broker.port}, "
                 f"fleet service on 127.0.0.1:{self.broker.service_port}, mutual TLS, CRL, per-hub ACLs")
        self.start_service()
        return self

    def start_service(self) -> None:
        from .broker import service_client_cert
        from .fleet.ingest import InventoryRegistry
        from .fleet.service import FleetService
        from .fleet.store import SQLiteStore

        db = homedir.db_path(self.home)
        cert, key, root = service_client_cert(self.home)
        self.store = SQLiteStore(db)
        self.service = FleetService(self.store, InventoryRegistry(db, ttl=0), "127.0.0.1", self.broker.service_port,
                                    certfile=cert, keyfile=key, cafile=root, batch=self.batch)
        self._watch_acks(self.service)
        self.service.start()
        if not self.service.wait_connected(15):
            raise DemoError("The fleet service did not connect to the broker within 15 s.",
                            hint=f"See {self.broker.log_path}.")
        self.log(f"fleet service connected; store {db}")

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _watch_acks(self, svc) -> None:
        """Note when the fleet sends each application ack (after its store committed)."""
        import cbor2

        publish = svc.client.publish

        def timed_publish(topic, payload=None, *a, **kw):
            info = publish(topic, payload, *a, **kw)
            if topic.endswith("/ack"):
                now = time.time()
                hub = topic.split("/")[1]
                with self._acks:
                    for first, last in cbor2.loads(payload)["acks"]:
                        for seq in range(first, last + 1):
                            self.acked_at.setdefault((hub, seq), now)
                    self._acks.notify_all()
            return info

        svc.client.publish = timed_publish

    # -- hubs ----------------------------------------------------------------------------------
    def add_hubs(self, n: int, bundle, *, apn: bool = True) -> list[DemoHub]:
        """Create (or reuse, with this firmware installed and data erased) hubs hub1..hubN and boot them."""
        from .vhub.hubdir import HubDir

        out = []
        for i in range(len(self.hubs) + 1, len(self.hubs) + n + 1):
            d = self.home / f"hub{i}"
            hub = HubDir.create(d, bundle, force=(d / "hub.json").exists())
            h = DemoHub(f"hub{i}", d, hub.serial, ssid=f"home-{i}", apn=APN if apn else None)
            self.hubs.append(h)
            out.append(h)
            self.boot(h)
        return out

    def boot(self, h: DemoHub) -> None:
        """Start the hub's supervisor as its own process (it outlives us with --keep)."""
        from .vhub.world import WorldClient

        log = open(h.dir / "supervisor.log", "ab")
        h.proc = subprocess.Popen([*self.SUPERVISOR, str(h.dir)],
                                  stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        log.close()
        line = h.proc.stdout.readline().decode().strip()
        h.proc.stdout.close()
        if not line.startswith("console: "):
            h.proc.wait(10)
            tail = (h.dir / "supervisor.log").read_text(errors="replace").strip().splitlines()
            raise HubStateError(f"virtual hub {h.name} did not start: {tail[-1] if tail else h.proc.returncode}")
        h.pid = h.proc.pid
        with WorldClient.for_hub(h.dir) as w:
            w.wait_ready(20)
            w.call("clock", set=int(time.time()))
            w.net_ap(h.ssid, psk=PSK, rssi=-50 - 3 * len(self.hubs))
            w.net_modem(boot_ms=100, pwrkey_ms=100, reg_ms=100, csq=18)
            w.net("wifi", connect_ms=200, ppp_ms=50)

    def stop_hub(self, h: DemoHub) -> None:
        from .vhub.world import WorldClient

        try:
            with WorldClient.for_hub(h.dir, timeout=5) as w:
                w.stop()
        except HubctlError:
            pass
        if h.proc is not None:
            try:
                h.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(h.proc.pid, signal.SIGKILL)
                h.proc.wait(5)
            h.proc = None

    def provision(self, hubs: list[DemoHub], *, progress=None) -> None:
        """hubctl provision for each hub in parallel: key on the hub, certificate from the CA,
        WiFi checked by the hub itself, broker self-test over mutual TLS."""
        from . import provision as pv

        for h in hubs:
            s = pv.Settings(site=f"demo home {h.name}", broker=f"127.0.0.1:{self.broker.port}",
                            wifi_ssid=h.ssid, wifi_psk=PSK, apn=h.apn)
            r = pv.provision(str(h.dir), s, home=self.home, progress=progress, technician="demo")
            if not r.ok:
                raise DemoError(f"provisioning {h.name} failed: {r.error}")
            self.log(f"{h.name}: provisioned {r.hub_id} in {r.seconds:.1f} s (certificate {r.cert_sha256[:12]}, "
                     f"label {Path(r.label[0]).name})")

    def enrol(self, h: DemoHub, kinds=GATT_KINDS + BTHOME_KINDS) -> None:
        """Put the patient's devices in the hub's world (addresses unique in the fleet)."""
        n = int(h.name.removeprefix("hub"))
        with h.world() as w:
            for i, kind in enumerate(kinds, 1):
                addr = f"C0:FF:EE:{n:02X}:00:{i:02X}" if kind in GATT_KINDS else f"A4:C1:38:{n:02X}:00:{i:02X}"
                key = secrets.token_hex(16) if kind in BTHOME_KINDS else None
                w.ble_add(kind, addr, **({"key": key} if key else {}))
                h.devices[kind] = {"addr": addr, "key": key}

    def configure(self, h: DemoHub, *, apn: bool | None = None, peripherals: bool = True,
                  link: dict | None = None, **extra) -> None:
        """Add to the provisioned config (site, broker, WiFi, APN) what provisioning does
        not write (short link timings, enrolled devices), then restart the application."""
        from .transport import HubConsole

        add = {"link": {**LINK_TIMINGS, **(link or {})}, "mqtt_keepalive_s": 10, "status_interval_s": 5, **extra}
        if apn if apn is not None else h.apn:
            add["apn"] = h.apn or APN
        else:
            add["apn"] = None
        if peripherals:
            add["peripherals"] = [{"addr": d["addr"], "kind": k, "key": d["key"], "serves": "patient"}
                                  for k, d in h.devices.items()]
        code = ("import json\nwith open('/data/config.json') as f: c = json.load(f)\n"
                f"c.update(json.loads({json.dumps(add)!r}))\n"
                "c = {k: v for k, v in c.items() if v is not None}\n"
                "with open('/data/config.json', 'w') as f: json.dump(c, f)\n")
        for attempt in (1, 2):  # a hub still starting its application can miss the first interrupts
            try:
                with HubConsole(h.console) as con:
                    con.exec(code)
                    h.app_mark = len(h.console_log())
                break
            except HubctlError:
                if attempt == 2:
                    raise
        # leaving the session soft-resets the hub: the application starts with this config

    def wait_online(self, h: DemoHub, timeout: float = 30.0, link: str | None = None,
                    memory_errors: int = 1) -> dict:
        """Until the fleet holds an online status from the hub (on `link` if given).
        HeapBlocked once the hub's console shows `memory_errors` MemoryErrors:
        the firmware retries what met a full heap (a reconnect, an alarm), so a
        caller that wants to see it recover passes more than the default 1
        (the e2e tests, xfail on the known heap gap, stop at the first)."""
        deadline = time.monotonic() + timeout
        mark = len(h.console_log()) if link else h.app_mark
        while True:
            st = self.store.statuses().get(h.hub_id)
            if st and st.get("online") and (link is None or st.get("link") == link):
                return st
            tail = h.console_log()[mark:]
            timed_out = time.monotonic() > deadline
            if timed_out or tail.count(b"MemoryError") >= memory_errors:
                if b"MemoryError" in tail:
                    line = tail[tail.rindex(b"MemoryError"):].split(b"\n")[0].decode(errors="replace").strip()
                    raise HeapBlocked(f"{h.name}: the hub's application ran out of heap blocks "
                                      f"with sensing, the link manager and the uplink ({line}).",
                                      hint="Known gap of this firmware "
                                           "(docs/decisions/0004-heap-on-a-64-bit-interpreter.md).")
            if timed_out:
                raise _timed_out(h, f"{h.name} ({h.hub_id}) did not come online" + (f" over {link}" if link else "")
                                 + f" within {timeout:.0f} s; last status {st}; console: "
                                 + h.console_log()[-600:].decode(errors="replace"))
            time.sleep(0.1)

    # -- the world -----------------------------------------------------------------------------
    def measure(self, h: DemoHub, kind: str, **values) -> float:
        with h.world() as w:
            t = time.time()
            w.ble_measure(h.devices[kind]["addr"], **(values or MEASUREMENTS[kind]))
        return t

    def door(self, h: DemoHub, open: bool = True) -> float:
        with h.world() as w:
            t = time.time()
            w.ble_door(h.devices["door"]["addr"], open=open)
        return t

    def press(self, h: DemoHub) -> float:
        with h.world() as w:
            t = time.time()
            w.ble_press(h.devices["pendant"]["addr"])
        return t

    def wired_door(self, h: DemoHub, level: int) -> float:
        with h.world() as w:
            t = time.time()
            w.pin(DOOR_GPIO, level)
        return t

    def offline_backlog(self, h: DemoHub, n: int, timeout: float) -> int:
        """Cut WiFi and 4G, give the oximeter n stored records, and wait until the
        hub has fetched and journaled them all (the device deletes its records
        only then) or timeout seconds pass. The links stay cut. Returns how many
        records the device still holds."""
        addr = h.devices["oximeter"]["addr"]
        with h.world() as w:
            w.net_ap(h.ssid, up=False)
            w.net_modem(reg="none")
            w.ble("store", addr=addr, n=n)
        left, end = n, time.monotonic() + timeout
        while left and time.monotonic() < end:
            time.sleep(1)
            with h.world() as w:
                devices = w.ble("state").get("devices", [])
            left = next((d for d in devices if d.get("addr") == addr), {}).get("records", left)
        return left

    # -- what arrived --------------------------------------------------------------------------
    def stored(self, h: DemoHub, kinds=None):
        return self.store.readings(h.hub_id, kinds=kinds)

    def wait_records(self, h: DemoHub, pred, timeout: float = 30.0, what: str = "records"):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.store.readings(h.hub_id)
            if pred(rows):
                return rows
            if time.monotonic() > deadline:
                raise _timed_out(h, f"{h.name}: timed out waiting for {what}; the fleet holds "
                                 f"{[(r.seq, r.kind) for r in rows]}; console: "
                                 + h.console_log()[-800:].decode(errors="replace"))
            time.sleep(0.05)

    def wait_alarm(self, h: DemoHub, since: float, timeout: float = 30.0) -> tuple[int, float]:
        """The first alarm (event) record of `h` stored and acked after host time `since`:
        (seq, seconds from `since` to the fleet's ack)."""
        known = {r.seq for r in self.store.readings(h.hub_id, kinds=("event",))}
        deadline = time.monotonic() + timeout
        with self._acks:
            while True:
                fresh = [s for (hub, s), t in self.acked_at.items() if hub == h.hub_id and t >= since
                         and s not in known]
                if fresh:
                    events = {r.seq for r in self.store.readings(h.hub_id, kinds=("event",))}
                    hits = sorted(s for s in fresh if s in events)
                    if hits:
                        return hits[0], self.acked_at[(h.hub_id, hits[0])] - since
                    known.update(s for s in fresh if s not in events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _timed_out(h, f"{h.name}: no alarm stored and acknowledged within {timeout:.0f} s; "
                                     "console: " + h.console_log()[-800:].decode(errors="replace"))
                self._acks.wait(min(left, 0.2))

    def journal(self, h: DemoHub) -> dict:
        """The hub's journal: records still held (stops the application for a moment; it restarts)."""
        from .transport import HubConsole

        with HubConsole(h.console) as con:
            return con.call("service", "journal_json")

    def wait_drained(self, h: DemoHub, timeout: float = 30.0) -> dict:
        """Until the hub's journal holds no record (each pruned on the fleet's ack)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.store.statuses().get(h.hub_id) or {}
            if st.get("pending") == 0 or time.monotonic() > deadline:
                j = self.journal(h)
                if not j["records"] or time.monotonic() > deadline:
                    return j
            time.sleep(0.2)

    def check_exactly_once(self, h: DemoHub, expect: dict[str, int] | None = None) -> dict:
        """Every record the hub signed is stored verified once and none is left behind:
        the fleet's copies pass the independent verifier (hubctl.records.check_stream:
        signatures, no reused seq, no undeclared gap), nothing of the hub is quarantined,
        its journal is empty (pruned on acks), and with `expect` ({"observations": 4,
        "event": 3}) each kind arrived exactly that many times (a reading re-signed
        under a new seq would count twice)."""
        from .fleet.ingest import InventoryRegistry
        from .records import check_stream

        j = self.wait_drained(h)
        rows = self.store.readings(h.hub_id)
        cert = InventoryRegistry(homedir.db_path(self.home), ttl=0).certificate(h.hub_id)
        rep = check_stream([r.record for r in rows], cert)
        q = self.store.quarantined(h.hub_id)
        problems = []
        if not rep.ok or rep.duplicates:
            problems.append(f"verifier: rejected {[r.seq for r in rep.rejected]}, gaps {rep.gaps}, "
                            f"reused {sorted(rep.reused)}")
        if j["records"]:
            problems.append(f"{len(j['records'])} records still in the hub's journal")
        if q:
            problems.append(f"{len(q)} quarantined ({', '.join(sorted({x.reason for x in q}))})")
        counts = {}
        for r in rows:
            counts[r.kind] = counts.get(r.kind, 0) + 1
        for kind, n in (expect or {}).items():
            if counts.get(kind, 0) != n:
                problems.append(f"{counts.get(kind, 0)} {kind} records stored, {n} sent")
        return {"hub": h.hub_id, "stored": len(rows), "counts": counts, "problems": problems}

    # -- shutdown ------------------------------------------------------------------------------
    def stop(self) -> None:
        for h in self.hubs:
            self.stop_hub(h)
        self.stop_service()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def detach(self) -> list[str]:
        """Leave everything running on its own (--keep): the fleet service moves from this
        process into `hubctl fleet serve`. Returns the commands that stop it all."""
        self.stop_service()
        log = open(self.home / "fleet.log", "ab")
        fleet = subprocess.Popen([sys.executable, "-m", "hubctl.cli", "fleet", "serve", "--home", str(self.home),
                                  "--broker", f"127.0.0.1:{self.broker.service_port}"], stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        (self.home / "fleet.pid").write_text(f"{fleet.pid}\n")
        (self.home / "broker.pid").write_text(f"{self.broker.proc.pid}\n")
        stop = [f"hubctl vhub stop {h.dir}" for h in self.hubs]
        stop += [f"kill {fleet.pid}    # fleet service", f"kill {self.broker.proc.pid}    # mosquitto"]
        for h in self.hubs:
            h.proc = None
        self.broker = None
        return stop

    def __enter__(self) -> VirtualFleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the verb ----------------------------------------------------------------------------------
def _table(vf: VirtualFleet, latency: dict[str, float]):
    from rich.table import Table

    t = Table(title="the virtual fleet, as the fleet service sees it")
    for col in ("hub", "id", "link", "readings stored", "alarms", "last alarm latency", "journal left"):
        t.add_column(col, justify="right" if col in ("readings stored", "alarms", "last alarm latency") else "left")
    statuses = vf.store.statuses()
    for h in vf.hubs:
        rows = vf.stored(h)
        st = statuses.get(h.hub_id, {})
        lat = latency.get(h.hub_id)
        link = st.get("link") or "-"
        q = st.get("quality")
        q = q.get("rssi", q.get("rssi_dbm")) if isinstance(q, dict) else q  # an int per protocol/uplink.md 3.3
        t.add_row(h.name, h.hub_id, f"{link} ({q} dBm)" if isinstance(q, int) else link,
                  str(sum(r.kind == "observations" for r in rows)), str(sum(r.kind == "event" for r in rows)),
                  f"{lat * 1000:.0f} ms" if lat is not None else "-", str(st.get("pending", "-")))
    return t


def run_demo(home: Path, n: int = 3, keep: bool = False) -> int:
    import tempfile

    from rich.console import Console

    from .build import build

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 110)

    def say(msg: str) -> None:
        con.print(f"[bold cyan]\\[demo][/] {msg}")

    if n < 1 or n > 8:
        raise UsageError(f"--hubs {n}: give 1 to 8 hubs (two CPU cores run them all).")
    t_start = time.monotonic()
    home = Path(home).absolute()
    _stop_leftovers(home)
    with tempfile.TemporaryDirectory(prefix="hemhub-build-") as tmp:
        bundle = build(Path(tmp) / "build")
        say(f"firmware {bundle.version} built ({bundle.app_bytes} bytes)")
        vf = VirtualFleet(home, log=say)
        ok = False
        try:
            vf.start()
            hubs = vf.add_hubs(n, bundle)
            from .vhub.interp import heap_mode

            say(f"{n} virtual hubs booted on the real MicroPython interpreter, the application "
                f"frozen into its runtime ({heap_mode()}): " + ", ".join(f"{h.name}={h.hub_id}" for h in hubs))
            vf.provision(hubs)
            for h in hubs:
                vf.enrol(h)
                vf.configure(h)
            for h in hubs:
                st = vf.wait_online(h, 60)
                say(f"{h.name}: online over {st.get('link')} (quality {st.get('quality')}), "
                    f"{st.get('heap_free')} bytes of heap free with TLS and MQTT up")
            latency: dict[str, float] = {}
            for h in hubs:
                for kind in GATT_KINDS:
                    vf.measure(h, kind)
            for h in hubs:
                _, latency[h.hub_id] = vf.wait_alarm(h, vf.door(h))
                _, latency[h.hub_id] = vf.wait_alarm(h, vf.press(h))
            for h in hubs:
                vf.wait_records(h, lambda rows: sum(r.kind == "observations" for r in rows) >= len(GATT_KINDS),
                                60, "the four measurements")
            say("readings and alarms stored verified; alarm latency = world event -> stored and acked")
            con.print(_table(vf, latency))
            # WiFi goes away at the first home: the hub fails over to 4G and carries on.
            h = hubs[0]
            with h.world() as w:
                w.net_ap(h.ssid, up=False)
            say(f"{h.name}: access point {h.ssid} switched off")
            vf.wait_online(h, 30, link="cellular")
            _, latency[h.hub_id] = vf.wait_alarm(h, vf.press(h))
            vf.measure(h, "scale", kg=72.1)
            vf.wait_records(h, lambda rows: sum(r.kind == "observations" for r in rows) > len(GATT_KINDS), 60,
                            "the reading sent over 4G")
            with h.world() as w:
                cell = w.net()["links"]["cellular"]
            say(f"{h.name}: failed over to 4G; alarm stored {latency[h.hub_id] * 1000:.0f} ms after the press; "
                f"{cell['bytes_up']} bytes up over 4G so far")
            con.print(_table(vf, latency))
            sent = {h.hub_id: {"observations": len(GATT_KINDS), "event": 2} for h in hubs}
            sent[hubs[0].hub_id] = {"observations": len(GATT_KINDS) + 1, "event": 3}
            report = [vf.check_exactly_once(h, sent[h.hub_id]) for h in hubs]
            bad = [r for r in report if r["problems"]]
            for r in report:
                say(f"{r['hub']}: {r['stored']} records stored verified {r['counts']}: "
                    + ("; ".join(r["problems"]) if r["problems"] else "each exactly once, journal pruned on acks"))
            ok = not bad
        finally:
            if keep and vf.broker is not None:
                stop = vf.detach()
                say("left running; the fleet's readings: hubctl fleet readings --home " + str(home))
                say("stop everything with:\n  " + "\n  ".join(stop))
            else:
                vf.stop()
                say("stopped the hubs, the fleet service and mosquitto")
    say(f"{'done' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f} s")
    return 0 if ok else 1


def _stop_leftovers(home: Path) -> None:
    """Stop what an earlier `demo --keep` left running in this home."""
    from .vhub.world import WorldClient

    for d in sorted(home.glob("hub*")):
        if (d / "world.sock").exists():
            try:
                with WorldClient.for_hub(d, timeout=3) as w:
                    w.stop()
            except HubctlError:
                pass
    for pidfile in (home / "fleet.pid", home / "broker.pid"):
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
            pidfile.unlink()
            time.sleep(0.3)


def cmd_demo(args) -> int:
    return run_demo(Path(args.dir), args.hubs, args.keep)


def register_demo(sub) -> None:
    d = sub.add_parser("demo", help="the main job: a virtual fleet of hubs and patients' devices, "
                                    "readings and alarms flowing into the fleet service")
    d.add_argument("--dir", default="var/demo", help="the demo's home: CA, broker, fleet.db, hubs (default var/demo)")
    d.add_argument("--hubs", type=int, default=3, help="how many virtual hubs (default 3)")
    d.add_argument("--keep", action="store_true", help="leave everything running afterwards")
    d.set_defaults(func=cmd_demo)
