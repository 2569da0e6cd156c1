"""hubctl flash: the ESP-IDF partition table against its vectors, and the
esptool path at the serial boundary: real esptool (library, ROM protocol,
--no-stub) talking over a pty to a mock ESP32 ROM bootloader
(tests/host/esp_rom_mock.py), whose flash is checked byte for byte."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest
from esp_rom_mock import EspRomMock
from hubctl import audit, partitions
from hubctl.cli import main
from hubctl.flash import (
    DigestError,
    FlashTooSmallError,
    ImageTooBigError,
    NoBootloaderError,
    NotEsp32Error,
    PortBusyError,
    PortMissingError,
    flash_device,
)
from hubctl.hardware import load_board
from hubctl.vhub.hubdir import parse_factory_record

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocol/vectors/partitions.json").read_text())
BOARD = load_board()
MAC = "a4cf12345678"


def _entries(rows):
    return [partitions.Entry(r["label"], r["type"], r["subtype"], r["offset"], r["size"], r["flags"])
            for r in rows]


# -- partition table ------------------------------------------------------------------------
@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["description"][:40])
def test_partition_table_vectors(case):
    raw = bytes.fromhex(case["hex"])
    table = partitions.encode(_entries(case["entries"]))
    assert len(table) == 0xC00
    assert table[:len(raw)] == raw
    assert table[len(raw):] == b"\xff" * (0xC00 - len(raw))
    assert partitions.decode(table) == _entries(case["entries"])


def test_partition_table_follows_the_hardware_file():
    got = partitions.decode(partitions.table_for_board(BOARD))
    assert [(e.label, e.type, e.subtype, e.offset, e.size) for e in got] == sorted(
        ((p.label, p.type, p.subtype, p.offset, p.size) for p in BOARD.partitions), key=lambda t: t[3])
    assert any(c["entries"] == [{"label": e.label, "type": e.type, "subtype": e.subtype, "offset": e.offset,
                                 "size": e.size, "flags": e.flags} for e in got]
               for c in VECTORS["valid"]), "protocol/vectors/partitions.json is out of date with hardware/"


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["reason"])
def test_partition_table_rejects(case):
    raw = bytes.fromhex(case["hex"]) * case.get("repeat", 1)
    if "repeat" not in case:
        raw += b"\xff" * (0xC00 - len(raw))
    with pytest.raises(ValueError, match=case["reason"]):
        partitions.decode(raw)


@pytest.mark.parametrize("case", VECTORS["layout_errors"], ids=lambda c: c["reason"])
def test_partition_layout_rules(case):
    with pytest.raises(ValueError, match=case["reason"]):
        partitions.check(_entries(case["entries"]), flash_size=case.get("flash_size"))


# -- esptool through the mock ROM bootloader ------------------------------------------------
def _app_image(n: int) -> bytes:
    """Stands in for a MicroPython app image: ESP image magic, then noise."""
    return bytes([0xE9, 0x03, 0x02, 0x20]) + os.urandom(n - 4)


def _image(tmp_path: Path, data: bytes, *, sidecar: bool = True) -> Path:
    p = tmp_path / "micropython.bin"
    p.write_bytes(data)
    if sidecar:
        (tmp_path / "micropython.bin.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  micropython.bin\n")
    return p


def _flash(port, image, **kw):
    kw.setdefault("stub", False)  # the mock is the ROM loader; it does not run esptool's stub
    kw.setdefault("baud", 115200)
    kw.setdefault("connect_attempts", 2)
    return flash_device(port, image, **kw)


def test_flash_writes_table_runtime_and_factory_record(tmp_path):
    app = _app_image(150_000)
    img = _image(tmp_path, app)
    with EspRomMock(mac=bytes.fromhex(MAC)) as m:
        data_part = BOARD.partition("data")
        m.flash[data_part.offset:data_part.offset + 4096] = b"\0" * 4096  # old data: must be erased
        m.flash[0x1000:0x1010] = b"BOOTLOADER-KEPT!"
        rep = _flash(m.port, img, serial="HH1-2026-TEST01")
        flash = bytes(m.flash)
    ota0, factory = BOARD.partition("ota_0"), BOARD.partition("factory")
    assert flash[0x8000:0x9000] == partitions.table_for_board(BOARD)
    assert flash[ota0.offset:ota0.offset + len(app)] == app
    assert flash[ota0.offset + len(app):ota0.offset + ota0.size] == b"\xff" * (ota0.size - len(app))
    rec = parse_factory_record(flash[factory.offset:factory.offset + 4096])
    assert rec["serial"] == "HH1-2026-TEST01" and rec["mac"] == MAC
    assert rec["hw_rev"] == BOARD.hardware_revision and rec["board"] == BOARD.name
    assert rec["factory_test"] == "pass"
    for name in ("nvs", "otadata", "ota_1", "app", "romfs", "data"):
        p = BOARD.partition(name)
        assert flash[p.offset:p.offset + p.size].count(0xFF) == p.size, f"{name} not erased"
    assert flash[0x1000:0x1010] == b"BOOTLOADER-KEPT!"  # an app-only image leaves the bootloader
    assert rep.mac == MAC and rep.serial == "HH1-2026-TEST01" and not rep.bootloader_written
    assert rep.bytes_written == 0x1000 + sum(p.size for p in BOARD.partitions)  # table + every partition
    assert rep.wire_bytes == sum(r["wire_bytes"] for r in rep.regions)
    assert 0 < m.bytes_in - rep.wire_bytes < 4096  # the rest is connecting: SYNC, chip detection
    assert {r["what"] for r in rep.regions} == {"partition table"} | {p.name for p in BOARD.partitions}


def test_merged_image_writes_its_bootloader(tmp_path):
    boot = bytes([0xE9]) + os.urandom(20_000)
    merged = bytearray(b"\xff" * 0xF000)
    merged[:len(boot)] = boot
    merged[0x7000:0x7002] = b"\xaa\x50"  # the image's own table: replaced by the board's
    app = _app_image(40_000)
    img = _image(tmp_path, bytes(merged) + app)
    with EspRomMock() as m:
        rep = _flash(m.port, img)
        flash = bytes(m.flash)
    assert rep.bootloader_written
    assert flash[0x1000:0x1000 + len(boot)] == boot
    assert flash[0x8000:0x9000] == partitions.table_for_board(BOARD)
    assert flash[0x10000:0x10000 + len(app)] == app


def test_bad_digest_touches_nothing(tmp_path):
    img = _image(tmp_path, _app_image(10_000))
    with EspRomMock() as m:
        with pytest.raises(DigestError, match="expected"):
            _flash(m.port, img, sha256="00" * 32)
        (tmp_path / "micropython.bin.sha256").unlink()
        with pytest.raises(DigestError, match="No expected SHA-256"):
            _flash(m.port, img)
        assert m.bytes_in == 0


def test_image_bigger_than_the_slot(tmp_path):
    img = _image(tmp_path, _app_image(BOARD.partition("ota_0").size + 4))
    with EspRomMock() as m:
        with pytest.raises(ImageTooBigError, match="ota_0 slot holds"):
            _flash(m.port, img)
        assert m.bytes_in == 0


def test_no_bootloader_answering(tmp_path):
    img = _image(tmp_path, _app_image(10_000))
    with EspRomMock(silent=True) as m:
        with pytest.raises(NoBootloaderError, match="hold BOOT") as e:
            _flash(m.port, img, connect_attempts=1)
        assert m.bytes_in > 0  # esptool did try to sync
    assert e.value.exit_code == 5


def test_not_an_esp32(tmp_path):
    img = _image(tmp_path, _app_image(10_000))
    with EspRomMock(chip="esp8266") as m:
        with pytest.raises(NotEsp32Error, match="ESP8266, not an ESP32"):
            _flash(m.port, img)
        assert 0x02 not in m.commands and 0x10 not in m.commands  # nothing written


def test_flash_chip_too_small(tmp_path):
    img = _image(tmp_path, _app_image(10_000))
    with EspRomMock(flash_size=4 << 20) as m:
        with pytest.raises(FlashTooSmallError, match="4 MiB"):
            _flash(m.port, img)


def test_port_missing_and_busy(tmp_path):
    img = _image(tmp_path, _app_image(10_000))
    with pytest.raises(PortMissingError, match="does not exist"):
        _flash(str(tmp_path / "ttyUSB9"), img)
    with EspRomMock() as m:
        fd = os.open(m.port, os.O_RDWR | os.O_NOCTTY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what another esptool/pyserial holds
            with pytest.raises(PortBusyError, match="busy"):
                _flash(m.port, img)
        finally:
            os.close(fd)


def test_cli_flash_json_and_audit(tmp_path, capsys):
    img = _image(tmp_path, _app_image(20_000))
    home = tmp_path / "home"
    with EspRomMock() as m:
        rc = main(["flash", "--port", m.port, "--runtime", str(img), "--no-stub", "--baud", "115200",
                   "--no-deploy", "--serial", "HH1-2026-CLI001", "--home", str(home), "--json",
                   "--technician", "tess"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["serial"] == "HH1-2026-CLI001" and out["mac"] == MAC
    rc = main(["flash", "--port", str(tmp_path / "nope"), "--runtime", str(img), "--no-deploy",
               "--home", str(home), "--technician", "tess"])
    assert rc == 3 and "does not exist" in capsys.readouterr().err
    rows = audit.entries(home / "fleet.db", action="flash")
    assert [(r["unit"], r["result"], r["who"]) for r in rows] == [
        ("HH1-2026-CLI001", "ok", "tess"), (str(tmp_path / "nope"), "failed", "tess")]
    assert rows[0]["detail"]["mac"] == MAC


# -- virtual hubs: flash re-images ----------------------------------------------------------
def test_flash_reimages_a_virtual_hub(tmp_path, bundle, capsys):
    from hubctl.vhub.hubdir import HubDir

    hub = HubDir.create(tmp_path / "hub", bundle, serial="HH1-2026-OLD001")
    with open(hub.image("data"), "r+b") as f:
        f.write(b"old readings")
    app = _app_image(30_000)
    img = _image(tmp_path, app)
    rc = main(["flash", "--port", str(hub.path), "--runtime", str(img), "--serial", "HH1-2026-NEW001",
               "--home", str(tmp_path / "home"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["virtual"] and out["serial"] == "HH1-2026-NEW001"
    again = HubDir.open(hub.path)
    again.check_images()  # a bootable hub: factory record, app filesystem, erased data
    assert again.serial == "HH1-2026-NEW001"
    assert again.image("ota_0").read_bytes()[:len(app)] == app
    assert again.image("data").read_bytes()[:12] == b"\xff" * 12
    bad = _image(tmp_path, _app_image(1000), sidecar=False)
    assert main(["flash", "--port", str(hub.path), "--runtime", str(bad), "--home", str(tmp_path / "home")]) == 2
    assert HubDir.open(hub.path).serial == "HH1-2026-NEW001"  # a refused flash changed nothing


@pytest.mark.hil
def test_flash_refuses_a_running_virtual_hub(vhub, tmp_path):
    from hubctl.errors import HubStateError
    from hubctl.flash import flash_virtual

    img = _image(tmp_path, _app_image(1000))
    with pytest.raises(HubStateError, match="is running"):
        flash_virtual(str(vhub.path), img)
    with vhub.world() as w:
        assert w.state()["powered"]  # still running, untouched
