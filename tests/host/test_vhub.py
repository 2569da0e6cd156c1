"""Virtual hub creation, image checks and every documented bad input."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hubctl.build import build
from hubctl.errors import HubNotFoundError, HubStateError, TransportError, UsageError
from hubctl.hardware import load_board
from hubctl.transport import HubConsole
from hubctl.vhub import interp
from hubctl.vhub.hubdir import HubDir, factory_record, parse_factory_record
from vhubtest import run_hub

HUBCTL = [str(Path(sys.executable).parent / "hubctl")]


def hubctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(HUBCTL + list(args), capture_output=True, text=True, timeout=timeout)


def test_create_makes_images_sized_like_the_partition_table(tmp_path, bundle):
    hub = HubDir.create(tmp_path / "h", bundle)
    board = load_board()
    for part in board.partitions:
        assert hub.image(part.name).stat().st_size == part.size, part.name
    fac = parse_factory_record(hub.image("factory").read_bytes()[:4096])
    assert fac["serial"] == hub.serial and fac["mac"] == hub.info["mac"]
    assert hub.image("data").read_bytes()[:8192] == b"\xff" * 8192  # empty data partition
    hub.check_images()


def test_every_hub_gets_a_unique_serial_and_mac(tmp_path, bundle):
    a = HubDir.create(tmp_path / "a", bundle)
    b = HubDir.create(tmp_path / "b", bundle)
    assert a.serial != b.serial and a.info["mac"] != b.info["mac"]


def test_create_refuses_to_overwrite_without_force(tmp_path, bundle):
    HubDir.create(tmp_path / "h", bundle)
    with pytest.raises(UsageError, match="already holds a virtual hub"):
        HubDir.create(tmp_path / "h", bundle)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        HubDir.create(tmp_path / "other", bundle)
    assert (tmp_path / "other" / "precious.txt").read_text() == "x"


def test_missing_dir_and_non_hub_dir(tmp_path):
    with pytest.raises(HubNotFoundError, match="does not exist.*hubctl vhub create"):
        HubDir.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(HubNotFoundError, match="not a virtual hub"):
        HubDir.open(tmp_path / "plain")
    r = hubctl("vhub", "run", str(tmp_path / "nope"))
    assert r.returncode == HubNotFoundError.exit_code
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["app", "data", "factory"])
def test_truncated_image_is_refused_by_name(tmp_path, bundle, name):
    hub = HubDir.create(tmp_path / "h", bundle)
    with open(hub.image(name), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(HubStateError, match=rf"{name}\.img is truncated: 1000 bytes"):
        hub.check_images()


def test_corrupt_factory_record_is_refused(tmp_path, bundle):
    hub = HubDir.create(tmp_path / "h", bundle)
    with open(hub.image("factory"), "r+b") as f:
        f.seek(12)
        f.write(b"\x00")  # flips bits in the JSON body: the CRC no longer matches
    with pytest.raises(HubStateError, match="factory.img is corrupt: factory record CRC mismatch"):
        hub.check_images()


def test_corrupt_app_image_is_refused(tmp_path, bundle):
    hub = HubDir.create(tmp_path / "h", bundle)
    with open(hub.image("app"), "r+b") as f:
        f.write(os.urandom(16384))  # both littlefs superblock copies
    with pytest.raises(HubStateError, match="app.img does not hold a littlefs filesystem"):
        hub.check_images()


def test_damaged_data_is_refused_then_booted_with_allow_damaged(tmp_path, bundle):
    hub = HubDir.create(tmp_path / "h", bundle)
    with open(hub.image("data"), "r+b") as f:
        f.write(b"\x00" * 8192)
    with pytest.raises(HubStateError, match="data.img holds neither a littlefs filesystem nor erased flash"):
        hub.check_images()
    r = hubctl("vhub", "run", str(hub.path))
    assert r.returncode == HubStateError.exit_code and "--allow-damaged" in r.stderr
    # Booted anyway for diagnosis: the firmware mounts nothing and formats nothing.
    with run_hub(hub.path, bundle, allow_damaged=True) as rh:
        with HubConsole(rh.port) as con:
            st = con.call("service", "status_json")
    assert st["data"] == "damaged"
    assert hub.image("data").read_bytes()[:8192] == b"\x00" * 8192


def test_already_running_is_refused(vhub):
    r = hubctl("vhub", "run", str(vhub.path))
    assert r.returncode == HubStateError.exit_code
    assert "already running" in r.stderr and vhub.port in r.stderr


def test_console_busy(vhub):
    fd = os.open(vhub.port, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what mpremote and pyserial do
    try:
        r = hubctl("status", "--port", vhub.port)
    finally:
        os.close(fd)
    assert r.returncode == HubStateError.exit_code
    assert "is busy" in r.stderr


def test_status_wrong_ports(tmp_path):
    r = hubctl("status", "--port", "/dev/ttyUSB99")
    assert r.returncode == HubNotFoundError.exit_code and "no serial port /dev/ttyUSB99" in r.stderr
    r = hubctl("status", "--port", "/dev/null")
    assert r.returncode == HubNotFoundError.exit_code and "not a serial port" in r.stderr
    # A terminal with something else behind it: the error quotes what it sent.
    master, slave = pty.openpty()
    stop = threading.Event()

    def bootloader_chatter():
        # A burst, then silence: mpremote's read_until only times out once the
        # port goes quiet, so a port that never stops talking is never given up on.
        for _ in range(4):
            if stop.wait(0.2):
                return
            os.write(master, b"rst:0x1 (POWERON_RESET),boot:0x13\r\n")

    talker = threading.Thread(target=bootloader_chatter, daemon=True)
    talker.start()
    try:
        HubConsole.ATTEMPT_S = 1
        with pytest.raises(TransportError, match="No MicroPython REPL answered") as e:
            HubConsole(os.ttyname(slave))
        assert "POWERON_RESET" in str(e.value)
    finally:
        stop.set()
        talker.join()
        HubConsole.ATTEMPT_S = 4
        os.close(master)
        os.close(slave)


def test_status_on_a_stopped_virtual_hub_dir(tmp_path, bundle):
    HubDir.create(tmp_path / "h", bundle)
    r = hubctl("status", "--port", str(tmp_path / "h"))
    assert r.returncode == HubStateError.exit_code and "is not running" in r.stderr


def test_micropython_missing(monkeypatch, tmp_path, bundle):
    monkeypatch.setenv("HEMHUB_MICROPYTHON", str(tmp_path / "no-such-micropython"))
    with pytest.raises(interp.InterpreterMissing, match="not an executable"):
        interp.micropython_path()
    env = dict(os.environ, HEMHUB_MICROPYTHON=str(tmp_path / "no-such-micropython"))
    r = subprocess.run(HUBCTL + ["vhub", "create", str(tmp_path / "h")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == interp.InterpreterMissing.exit_code
    assert "HEMHUB_MICROPYTHON" in r.stderr and "Traceback" not in r.stderr


def test_the_runtime_carries_the_current_build_frozen(tmp_path):
    """The interpreter every virtual hub runs has exactly today's bundle frozen in:
    boot.py runs the frozen copy only when the slot's app_id equals this one."""
    bundle = build(tmp_path / "b")
    r = subprocess.run([interp.micropython_path(), "-c",
                        "import _frozen_app, hemhub.version\n"
                        "print(_frozen_app.APP_ID, hemhub.version.VERSION)"],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.stdout.split() == [bundle.manifest["app_id"], bundle.version], r.stderr


def test_a_runtime_source_that_is_not_the_pinned_one_is_refused(tmp_path):
    import http.server

    from hubctl.vhub import runtime

    (tmp_path / "micropython.tar.xz").write_bytes(b"not the release")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = runtime.RUNTIME_DIR / "src" / "micropython.tar.xz"
    try:
        with pytest.raises(runtime.RuntimeBuildError, match="not the pinned"):
            runtime._fetch("micropython.tar.xz", f"http://127.0.0.1:{server.server_port}", "0" * 64)
        assert not dest.exists()  # nothing altered is kept, nothing is built from it
    finally:
        server.shutdown()


def test_status_json_over_the_console(vhub):
    r = hubctl("status", "--port", vhub.port, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["serial"] == vhub.hub.serial and st["factory"] == "ok"
    assert st["firmware"] and st["data"] in ("mounted", "formatted")
    from hubctl.vhub.interp import BOARD_HEAP_RESERVE, FIRMWARE_HEAP, ROMFS_WINDOW

    assert st["heap_total"] <= FIRMWARE_HEAP + BOARD_HEAP_RESERVE + ROMFS_WINDOW
    assert st["heap_free"] <= FIRMWARE_HEAP
    assert st["flash"]["data"]["total"] == 2 * 1024 * 1024


def test_build_is_reproducible(tmp_path):
    a = build(tmp_path / "a")
    b = build(tmp_path / "b")
    assert a.manifest == b.manifest
    for f in a.manifest["files"]:
        assert (a.app_dir / f["path"]).read_bytes() == (b.app_dir / f["path"]).read_bytes()
    assert (a.app_dir / "manifest.json").read_bytes() == (b.app_dir / "manifest.json").read_bytes()


def test_factory_record_matches_protocol_layout():
    rec = factory_record({"serial": "HH1-2026-000001", "hw_rev": "r1"})
    assert rec[:4] == b"HMHF" and rec[4] == 1
    assert parse_factory_record(rec + b"\xff" * 100)["serial"] == "HH1-2026-000001"
    with pytest.raises(ValueError, match="bad magic"):
        parse_factory_record(b"\xff" * 64)


def test_firmware_pin_map_matches_hardware_definition():
    board = load_board()
    src = (Path(__file__).parents[2] / "firmware/hemhub/board.py").read_text()
    consts = {}
    for line in src.splitlines():
        if "= const(" in line:
            name, val = line.split("= const(")
            consts[name.strip()] = int(val.rstrip(")"))
    for role, pin in board.pins.items():
        assert consts[role.upper()] == pin["gpio"], role


def test_factory_vectors_match_the_host_writer():
    vec = json.loads((Path(__file__).parents[2] / "protocol/vectors/factory.json").read_text())
    for v in vec["valid"]:
        assert factory_record(v["expect"]).hex() == v["hex"]
        assert parse_factory_record(bytes.fromhex(v["hex"])) == v["expect"]
    for v in vec["invalid"]:
        with pytest.raises(ValueError, match=v["reason"]):
            parse_factory_record(bytes.fromhex(v["hex"]) + b"\xff" * 4096)
