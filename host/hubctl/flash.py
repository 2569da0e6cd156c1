"""hubctl flash: put a new ESP32 hub's flash in its factory state with esptool,
then deploy the application.

What is written where (hardware/<board>.json, protocol/factory-record.md):

    0x1000   the ESP-IDF bootloader, only when IMAGE.bin is a merged image
             (bootloader + table + app, as published for MicroPython boards);
             otherwise the bootloader already on the board is kept
    0x8000   the partition table generated from the board file (partitions.py)
    ota_0    the MicroPython runtime (the app image), then erased flash to the end of the slot
    factory  the factory record (serial, hardware revision, MAC read from the chip's eFuses)
    others   erased (0xFF): nvs, otadata, ota_1, app, romfs, data

Every partition is written whole, the unused ones as erased blocks, so the
result does not depend on what the board held before and every byte is
covered by esptool's MD5 check (SPI_FLASH_MD5 after each region). Data goes
compressed (FLASH_DEFL_*), so erased blocks cost almost nothing on the wire.

esptool is used as a library (esptool.cmds: detect_chip, run_stub,
attach_flash, detect_flash_size, write_flash, reset_chip; the documented
scripting API of v5), not as a subprocess: hubctl gets typed results (the
chip object, its MAC, flash size) and esptool's FatalError to translate, the
byte counts for the figures, and no output parsing. esptool's own console
output is captured and shown only in an error's context.

On a virtual hub (``--port DIR`` holding hub.json) flashing re-images the hub
(HubDir.create with force) and writes the runtime into its ota_0 image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import HubNotFoundError, HubStateError, TransportError, UsageError
from .hardware import load_board
from .partitions import TABLE_OFFSET, table_for_board
from .progress import byte_progress

ESP_IMAGE_MAGIC = 0xE9
BOOTLOADER_OFFSET = 0x1000
_MERGED_TABLE_AT = TABLE_OFFSET - BOOTLOADER_OFFSET  # in an image that starts at 0x1000
_MERGED_APP_AT = 0x10000 - BOOTLOADER_OFFSET
_BOOT_HINT = ("Put the board in its bootloader: hold BOOT, press and release EN, release BOOT; "
              "then run flash again (add --no-reset if the board has no auto-reset circuit).")


# -- errors ---------------------------------------------------------------------------
class PortMissingError(HubNotFoundError):
    """The serial port does not exist."""


class PortBusyError(HubStateError):
    """Another program holds the serial port."""


class NotEsp32Error(HubNotFoundError):
    """The board answering is another chip."""


class NoBootloaderError(TransportError):
    """Nothing answered the bootloader's SYNC."""


class ImageTooBigError(UsageError):
    """The runtime image does not fit its slot."""


class DigestError(UsageError):
    """The runtime image's SHA-256 is missing or wrong."""


class FlashTooSmallError(HubStateError):
    """The board's flash chip is smaller than the layout needs."""


# -- the runtime image ----------------------------------------------------------------
def expected_digest(image: Path, given: str | None) -> str:
    """--runtime-sha256, else IMAGE.bin.sha256 next to it (sha256sum format)."""
    if given:
        d = given.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", d):
            raise DigestError(f"--runtime-sha256 {given!r} is not 64 hex digits.")
        return d
    side = image.with_name(image.name + ".sha256")
    if not side.is_file():
        raise DigestError(f"No expected SHA-256 for {image}.",
                          hint=f"Pass --runtime-sha256 HEX (from the release page) or put it in {side}.")
    words = side.read_text().split()
    if not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise DigestError(f"{side} does not start with a SHA-256 (64 hex digits).")
    return words[0].lower()


def read_runtime(image: Path, sha256: str | None) -> bytes:
    image = Path(image)
    if not image.is_file():
        raise UsageError(f"Runtime image {image} does not exist.",
                         hint="Pass the MicroPython ESP32 firmware .bin with --runtime.")
    want = expected_digest(image, sha256)
    data = image.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise DigestError(f"{image} has SHA-256 {got}, expected {want}.",
                          hint="The file is damaged or not the release you meant; download it again.")
    if not data or data[0] != ESP_IMAGE_MAGIC:
        raise UsageError(f"{image} is not an ESP32 firmware image (first byte is not 0xE9).",
                         hint="Use the MicroPython ESP32 .bin (an app image, or the merged image "
                              "meant for offset 0x1000).")
    return data


