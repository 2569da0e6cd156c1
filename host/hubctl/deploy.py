"""hubctl deploy: install an application bundle into a hub's inactive file
slot over its console (mpremote's serial transport, raw REPL), then switch.

Slots (firmware/boot.py): /slot names the active one: "a" or "b" (directories
of the app partition holding the .mpy files) or "rom" (the ROMFS partition).
Deploy writes into the *inactive* file slot ("a" when "b" or "rom" is active,
or on a hub with no application yet), so the running application is never
touched while files move:

    1. list the target slot's files and SHA-256 digests on the hub
    2. remove files the bundle does not have; files whose digest differs are copied
       on the hub from the active slot when it holds them, else sent
    3. verify every file of the bundle in the target slot by SHA-256 on the hub
    4. boot.py / main.py at the root: replaced (temporary name, then rename) only if
       they differ
    5. switch: /slot.tmp written, then renamed over /slot (a power cut leaves the
       old slot or the new one); then the hub is restarted and must report the new
       version from the new slot, else /slot is switched back

Binary-safe streaming: one small receiver program goes over raw-paste mode;
it then reads each file as frames ``LLLL`` (4 hex digits: the frame's length on
the wire) + the frame's bytes, where the only bytes escaped are 0x03 (Ctrl-C,
which would interrupt the receiver) and 0x10 (the escape byte itself): each
becomes 0x10, byte ^ 0x20. After each frame the hub writes "." (flow control:
one frame in flight, so a UART receive buffer never overflows). Cost: 4 bytes
per frame plus ~1 % escapes on compiled bytecode, against mpremote cp's
``w(b'...')`` repr() lines (docs/tools.md has the measured figures).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import HubStateError, TransportError, UsageError
from .progress import byte_progress

FRAME = 1024  # application bytes per frame
_DLE = 0x10
_SPECIAL = (0x03, _DLE)
ROOT_FILES = ("boot.py", "main.py")

# Prints "slot S", then "digest path" per file under DIR and "digest /name" per
# root file: line by line, so nothing grows with the number of files.
_LIST = r"""
import os, gc, hashlib, binascii
gc.collect()
_b = bytearray(512)
def _sum(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(_b)
            if not n:
                break
            h.update(_b if n == 512 else _b[:n])
    return binascii.hexlify(h.digest()).decode()
def _walk(d, pre):
    try:
        items = list(os.ilistdir(d))
    except OSError:
        return
    for it in items:
        if it[1] == 0x4000:
            _walk(d + '/' + it[0], pre + it[0] + '/')
        else:
            print(_sum(d + '/' + it[0]), pre + it[0])
try:
    print('slot', open('/slot').read().strip())
except OSError:
    print('slot -')
_walk(%(dir)r, '')
for n in %(root)r:
    try:
        print(_sum('/' + n), '/' + n)
    except OSError:
        pass
"""


def _listing(con, d: str, root=ROOT_FILES) -> dict:
    out = con.exec(_LIST % {"dir": d, "root": list(root)})
    res = {"slot": None, "files": {}, "root": {}}
    for line in out.splitlines():
        k, _, v = line.strip().partition(" ")
        if k == "slot":
            res["slot"] = None if v == "-" else v
        elif v.startswith("/"):
            res["root"][v[1:]] = k
        elif v:
            res["files"][v] = k
    return res


# On-hub programs (sent through the raw REPL). Both create a file's parent
# directories first, with this function.
_DIRS = r"""
import os
def _dirs(p):
    d = ''
    for x in p.split('/')[1:-1]:
        d += '/' + x
        try:
            os.mkdir(d)
        except OSError:
            pass
"""

_RECEIVE = _DIRS + r"""
import sys, hashlib, binascii
def _un(d):
    i = d.find(b'\x10')
    if i < 0:
        return d
    out = bytearray()
    j = 0
    while i >= 0:
        out += d[j:i]
        out.append(d[i + 1] ^ 0x20)
        j = i + 2
        i = d.find(b'\x10', j)
    out += d[j:]
    return out
def _rx(files):
    r = sys.stdin.buffer
    o = sys.stdout
    for p, n in files:
        _dirs(p)
        h = hashlib.sha256()
        with open(p, 'wb') as f:
            while n > 0:
                d = _un(r.read(int(r.read(4), 16)))
                f.write(d)
                h.update(d)
                n -= len(d)
                o.write('.')
        o.write(binascii.hexlify(h.digest()).decode() + '\n')
_rx(%(files)r)
"""


_COPY = _DIRS + r"""
_b = bytearray(512)
for a, b in %(pairs)r:
    _dirs(b)
    with open(a, 'rb') as fa, open(b, 'wb') as fb:
        while True:
            n = fa.readinto(_b)
            if not n:
                break
            fb.write(_b if n == 512 else _b[:n])
"""


def escape(data: bytes) -> bytes:
    """The wire form of one frame: 0x03 and 0x10 become 0x10, byte ^ 0x20."""
    if not any(b in data for b in (b"\x03", b"\x10")):
        return data
    out = bytearray()
    for b in data:
        if b in _SPECIAL:
            out.append(_DLE)
            out.append(b ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


@dataclass
class DeployReport:
    slot: str
    previous_slot: str | None
    version: str
    sent: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)  # copied on the hub from the active slot
    removed: list[str] = field(default_factory=list)
    root_updated: list[str] = field(default_factory=list)
    verified: int = 0
    app_bytes_sent: int = 0
    console_bytes: int = 0  # everything written to the hub's console, code included
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Counting:
    """Counts what goes to the console (for the efficiency figure)."""

    def __init__(self, serial):
        self.serial = serial
        self.count = 0
        self._write = serial.write

        def write(data):
            self.count += len(data)
            return self._write(data)

        serial.write = write

    def close(self):
        self.serial.write = self._write


def _target_slot(active: str | None) -> str:
    return "b" if active == "a" else "a"


def _bundle_files(bundle_dir: Path) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    app = bundle_dir / "app"
    mf_path = app / "manifest.json"
    if not mf_path.is_file():
        raise UsageError(f"{bundle_dir} is not a firmware build (no app/manifest.json).",
                         hint="Build one: hubctl build --out DIR")
    manifest = json.loads(mf_path.read_text())
    files = {}
    for f in manifest["files"]:
        data = (app / f["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != f["sha256"] or len(data) != f["size"]:
            raise UsageError(f"{app / f['path']} does not match the build's manifest.",
                             hint="Rebuild: hubctl build --out DIR")
        files[f["path"]] = data
    files["manifest.json"] = mf_path.read_bytes()
    root = {n: (bundle_dir / "root" / n).read_bytes() for n in ROOT_FILES}
    return manifest, files, root


def _send_files(con, items: list[tuple[str, bytes]], progress: Callable[[int], None] | None,
                frame: int = FRAME) -> dict[str, str]:
    """Stream files to the hub; returns {hub path: digest the hub computed}."""
    t = con.transport
    listing = [(p, len(d)) for p, d in items]
    t.exec_raw_no_follow(_RECEIVE % {"files": listing})
    got = {}
    for path, data in items:
        for off in range(0, len(data), frame):
            wire = escape(data[off:off + frame])
            t.serial.write(b"%04x" % len(wire) + wire)
            ack = t.serial.read(1)
            if ack != b".":
                rest = ack + t.read_until(1, b"\x04", timeout=2)
                raise TransportError(f"The hub stopped receiving {path} "
                                     f"({rest.decode(errors='replace').strip()[-200:]!r}).",
                                     hint="Check the cable and run deploy again; files are re-sent "
                                          "only where their digest differs.")
            if progress:
                progress(len(data[off:off + frame]))
        line = t.read_until(1, b"\n", timeout=10)
        got[path] = line.decode(errors="replace").strip().lstrip(".")
    out, err = t.follow(timeout=10)
    if err:
        raise HubStateError(f"The hub's receiver failed: {err.decode(errors='replace').strip()[-300:]}")
    return got


def deploy(port: str, bundle_dir: Path, *, progress_factory=None, verify_boot: bool = True,
           frame: int = FRAME, local_copy: bool = True) -> DeployReport:
    """Install the bundle in ``bundle_dir`` (hubctl build's output) on the hub at ``port``.

    ``local_copy=False`` sends every differing file over the console even when
    the active slot holds it (benchmarks of the streaming)."""
    from .transport import HubConsole

    t0 = time.monotonic()
    manifest, files, root = _bundle_files(Path(bundle_dir))
    with HubConsole(port) as con:
        counter = _Counting(con.transport.serial)
        try:
            active = _listing(con, "/-", ())["slot"]
            target = _target_slot(active)
            state = _listing(con, "/" + target)
            report = DeployReport(slot=target, previous_slot=active, version=manifest["version"])
            on_hub = state["files"]
            stale = sorted(p for p in on_hub if p not in files)
            if stale:
                con.exec("import os\nfor p in %r:\n os.remove(p)\n" % [f"/{target}/{p}" for p in stale])
            report.removed = stale
            # Files the running slot already holds are copied on the hub: no console bytes.
            src = _listing(con, "/" + active, ())["files"] if local_copy and active in ("a", "b", "rom") else {}
            todo, local = [], []
            for p, data in sorted(files.items()):
                digest = hashlib.sha256(data).hexdigest()
                if on_hub.get(p) == digest:
                    report.kept.append(p)
                elif src.get(p) == digest:
                    local.append((f"/{active}/{p}", f"/{target}/{p}"))
                    report.copied.append(p)
                else:
                    todo.append((f"/{target}/{p}", data))
                    report.sent.append(p)
            if local:
                con.exec(_COPY % {"pairs": local}, timeout=120)
            for n in ROOT_FILES:
                if state["root"].get(n) != hashlib.sha256(root[n]).hexdigest():
                    todo.append((f"/{n}.new", root[n]))
                    report.root_updated.append(n)
            total = sum(len(d) for _, d in todo)
            bar = progress_factory(total) if progress_factory and total else None
            try:
                got = _send_files(con, todo, bar, frame) if todo else {}
            finally:
                if bar:
                    bar(None)
            for p, data in todo:
                if got.get(p) != hashlib.sha256(data).hexdigest():
                    raise HubStateError(f"{p} arrived damaged on the hub (digest {got.get(p)!r}).",
                                        hint="Run deploy again.")
            report.app_bytes_sent = total
            # Verify every file of the bundle in the target slot, not only those sent.
            from .provision import _fresh_heap

            _fresh_heap(con)  # also proves the files are on flash, not in a cache
            final = _listing(con, "/" + target, ())["files"]
            bad = [p for p, d in files.items() if final.get(p) != hashlib.sha256(d).hexdigest()]
            extra = [p for p in final if p not in files]
            if bad or extra:
                raise HubStateError(f"Slot {target} does not match the bundle after copying "
                                    f"(wrong: {bad[:3]}, unexpected: {extra[:3]}).",
                                    hint="Run deploy again; the active slot was not changed.")
            report.verified = len(files)
            renames = [(f"/{n}.new", f"/{n}") for n in report.root_updated]
            con.exec("import os\nfor a, b in %r:\n os.rename(a, b)\n"
                     "with open('/slot.tmp', 'w') as f:\n f.write(%r)\nos.rename('/slot.tmp', '/slot')\n"
                     % (renames, target + "\n"))
            report.console_bytes = counter.count
        finally:
            counter.close()
    if verify_boot:
        _check_boot(port, report)
    report.seconds = time.monotonic() - t0
    return report


def _check_boot(port: str, report: DeployReport) -> None:
    """The hub must come up from the new slot with the new version; else switch back."""
    from .transport import HubConsole

    with HubConsole(port) as con:
        try:
            st = con.call("service", "status_json")
            ok = st.get("slot") == report.slot and st.get("firmware") == report.version
            why = f"it reports slot {st.get('slot')}, firmware {st.get('firmware')}"
        except HubStateError as e:
            ok, why = False, str(e)
        if not ok and report.previous_slot:
            con.exec("import os\nwith open('/slot.tmp', 'w') as f:\n f.write(%r)\n"
                     "os.rename('/slot.tmp', '/slot')\n" % (report.previous_slot + "\n"))
    if not ok:
        raise HubStateError(f"The hub did not start the new application from slot {report.slot} ({why}); "
                            f"switched back to slot {report.previous_slot}.",
                            hint="Check the build (hubctl build) and the hub's console log.")


# -- CLI -----------------------------------------------------------------------------
def _cmd_deploy(args) -> int:
    import tempfile

    from . import audit
    from . import home as _home
    from .build import build
    from .cli import _resolve_port

    port = _resolve_port(args.port)
    db = _home.db_path(_home.home(args.home))
    with tempfile.TemporaryDirectory(prefix="hemhub-build-") as tmp:
        bundle = Path(args.bundle) if args.bundle else build(Path(tmp) / "build").dir
        try:
            r = deploy(port, bundle, progress_factory=byte_progress("deploying"))
        except Exception as e:
            audit.record(db, "deploy", args.port, "failed", who=args.technician, detail={"error": str(e)[:200]})
            raise
    audit.record(db, "deploy", args.port, "ok", who=args.technician,
                 detail={"version": r.version, "slot": r.slot, "sent": len(r.sent),
                         "copied": len(r.copied), "kept": len(r.kept)})
    if args.json:
        print(json.dumps(r.as_dict(), indent=1, sort_keys=True))
    else:
        eff = r.app_bytes_sent / r.console_bytes if r.console_bytes else 0
        print(f"deployed firmware {r.version} to slot {r.slot} (was {r.previous_slot}): "
              f"{len(r.sent)} files sent, {len(r.copied)} copied on the hub, {len(r.kept)} unchanged, {len(r.removed)} removed, "
              f"{r.verified} verified by SHA-256; {r.app_bytes_sent} bytes in {r.console_bytes} console "
              f"bytes ({eff:.2f} app bytes per console byte), {r.seconds:.1f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("deploy", help="install the application into the hub's inactive slot (only changed files)")
    p.add_argument("--port", required=True, help="serial port, a virtual hub's console pty, or its DIR")
    p.add_argument("--bundle", help="a build directory (hubctl build --out DIR); default: build now")
    p.add_argument("--technician", help="who (default $USER), for the audit log")
    p.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_deploy)
