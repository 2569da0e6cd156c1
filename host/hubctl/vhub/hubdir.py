"""A virtual hub's directory: hub.json (the virtual hardware) and one raw
image file per flash partition, named <partition>.img and sized exactly as the
partition in hardware/<board>.json.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..build import Bundle
from ..errors import HubNotFoundError, HubStateError, UsageError
from ..hardware import Board, load_board
from .interp import BOARD_DIR, micropython_command

HUB_FILE = "hub.json"
FACTORY_MAGIC = b"HMHF"


def factory_record(fields: dict) -> bytes:
    """Encode the factory record (protocol/factory-record.md)."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    head = FACTORY_MAGIC + struct.pack("<BBH", 1, 0, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


def parse_factory_record(block: bytes) -> dict:
    """Decode a factory record; raises ValueError naming what is wrong."""
    if block[:4] != FACTORY_MAGIC:
        raise ValueError("no factory record (bad magic)")
    version, _, length = struct.unpack_from("<BBH", block, 4)
    if version != 1:
        raise ValueError(f"unknown factory record version {version}")
    if 8 + length + 4 > len(block):
        raise ValueError(f"factory record length {length} runs past the block")
    (crc,) = struct.unpack_from("<I", block, 8 + length)
    if zlib.crc32(block[: 8 + length]) != crc:
        raise ValueError("factory record CRC mismatch")
    return json.loads(block[8 : 8 + length])


