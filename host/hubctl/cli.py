"""hubctl: one command, a verb per job.

Argument parsing and dispatch only; the work is in library functions that
tests and scripts call directly. Errors are HubctlError subclasses, printed as
``hubctl: <message>`` with the error's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import __version__
from .errors import HubctlError, HubStateError, UsageError

# Modules under hubctl/ that add their own verbs (a register(subparsers) each).
COMMAND_MODULES: tuple[str, ...] = ("ca", "inventory", "audit", "provision", "broker", "fleet", "deploy", "flash")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True))


# -- vhub -----------------------------------------------------------------------------
def cmd_vhub_create(args) -> int:
    import tempfile

    from .build import build
    from .vhub.hubdir import HubDir

    with tempfile.TemporaryDirectory(prefix="hemhub-build-") as tmp:
        bundle = build(Path(args.build_dir) if args.build_dir else Path(tmp) / "build")
        hub = HubDir.create(args.dir, bundle, board=args.board, serial=args.serial, force=args.force)
    if args.json:
        _print_json({"dir": str(hub.path), **hub.info, "firmware": bundle.version,
                     "app_bytes": bundle.app_bytes})
    else:
        print(f"created virtual hub {hub.serial} in {hub.path} "
              f"(firmware {bundle.version}, {bundle.app_bytes} bytes of application)")
    return 0


def cmd_vhub_run(args) -> int:
    from .vhub.hubdir import HubDir
    from .vhub.world import WorldClient

    hub = HubDir.open(args.dir)
    # A supervisor that is up with the power off (after power-cut --stay-off) is
    # powered on again rather than reported as "already running".
    if hub.world_socket.exists():
        try:
            with WorldClient.for_hub(hub, timeout=2) as w:
                st = w.state()
                if not st["powered"]:
                    w.power_on()
                    print(f"console: {st['console']}")
                    return 0
        except HubctlError:
            pass
    if args.detach:
        return _run_detached(hub, args)
    from .vhub.supervisor import Supervisor

    echo = None
    if args.echo:
        def echo(data: bytes) -> None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    sup = Supervisor(hub, allow_damaged=args.allow_damaged, echo=echo)
    path = sup.start()
    print(f"console: {path}", flush=True)
    try:
        sup.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
    return 0


def _run_detached(hub, args) -> int:
    from .vhub.world import WorldClient

    log = open(hub.path / "supervisor.log", "ab")
    cmd = [sys.executable, "-m", "hubctl.vhub.supervisor", str(hub.path)]
    if args.allow_damaged:
        cmd.append("--allow-damaged")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("console: "):
        proc.wait(timeout=10)
        tail = (hub.path / "supervisor.log").read_text(errors="replace").strip().splitlines()
        msg = tail[-1] if tail else f"supervisor exited with code {proc.returncode}"
        raise HubStateError(msg.removeprefix("hubctl: "))
    with WorldClient.for_hub(hub) as w:
        w.wait_ready()
    print(line)
    return 0


def cmd_vhub_stop(args) -> int:
    from .vhub.hubdir import HubDir
    from .vhub.world import WorldClient

    hub = HubDir.open(args.dir)
    with WorldClient.for_hub(hub) as w:
        pid = w.state()["supervisor_pid"]
        w.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.05)
    print(f"stopped virtual hub {hub.serial}")
    return 0


def cmd_vhub_power_cut(args) -> int:
    from .vhub.world import WorldClient

    with WorldClient.for_hub(args.dir) as w:
        if args.stay_off:
            w.power_off()
            print("power cut; the hub stays off until: hubctl vhub run DIR")
        else:
            w.power_cut(off_ms=args.off_ms)
            print(f"power cut for {args.off_ms} ms; the hub is booting again")
    return 0


def cmd_vhub_world(args) -> int:
    from .vhub.world import WorldClient

    words = args.words
    with WorldClient.for_hub(args.dir) as w:
        if not words or words[0] == "state":
            reply = w.state()
        elif words[0] == "pin" and len(words) == 3:
            reply = w.call("pin", gpio=int(words[1]), level=int(words[2]))
        elif words[0] == "power" and len(words) == 2:
            reply = w.call("power", state=words[1])
        elif words[0] == "reset":
            reply = w.call("reset")
        elif words[0] == "clock":
            if len(words) == 1:
                reply = w.call("clock")
            else:
                secs = int(time.time()) if words[1] == "now" else int(words[1])
                reply = w.call("clock", set=secs)
        elif words[0] in ("ble", "net") and len(words) >= 2:
            # ble|net OP key=value ...  (values parsed as JSON when they are JSON: n=5, open=true)
            args = {}
            for kv in words[2:]:
                k, sep, v = kv.partition("=")
                if not sep:
                    raise UsageError(f"{words[0]} arguments are key=value, not {kv!r}.")
                try:
                    args[k] = json.loads(v)
                except ValueError:
                    args[k] = v
            reply = w.call(words[0], op=words[1], **args)
        elif words[0] == "raw" and len(words) == 2:
            msg = json.loads(words[1])
            reply = w.call(msg.pop("cmd"), **msg)
        else:
            raise UsageError(f"Unknown world command: {' '.join(words)!r}.",
                             hint="Try: state | pin GPIO 0|1 | power on|off|cut | reset | clock [now|EPOCH] | ble OP k=v | net OP k=v "
                                  "| raw JSON (docs/vhub.md lists them).")
    _print_json(reply)
    return 0


# -- hub ------------------------------------------------------------------------------
def _reset_cause(st: dict) -> str:
    # "hard_reset (planned: uplink: ...)" when the application restarted the hub itself.
    why = st.get("restart_reason")
    return f"{st.get('reset_cause')} (planned: {why})" if why else str(st.get("reset_cause"))


def cmd_status(args) -> int:
    from .transport import HubConsole

    with HubConsole(_resolve_port(args.port)) as con:
        st = con.call("service", "status_json")
    if args.json:
        _print_json(st)
    else:
        flash = st.get("flash") or {}
        def _fs(name):
            f = flash.get(name)
            return f"{f['used'] // 1024}/{f['total'] // 1024} KiB" if f else "not mounted"
        rows = [
            ("serial", st.get("serial")), ("hardware", f"{st.get('board')} {st.get('hw_rev')}"),
            ("mac", st.get("mac")), ("factory record", st.get("factory")),
            ("firmware", f"{st.get('firmware')} (slot {st.get('slot')}, "
                         + ("frozen into the runtime, " if st.get("frozen") else "from the slot, ")
                         + f"MicroPython {st.get('runtime')})"),
            ("uptime", f"{st.get('uptime_s')} s"), ("reset cause", _reset_cause(st)),
            ("heap", f"{st.get('heap_free')} of {st.get('heap_total')} bytes free"),
            ("app partition", _fs("app")), ("data partition", f"{_fs('data')} ({st.get('data')})"),
        ]
        for k, v in rows:
            print(f"{k:>15}: {v}")
    return 0


def _resolve_port(port: str) -> str:
    """Accept a virtual hub's directory wherever a port is expected."""
    p = Path(port)
    if p.is_dir() and (p / "console").is_file():
        return (p / "console").read_text().strip()
    if p.is_dir() and (p / "hub.json").is_file():
        raise HubStateError(f"The virtual hub in {p} is not running.", hint=f"Start it: hubctl vhub run {p} --detach")
    return port