def split_runtime(data: bytes) -> tuple[bytes | None, bytes]:
    """(bootloader, app). A merged image for offset 0x1000 holds the bootloader,
    a partition table at +0x7000 and the app at +0xF000; any other image is an
    app image on its own."""
    if len(data) > _MERGED_APP_AT and data[_MERGED_TABLE_AT:_MERGED_TABLE_AT + 2] == b"\xaa\x50" \
            and data[_MERGED_APP_AT] == ESP_IMAGE_MAGIC:
        return data[:_MERGED_TABLE_AT].rstrip(b"\xff"), data[_MERGED_APP_AT:]
    return None, data


def new_serial() -> str:
    return f"HH1-{datetime.now(timezone.utc).year}-{secrets.token_hex(3).upper()}"


def plan(board, app: bytes, factory: bytes, bootloader: bytes | None = None) -> list[tuple[str, int, bytes]]:
    """(what, offset, bytes) for every region written, in flash order."""
    slot = board.partition("ota_0")
    if len(app) > slot.size:
        raise ImageTooBigError(f"The runtime image is {len(app)} bytes; the ota_0 slot holds {slot.size}.",
                               hint="Use the MicroPython build for this board (no PSRAM, 8 MiB flash).")
    out = []
    if bootloader is not None:
        out.append(("bootloader", BOOTLOADER_OFFSET, bootloader + b"\xff" * (_MERGED_TABLE_AT - len(bootloader))))
    out.append(("partition table", TABLE_OFFSET, table_for_board(board)))
    for p in sorted(board.partitions, key=lambda p: p.offset):
        content = app if p.name == "ota_0" else factory if p.name == "factory" else b""
        out.append((p.name, p.offset, content + b"\xff" * (p.size - len(content))))
    return out


@dataclass
class FlashReport:
    port: str
    chip: str = ""
    mac: str = ""
    serial: str = ""
    board: str = ""
    runtime_sha256: str = ""
    runtime_bytes: int = 0
    bootloader_written: bool = False
    flash_size: int = 0
    regions: list[dict] = field(default_factory=list)
    bytes_written: int = 0  # flash bytes covered (uncompressed)
    wire_bytes: int = 0  # bytes sent to the serial port, SLIP framing included
    seconds: float = 0.0
    deployed: dict | None = None
    virtual: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# -- esptool ------------------------------------------------------------------------------
def _translate(e: Exception, port: str, log: str) -> Exception:
    msg = str(e)
    tail = " ".join(log.strip().splitlines()[-3:])
    if "busy" in msg or "exclusively lock" in msg or "Resource temporarily unavailable" in msg:
        return PortBusyError(f"{port} is busy: another program has it open.",
                             hint="Close the serial monitor, mpremote or other esptool using it, then retry.")
    if "No serial data received" in msg or "Failed to connect" in msg or "Invalid head of packet" in msg:
        return NoBootloaderError(f"No ESP32 bootloader answered on {port}.", hint=_BOOT_HINT)
    if "Unexpected chip" in msg or "autodetect" in msg:
        return NotEsp32Error(f"The chip on {port} is not one esptool knows ({msg.splitlines()[0]}).",
                             hint="hemhub hubs are ESP32 (ESP32-WROOM-32E); check the port.")
    return TransportError(f"esptool failed on {port}: {msg.splitlines()[0] if msg else type(e).__name__}"
                          + (f" (last output: {tail})" if tail else ""),
                          hint="Check the cable and power, then run flash again; it rewrites everything.")


def _check_port(port: str) -> None:
    if "://" in port:  # pyserial URL (socket://, rfc2217://)
        return
    if not os.path.exists(port):
        try:
            from serial.tools.list_ports import comports

            ports = ", ".join(sorted(p.device for p in comports())) or "none"
        except Exception:  # noqa: BLE001 - listing is only a hint
            ports = "unknown"
        raise PortMissingError(f"Serial port {port} does not exist.",
                               hint=f"Plug the hub in and check the port (ports seen: {ports}).")