@dataclass
class HubDir:
    path: Path
    info: dict
    board: Board

    # -- construction -----------------------------------------------------------------
    @classmethod
    def open(cls, path: os.PathLike | str) -> HubDir:
        p = Path(path).absolute()
        if not p.exists():
            raise HubNotFoundError(f"{p} does not exist.",
                                   hint=f"Create a hub there with: hubctl vhub create {p}")
        meta = p / HUB_FILE
        if not meta.is_file():
            raise HubNotFoundError(f"{p} is not a virtual hub (no {HUB_FILE}).",
                                   hint=f"Create one with: hubctl vhub create {p}")
        try:
            info = json.loads(meta.read_text())
        except ValueError as e:
            raise HubStateError(f"{meta} is not valid JSON ({e}).") from None
        return cls(p, info, load_board(info.get("board", "esp32-hemhub-r1")))

    @classmethod
    def create(cls, path: os.PathLike | str, bundle: Bundle, *, board: str | None = None,
               serial: str | None = None, force: bool = False) -> HubDir:
        p = Path(path).absolute()
        if (p / HUB_FILE).exists() and not force:
            raise UsageError(f"{p} already holds a virtual hub.",
                             hint="Use --force to re-image it (its data partition is erased).")
        if p.exists() and not (p / HUB_FILE).exists() and any(p.iterdir()):
            raise UsageError(f"{p} exists and is not empty; refusing to put a hub there.")
        b = load_board(board) if board else load_board()
        p.mkdir(parents=True, exist_ok=True)
        year = datetime.now(timezone.utc).year
        mac = bytes([0x02]) + secrets.token_bytes(5)  # locally administered, unicast
        info = {
            "board": b.name,
            "serial": serial or f"HH1-{year}-{secrets.token_hex(3).upper()}",
            "hw_rev": b.hardware_revision,
            "mac": mac.hex(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        hub = cls(p, info, b)
        for part in b.partitions:
            img = hub.image(part.name)
            with open(img, "wb") as f:  # erased flash
                f.truncate(0)
                f.write(b"\xff" * part.size)
        factory = factory_record({
            "serial": info["serial"], "hw_rev": info["hw_rev"], "mac": info["mac"],
            "board": b.name, "made": info["created"][:10], "factory_test": "pass",
        })
        with open(hub.image("factory"), "r+b") as f:
            f.write(factory)
        hub.install_app(bundle, fresh=True)
        (p / HUB_FILE).write_text(json.dumps(info, indent=1) + "\n")
        return hub

    # -- paths ------------------------------------------------------------------------
    def image(self, name: str) -> Path:
        return self.path / f"{name}.img"

    @property
    def console_file(self) -> Path:
        return self.path / "console"

    @property
    def world_socket(self) -> Path:
        p = self.path / "world.sock"
        if len(str(p.resolve())) < 100:  # AF_UNIX paths are limited to 108 bytes
            return p
        import hashlib

        short = Path("/tmp") / f"hemhub-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:16]}.sock"
        return short

    @property
    def pid_file(self) -> Path:
        return self.path / "supervisor.pid"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def serial(self) -> str:
        return self.info["serial"]

    # -- images -----------------------------------------------------------------------
    def imgtool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, HEMHUB_HUB_DIR=str(self.path.resolve()),
                   HEMHUB_PARTS=self.board.env_table(), HEMHUB_BOARD_DIR=str(BOARD_DIR))
        cmd = micropython_command(heapsize=None) + [str(BOARD_DIR / "_imgtool.py"), *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              cwd=str(BOARD_DIR), timeout=120)
        if check and (proc.returncode != 0 or "OK" not in proc.stdout):
            raise HubStateError(f"littlefs image tool failed ({' '.join(args)}): "
                                f"{(proc.stdout + proc.stderr).strip()}")
        return proc

    def install_app(self, bundle: Bundle, *, fresh: bool = False, slot: str = "rom") -> None:
        """Write boot.py and main.py to the app partition and the bundle to slot
        ``slot``: "rom" is the ROMFS partition (executed in place, the default);
        "a"/"b" are directories of the app partition."""
        label = self.board.partition("app").label
        if fresh:
            self.imgtool("mkfs", label)
        stage = self.path / ".stage"
        import shutil

        if stage.exists():
            shutil.rmtree(stage)
        shutil.copytree(bundle.root_dir, stage)
        if slot == "rom":
            self.write_romfs(bundle.romfs_image.read_bytes())
        else:
            shutil.copytree(bundle.app_dir, stage / slot)
        (stage / "slot").write_text(slot + "\n")
        try:
            self.imgtool("install", label, str(stage.resolve()))
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def write_romfs(self, image: bytes) -> None:
        part = self.board.partition("romfs")
        if len(image) > part.size:
            raise UsageError(f"The application's ROMFS image is {len(image)} bytes; the romfs "
                             f"partition holds {part.size}.")
        with open(self.image("romfs"), "r+b") as f:
            f.write(image + b"\xff" * (part.size - len(image)))

    def check_images(self, *, allow_damaged: bool = False) -> None:
        """Refuse a hub whose images are missing, truncated or corrupt, naming which.

        ``allow_damaged`` lets a hub with a corrupt factory record or data
        partition boot anyway, for diagnosis and fault-injection tests (the
        firmware reports both); missing, mis-sized or unmountable app images
        are always refused."""
        for part in self.board.partitions:
            img = self.image(part.name)
            if not img.is_file():
                raise HubStateError(f"{img} is missing (partition {part.name}).",
                                    hint="Restore it, or re-image the hub: hubctl vhub create --force DIR.")
            size = img.stat().st_size
            if size != part.size:
                what = "truncated" if size < part.size else "too large"
                raise HubStateError(
                    f"{img} is {what}: {size} bytes, the {part.name} partition is {part.size} bytes.",
                    hint="Restore it, or re-image the hub: hubctl vhub create --force DIR.")
        with open(self.image("factory"), "rb") as f:
            block = f.read(4096)
        try:
            parse_factory_record(block)
        except ValueError as e:
            if allow_damaged:
                return self._check_app()
            raise HubStateError(f"{self.image('factory')} is corrupt: {e}.",
                                hint="The factory record is written once at manufacture; "
                                     "re-image the hub (hubctl vhub create --force DIR).") from None
        self._check_app()
        if allow_damaged:
            return
        self._check_data()

    def _check_app(self) -> None:
        label = self.board.partition("app").label
        proc = self.imgtool("check", label, check=False)
        if "OK" not in proc.stdout:
            raise HubStateError(f"{self.image('app')} does not hold a littlefs filesystem "
                                f"({(proc.stdout + proc.stderr).strip() or 'mount failed'}).",
                                hint="Re-install the firmware: hubctl vhub create --force DIR.")

    def _check_data(self) -> None:
        data = self.image("data")
        with open(data, "rb") as f:
            head = f.read(8192)
        if head.count(b"\xff") != len(head):
            proc = self.imgtool("check", self.board.partition("data").label, check=False)
            if "OK" not in proc.stdout:
                raise HubStateError(
                    f"{data} holds neither a littlefs filesystem nor erased flash.",
                    hint="The firmware never formats a damaged data partition (it may hold the only "
                         "copy of readings). Restore the image, or boot anyway with "
                         "--allow-damaged to diagnose it.")