def cmd_readings(args) -> int:
    from .readings import fetch
    from .transport import HubConsole

    with HubConsole(_resolve_port(args.port)) as con:
        recs = fetch(con)
    import base64

    if args.out:
        Path(args.out).write_bytes(b"".join(r for _, r in recs))
    if args.json:
        _print_json({"records": [{"seq": seq, "cose": base64.b64encode(r).decode()} for seq, r in recs]})
    elif not args.out:
        for seq, r in recs:
            print(f"{seq} {base64.b64encode(r).decode()}")
    else:
        print(f"{len(recs)} records written to {args.out}")
    return 0


def cmd_verify(args) -> int:
    from .readings import load_cert_file, read_records_file
    from .records import certificate_identity, check_stream, format_report

    cert = load_cert_file(args.cert)
    try:
        certificate_identity(cert)
    except ValueError as e:
        raise UsageError(f"{args.cert} is not a hub certificate ({e}).") from None
    report = check_stream(read_records_file(args.records), cert)
    if args.json:
        _print_json({
            "ok": report.ok,
            "records": [{"index": r.index, "seq": r.seq, "status": r.status, "reason": r.reason,
                         "detail": r.detail} for r in report.results],
            "gaps": report.gaps, "declared_gaps": report.declared_gaps,
        })
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def cmd_build(args) -> int:
    from .build import build

    b = build(Path(args.out))
    if args.json:
        _print_json({"dir": str(b.dir), "version": b.version, "app_bytes": b.app_bytes,
                     "files": len(b.manifest["files"])})
    else:
        print(f"built firmware {b.version}: {len(b.manifest['files'])} modules, "
              f"{b.app_bytes} bytes, in {b.dir}")
    return 0


# -- ble ------------------------------------------------------------------------------
def cmd_ble_decode(args) -> int:
    from .ble import decode_characteristic

    _print_json(decode_characteristic(args.uuid, args.hex))
    return 0


def cmd_ble_decode_bthome(args) -> int:
    from .ble import decode_bthome

    _print_json(decode_bthome(args.mac, args.hex, key=args.key, kind=args.kind))
    return 0