def flash_device(port: str, runtime: Path, *, sha256: str | None = None, serial: str | None = None,
                 board: str | None = None, baud: int = 460800, stub: bool = True, reset: bool = True,
                 connect_attempts: int = 7, progress_factory=None) -> FlashReport:
    """Flash a real ESP32 (or anything speaking its ROM protocol) on ``port``.

    ``stub=False`` talks to the ROM loader itself (slower; what the test's mock
    bootloader speaks). ``reset=False`` for boards without the DTR/RTS
    auto-reset circuit (the technician holds BOOT). ``progress_factory(total)``
    returns a callback called with flash bytes as they are written, None at the end."""
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        detect_flash_size,
        reset_chip,
        run_stub,
        write_flash,
    )
    from esptool.util import FatalError, flash_size_bytes
    from serial import SerialException

    from .vhub.hubdir import factory_record

    t0 = time.monotonic()
    b = load_board(board) if board else load_board()
    data = read_runtime(runtime, sha256)
    bootloader, app = split_runtime(data)
    total = sum(len(blob) for _, _, blob in plan(b, app, b"", bootloader))  # checks sizes first
    _check_port(port)
    rep = FlashReport(port=port, board=b.name, runtime_sha256=hashlib.sha256(data).hexdigest(),
                      runtime_bytes=len(app), bootloader_written=bootloader is not None)
    out = io.StringIO()
    esp = None
    progress = progress_factory(total) if progress_factory else None  # before esptool's output is captured
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                esp = detect_chip(port, 115200, "default-reset" if reset else "no-reset",
                                  connect_attempts=connect_attempts)
            except SerialException as e:
                raise _translate(e, port, out.getvalue()) from None
            rep.chip = esp.get_chip_description()
            if esp.CHIP_NAME != "ESP32":
                raise NotEsp32Error(f"The board on {port} is an {esp.CHIP_NAME}, not an ESP32.",
                                    hint=f"hemhub's {b.name} is an ESP32 board; check the port.")
            rep.mac = bytes(esp.read_mac()).hex()
            if stub:
                esp = run_stub(esp)
            if baud != 115200:
                esp.change_baud(baud)
            attach_flash(esp)
            size = flash_size_bytes(detect_flash_size(esp) or "0MB") or 0
            rep.flash_size = size
            if size < b.flash_size:
                raise FlashTooSmallError(
                    f"The board on {port} has {size // (1 << 20)} MiB of flash; {b.name} needs "
                    f"{b.flash_size // (1 << 20)} MiB.", hint="Use an ESP32-WROOM-32E-N8 (8 MiB) module.")
            rep.serial = serial or new_serial()
            factory = factory_record({
                "serial": rep.serial, "hw_rev": b.hardware_revision, "mac": rep.mac, "board": b.name,
                "made": datetime.now(timezone.utc).date().isoformat(), "factory_test": "pass",
            })
            regions = plan(b, app, factory, bootloader)
            port_obj = esp._port
            real_write = port_obj.write
            counter = [0]

            def counting_write(buf):
                counter[0] += len(buf)
                return real_write(buf)
            port_obj.write = counting_write
            try:
                for what, off, blob in regions:
                    before = counter[0]
                    write_flash(esp, [(off, blob)], flash_size="keep", compress=True, no_progress=True)
                    rep.regions.append({"what": what, "offset": off, "bytes": len(blob),
                                        "wire_bytes": counter[0] - before})
                    rep.bytes_written += len(blob)
                    if progress:
                        progress(len(blob))
            finally:
                port_obj.write = real_write
            rep.wire_bytes = counter[0]
            reset_chip(esp, "hard-reset" if reset else "no-reset")
    except FatalError as e:
        raise _translate(e, port, out.getvalue()) from None
    except SerialException as e:
        raise _translate(e, port, out.getvalue()) from None
    finally:
        if progress:
            progress(None)
        if esp is not None:
            with contextlib.suppress(Exception):
                esp._port.close()
    rep.seconds = time.monotonic() - t0
    return rep


# -- virtual hub ----------------------------------------------------------------------
def is_virtual(port: str) -> bool:
    return (Path(port) / "hub.json").is_file()


def flash_virtual(dir_: str, runtime: Path, *, sha256: str | None = None,
                  serial: str | None = None) -> FlashReport:
    """Re-image a virtual hub: the same runtime checks, then HubDir.create
    with force (all partitions rewritten, a new factory record) and the
    runtime app image in its ota_0 partition image."""
    import tempfile

    from .build import build
    from .errors import HubctlError
    from .vhub.hubdir import HubDir
    from .vhub.world import WorldClient

    t0 = time.monotonic()
    old = HubDir.open(dir_)
    data = read_runtime(runtime, sha256)
    _, app = split_runtime(data)
    plan(old.board, app, b"")
    if old.world_socket.exists():
        try:
            with WorldClient.for_hub(old, timeout=2) as w:
                w.state()
            running = True
        except HubctlError:
            running = False
        if running:
            raise HubStateError(f"The virtual hub in {old.path} is running.",
                                hint=f"Stop it first: hubctl vhub stop {old.path}")
    with tempfile.TemporaryDirectory(prefix="hemhub-build-") as tmp:
        bundle = build(Path(tmp) / "build")
        hub = HubDir.create(old.path, bundle, board=old.board.name, serial=serial, force=True)
    part = hub.board.partition("ota_0")
    with open(hub.image("ota_0"), "r+b") as f:
        f.write(app + b"\xff" * (part.size - len(app)))
    rep = FlashReport(port=str(hub.path), chip="virtual ESP32", mac=hub.info["mac"], serial=hub.serial,
                      board=hub.board.name, runtime_sha256=hashlib.sha256(data).hexdigest(),
                      runtime_bytes=len(app), virtual=True,
                      deployed={"version": bundle.version, "app_bytes": bundle.app_bytes})
    rep.seconds = time.monotonic() - t0
    return rep


