"""hubctl deploy on virtual hubs (issue 6): inactive slot, only changed files,
every file verified by digest on the hub, binary-safe streaming."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hubctl.build import build
from hubctl.deploy import deploy, escape
from hubctl.transport import HubConsole

HUBCTL = [str(Path(sys.executable).parent / "hubctl")]
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def hub_digests(port, slot: str, manifest: dict) -> dict:
    """SHA-256 of each manifest file in the slot, computed on the hub by mpremote."""
    with HubConsole(port) as con:
        return {f["path"]: con.transport.fs_hashfile(f"/{slot}/{f['path']}", "sha256").hex()
                for f in manifest["files"]}


def status(port) -> dict:
    with HubConsole(port) as con:
        return con.call("service", "status_json")


def test_deploy_streams_binary_and_switches_slot(vhub, bundle):
    # The runtime carries this very build frozen in (decision 0007): it runs that copy.
    st = status(vhub.port)
    assert st["slot"] == "rom" and st["frozen"] is True
    r = deploy(vhub.port, bundle.dir, local_copy=False)
    assert r.slot == "a" and r.previous_slot == "rom"
    assert len(r.sent) == len(bundle.manifest["files"]) + 1  # + manifest.json
    assert r.verified == len(r.sent)
    # Binary-safe: the console carried at least 0.9 application bytes per byte,
    # the receiver program and the digest listings included.
    assert r.app_bytes_sent / r.console_bytes >= 0.9, (r.app_bytes_sent, r.console_bytes)
    expected = {f["path"]: f["sha256"] for f in bundle.manifest["files"]}
    assert hub_digests(vhub.port, "a", bundle.manifest) == expected
    st = status(vhub.port)
    assert st["slot"] == "a" and st["firmware"] == bundle.version and st["frozen"] is True


def test_only_changed_files_are_copied(vhub, tmp_path):
    src = tmp_path / "fw"
    shutil.copytree(FIRMWARE, src)
    base = build(tmp_path / "base", src)
    deploy(vhub.port, base.dir)  # slot a
    led = src / "hemhub" / "led.py"
    led.write_text(led.read_text() + "\n_DEPLOY_TEST = 1\n")
    changed = build(tmp_path / "changed", src)
    r = deploy(vhub.port, changed.dir)  # slot b: empty, filled from a where equal
    assert r.slot == "b" and r.sent == ["hemhub/led.mpy", "manifest.json"]
    assert len(r.copied) == len(changed.manifest["files"]) - 1  # every other module, from slot a
    assert hub_digests(vhub.port, "b", changed.manifest) == \
        {f["path"]: f["sha256"] for f in changed.manifest["files"]}
    # Back to slot a, which still holds the first build: only led.mpy and the
    # manifest differ, and they come from slot b on the hub.
    r = deploy(vhub.port, changed.dir)
    assert r.slot == "a" and r.sent == [] and sorted(r.copied) == ["hemhub/led.mpy", "manifest.json"]
    assert len(r.kept) == len(changed.manifest["files"]) - 1
    assert r.app_bytes_sent == 0
    st = status(vhub.port)
    # Another build than the runtime's frozen one: the hub runs the slot's files.
    assert st["slot"] == "a" and st["frozen"] is False
    with HubConsole(vhub.port) as con:
        assert con.exec("import hemhub.led as l\nprint(l._DEPLOY_TEST)").strip() == "1"


def test_deploy_cli_and_audit(vhub, bundle, tmp_path):
    home = tmp_path / "home"
    r = subprocess.run(HUBCTL + ["deploy", "--port", str(vhub.path), "--bundle", str(bundle.dir),
                                 "--home", str(home), "--technician", "bo", "--json"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["slot"] == "a" and out["verified"] == len(bundle.manifest["files"]) + 1
    r = subprocess.run(HUBCTL + ["audit", "--home", str(home), "--json"], capture_output=True, text=True)
    [e] = json.loads(r.stdout)
    assert (e["action"], e["who"], e["result"], e["detail"]["slot"]) == ("deploy", "bo", "ok", "a")


def test_escape_covers_interrupt_and_escape_bytes():
    data = bytes(range(256)) * 2
    wire = escape(data)
    assert b"\x03" not in wire
    assert len(wire) == len(data) + 4  # two bytes escaped, twice
    assert hashlib.sha256(data).digest() != hashlib.sha256(wire).digest()