def cmd_ble_scan(args) -> int:
    from .ble import scan

    rows = scan(args.timeout)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no BLE devices heard in {args.timeout:g} s")
    for r in rows:
        rssi = f"{r['rssi']} dBm" if r["rssi"] is not None else "?"
        print(f"{r['address']:<18} {rssi:>8}  {(r['kind'] or '-'):<11} {r['name'] or '(no name)'}"
              f"  [{' '.join(r['services'])}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hubctl", description="Host tools for hemhub home-care hubs.")
    p.add_argument("--version", action="version", version=f"hubctl {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    vh = sub.add_parser("vhub", help="virtual hubs: create, run, script and stop them")
    vs = vh.add_subparsers(dest="vcmd", metavar="VERB", required=True)
    c = vs.add_parser("create", help="make a new virtual hub in DIR with the current firmware")
    c.add_argument("dir")
    c.add_argument("--board", help="board from hardware/ (default esp32-hemhub-r1)")
    c.add_argument("--serial", help="serial number (default: a new unique one)")
    c.add_argument("--force", action="store_true", help="re-image an existing hub (erases its data)")
    c.add_argument("--build-dir", help="keep the firmware build here")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_vhub_create)
    r = vs.add_parser("run", help="boot the hub; prints 'console: <pty>' (also written to DIR/console)")
    r.add_argument("dir")
    r.add_argument("--detach", action="store_true", help="run in the background; stop with hubctl vhub stop")
    r.add_argument("--echo", action="store_true", help="mirror console output here")
    r.add_argument("--allow-damaged", action="store_true",
                   help="boot even with a corrupt factory record or data partition (diagnosis)")
    r.set_defaults(func=cmd_vhub_run)
    s = vs.add_parser("stop", help="stop a running virtual hub")
    s.add_argument("dir")
    s.set_defaults(func=cmd_vhub_stop)
    pc = vs.add_parser("power-cut", help="pull the plug: kill the interpreter at once")
    pc.add_argument("dir")
    pc.add_argument("--off-ms", type=int, default=200, help="how long the power stays off (default 200)")
    pc.add_argument("--stay-off", action="store_true", help="leave it off until hubctl vhub run DIR")
    pc.set_defaults(func=cmd_vhub_power_cut)
    w = vs.add_parser("world", help="script the world: state | pin GPIO LEVEL | power on|off|cut | reset | clock")
    w.add_argument("dir")
    w.add_argument("words", nargs="*")
    w.set_defaults(func=cmd_vhub_world)

    st = sub.add_parser("status", help="show a hub's identity, firmware, uptime, heap and flash use")
    st.add_argument("--port", required=True, help="serial port, a virtual hub's console pty, or its DIR")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    rd = sub.add_parser("readings", help="dump the signed records in a hub's journal (base64 COSE_Sign1)")
    rd.add_argument("--port", required=True, help="serial port, a virtual hub's console pty, or its DIR")
    rd.add_argument("--out", help="also write them to FILE as a CBOR sequence (for hubctl verify)")
    rd.add_argument("--json", action="store_true")
    rd.set_defaults(func=cmd_readings)
    vf = sub.add_parser("verify", help="check signed records against a hub certificate: "
                                       "signatures, hub id, sequence gaps, duplicates")
    vf.add_argument("--cert", required=True, help="the hub's device certificate (PEM or DER)")
    vf.add_argument("records", help="records file: CBOR sequence or base64 lines (hubctl readings)")
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(func=cmd_verify)

    from .demo import register_demo  # the main job, end to end: a virtual fleet

    register_demo(sub)

    b = sub.add_parser("build", help="compile firmware/ into an application bundle (.mpy + manifest)")
    b.add_argument("--out", default="build/app", help="output directory (default build/app)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)

    bl = sub.add_parser("ble", help="BLE: decode captured values with the hub's codecs, scan for devices")
    bs = bl.add_subparsers(dest="bcmd", metavar="VERB", required=True)
    x = bs.add_parser("decode", help="decode a GATT characteristic value (JSON observations)")
    x.add_argument("uuid", help="characteristic UUID: 2A9D, 0x2a9d or the full 128-bit SIG form")
    x.add_argument("hex", help="the value as hex, e.g. 00b036")
    x.set_defaults(func=cmd_ble_decode)
    x = bs.add_parser("decode-bthome", help="decode BTHome v2 service data (JSON objects)")
    x.add_argument("mac", help="the device's address AA:BB:CC:DD:EE:FF (needed to decrypt)")
    x.add_argument("hex", help="service data after UUID FCD2, from the device information byte")
    x.add_argument("--key", help="the device's 16-byte key as 32 hex digits (encrypted adverts)")
    x.add_argument("--kind", help="also show the alarm events for an enrolled kind: pendant, fall, door, motion")
    x.set_defaults(func=cmd_ble_decode_bthome)
    x = bs.add_parser("scan", help="list nearby BLE devices with a guess of their kind (needs an adapter)")
    x.add_argument("--timeout", type=float, default=5.0, help="seconds to listen (default 5)")
    x.add_argument("--json", action="store_true", help="machine-readable output")
    x.set_defaults(func=cmd_ble_scan)

    # Verbs that live in their own modules: each has register(subparsers).
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HubctlError as e:
        print(f"hubctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hubctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
