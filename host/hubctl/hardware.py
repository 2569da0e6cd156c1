"""Board definitions from hardware/*.json: partitions and pins as data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "hardware"
DEFAULT_BOARD = "esp32-hemhub-r1"

# ESP-IDF partition type and subtype numbers (esp_partition.h).
_TYPES = {"app": 0x00, "data": 0x01}
_SUBTYPES = {
    "factory": 0x00, "ota_0": 0x10, "ota_1": 0x11,
    "ota": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81, "spiffs": 0x82,
}


@dataclass(frozen=True)
class Partition:
    name: str
    label: str
    type: int
    subtype: int
    offset: int
    size: int


@dataclass(frozen=True)
class Board:
    name: str
    hardware_revision: str
    flash_size: int
    block_size: int
    partitions: tuple[Partition, ...]
    pins: dict

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)

    def env_table(self) -> str:
        """The partition table as the emulated esp32 module reads it (HEMHUB_PARTS)."""
        return ",".join(f"{p.name}:{p.label}:{p.type}:{p.subtype}:{p.offset}:{p.size}"
                        for p in self.partitions)


def _subtype(value: str) -> int:
    if value in _SUBTYPES:
        return _SUBTYPES[value]
    return int(value, 0)


def load_board(name: str = DEFAULT_BOARD) -> Board:
    path = HARDWARE_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in HARDWARE_DIR.glob("*.json")))
        raise UsageError(f"Unknown board {name!r}.", hint=f"Known boards: {known}.")
    d = json.loads(path.read_text())
    parts = tuple(
        Partition(p["name"], p.get("label", p["name"]), _TYPES[p["type"]], _subtype(p["subtype"]),
                  p["offset"], p["size"])
        for p in d["partitions"]
    )
    return Board(d["board"], d["hardware_revision"], d["flash_size"], d["flash_block_size"],
                 parts, d["pins"])