# -- deploy after flashing ----------------------------------------------------------------
def deploy_after_flash(port: str, *, wait_s: float = 20.0, progress_factory=None) -> dict:
    """Build the application and deploy it once the freshly flashed board has
    booted MicroPython (its REPL answers on the same port)."""
    import tempfile

    from .build import build
    from .deploy import deploy
    from .errors import HubctlError
    from .transport import HubConsole

    deadline = time.monotonic() + wait_s
    while True:
        try:
            with HubConsole(port) as con:
                con.exec("print(1)")
            break
        except HubctlError:
            if time.monotonic() > deadline:
                raise HubStateError(f"The board on {port} did not start MicroPython after flashing.",
                                    hint="Press EN to reset it, check the runtime image, then run "
                                         f"hubctl deploy --port {port}.") from None
            time.sleep(1)
    with tempfile.TemporaryDirectory(prefix="hemhub-build-") as tmp:
        bundle = build(Path(tmp) / "build")
        r = deploy(port, bundle.dir, progress_factory=progress_factory)
    return {"version": r.version, "slot": r.slot, "verified": r.verified}


# -- CLI ----------------------------------------------------------------------------------
def _cmd_flash(args) -> int:
    from . import audit
    from . import home as _home

    db = _home.db_path(_home.home(args.home))
    unit = args.serial or args.port
    try:
        if is_virtual(args.port):
            rep = flash_virtual(args.port, Path(args.runtime), sha256=args.runtime_sha256, serial=args.serial)
        else:
            rep = flash_device(args.port, Path(args.runtime), sha256=args.runtime_sha256, serial=args.serial,
                               board=args.board, baud=args.baud, stub=not args.no_stub,
                               reset=not args.no_reset, connect_attempts=args.connect_attempts,
                               progress_factory=byte_progress("flashing"))
            if not args.no_deploy:
                rep.deployed = deploy_after_flash(args.port, progress_factory=byte_progress("deploying"))
    except Exception as e:
        audit.record(db, "flash", unit, "failed", who=args.technician,
                     detail={"port": args.port, "error": str(e)[:200]})
        raise
    audit.record(db, "flash", rep.serial or unit, "ok", who=args.technician,
                 detail={"port": args.port, "mac": rep.mac, "board": rep.board,
                         "runtime_sha256": rep.runtime_sha256, "virtual": rep.virtual,
                         "firmware": (rep.deployed or {}).get("version")})
    if args.json:
        print(json.dumps(rep.as_dict(), indent=1, sort_keys=True))
    elif rep.virtual:
        print(f"re-imaged virtual hub {rep.serial} in {rep.port}: runtime {rep.runtime_bytes} bytes "
              f"in ota_0, firmware {rep.deployed['version']} installed, {rep.seconds:.1f} s")
    else:
        print(f"flashed {rep.chip} (MAC {rep.mac}) on {rep.port} as {rep.serial}: "
              f"{rep.bytes_written} flash bytes in {rep.wire_bytes} serial bytes, verified by MD5, "
              f"{rep.seconds:.1f} s" + (f"; deployed firmware {rep.deployed['version']}" if rep.deployed else
                                         "; application not deployed (--no-deploy)"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("flash", help="write runtime, partition table and factory record to a new ESP32 "
                                     "(esptool), then deploy; on a virtual hub DIR: re-image it")
    p.add_argument("--port", required=True, help="serial port of the board in its bootloader, or a virtual hub DIR")
    p.add_argument("--runtime", required=True, help="MicroPython ESP32 runtime image (.bin)")
    p.add_argument("--runtime-sha256", help="its expected SHA-256 (default: read IMAGE.bin.sha256)")
    p.add_argument("--serial", help="serial number (default: a new unique one)")
    p.add_argument("--board", help="board from hardware/ (default esp32-hemhub-r1)")
    p.add_argument("--baud", type=int, default=460800, help="baud rate after connecting (default 460800)")
    p.add_argument("--no-stub", action="store_true", help="talk to the ROM loader directly (slower)")
    p.add_argument("--no-reset", action="store_true",
                   help="do not reset through DTR/RTS (board already held in its bootloader)")
    p.add_argument("--connect-attempts", type=int, default=7, help="bootloader connection attempts (default 7)")
    p.add_argument("--no-deploy", action="store_true", help="do not deploy the application afterwards")
    p.add_argument("--technician", help="who (default $USER), for the audit log")
    p.add_argument("--home", help="state directory (default $HEMHUB_HOME)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_flash)
