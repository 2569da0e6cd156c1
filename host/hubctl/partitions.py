"""The ESP-IDF partition table in its binary form: what the second-stage
bootloader and the MicroPython runtime (``esp32.Partition``) read at flash
offset 0x8000. Generated from the board's layout in hardware/<board>.json.

Format (ESP-IDF Programming Guide, API Guides > Partition Tables,
https://docs.espressif.com/projects/esp-idf/en/latest/esp32/api-guides/partition-tables.html,
and the entry struct ``esp_partition_info_t`` in esp_flash_partitions.h):

    one 32-byte entry per partition, little-endian:
      0   2  magic 0xAA 0x50 (ESP_PARTITION_MAGIC 0x50AA)
      2   1  type      (0x00 app, 0x01 data, 0x40-0xFE custom)
      3   1  subtype   (app: factory 0x00, ota_N 0x10+N; data: ota 0x00, nvs 0x02, fat 0x81, ...)
      4   4  offset
      8   4  size
      12 16  label, UTF-8, NUL-padded (a 16-byte label has no terminator)
      28  4  flags (bit 0 encrypted, bit 1 read-only)
    then the MD5 entry: 0xEB 0xEB, 14 x 0xFF, MD5 of all entry bytes before it;
    then 0xFF up to 0xC00 bytes (the table's maximum length; the rest of the
    4 KiB sector is kept for a secure-boot signature). An all-0xFF entry ends
    the table.

Rules checked when a table is made (the same ESP-IDF's gen_esp32part
enforces): partitions start after the table's sector (0x9000), app
partitions on 64 KiB boundaries, data partitions on 4 KiB boundaries, no
overlaps, unique labels of at most 16 bytes, otadata exactly 8 KiB, and all
inside the flash.

Pure functions of bytes; vectors in protocol/vectors/partitions.json.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

TABLE_OFFSET = 0x8000
TABLE_SECTOR = 0x1000
TABLE_MAX = 0xC00
ENTRY_SIZE = 32
MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
FLAG_ENCRYPTED = 1 << 0
FLAG_READONLY = 1 << 1
_ENTRY = struct.Struct("<2sBBII16sI")
_APP, _DATA = 0x00, 0x01
_OTADATA_SIZE = 0x2000


@dataclass(frozen=True)
class Entry:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0


def entries_for_board(board) -> list[Entry]:
    """The table entries for a hubctl.hardware.Board, in offset order, checked."""
    entries = [Entry(p.label, p.type, p.subtype, p.offset, p.size) for p in board.partitions]
    entries.sort(key=lambda e: e.offset)
    check(entries, flash_size=board.flash_size)
    return entries


def check(entries: list[Entry], *, flash_size: int | None = None) -> None:
    """Raise ValueError naming the first entry that breaks a rule."""
    seen = set()
    end_prev, prev = TABLE_OFFSET + TABLE_SECTOR, "the partition table"
    for e in sorted(entries, key=lambda e: e.offset):
        raw = e.label.encode()
        if not raw or len(raw) > 16:
            raise ValueError(f"partition label {e.label!r} must be 1 to 16 bytes")
        if e.label in seen:
            raise ValueError(f"partition label {e.label!r} is used twice")
        seen.add(e.label)
        align = 0x10000 if e.type == _APP else 0x1000
        if e.offset % align:
            raise ValueError(f"partition {e.label!r} at {e.offset:#x} is not aligned to {align:#x}")
        if e.size <= 0:
            raise ValueError(f"partition {e.label!r} has size {e.size}")
        if e.offset < end_prev:
            raise ValueError(f"partition {e.label!r} at {e.offset:#x} overlaps {prev} (ends {end_prev:#x})")
        if e.type == _DATA and e.subtype == 0x00 and e.size != _OTADATA_SIZE:
            raise ValueError(f"otadata partition {e.label!r} must be {_OTADATA_SIZE:#x} bytes, not {e.size:#x}")
        if flash_size is not None and e.offset + e.size > flash_size:
            raise ValueError(f"partition {e.label!r} ends at {e.offset + e.size:#x}, past the "
                             f"{flash_size:#x}-byte flash")
        end_prev, prev = e.offset + e.size, f"partition {e.label!r}"
    if (len(entries) + 1) * ENTRY_SIZE > TABLE_MAX - ENTRY_SIZE:
        raise ValueError(f"{len(entries)} partitions do not fit in a {TABLE_MAX:#x}-byte table")


def encode(entries: list[Entry]) -> bytes:
    """The binary table: entries, MD5 entry, 0xFF padding to 0xC00 bytes."""
    body = b"".join(_ENTRY.pack(MAGIC, e.type, e.subtype, e.offset, e.size,
                                e.label.encode(), e.flags) for e in entries)
    body += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    if len(body) > TABLE_MAX - ENTRY_SIZE:  # keep room for the all-0xFF end marker
        raise ValueError(f"{len(entries)} partitions do not fit in a {TABLE_MAX:#x}-byte table")
    return body + b"\xff" * (TABLE_MAX - len(body))


def decode(table: bytes) -> list[Entry]:
    """Parse a binary table; raises ValueError for a bad magic, a wrong MD5,
    a label that is not UTF-8 or a missing end marker."""
    out: list[Entry] = []
    md5 = hashlib.md5()
    seen_md5 = False
    for off in range(0, min(len(table), TABLE_MAX), ENTRY_SIZE):
        raw = table[off:off + ENTRY_SIZE]
        if len(raw) < ENTRY_SIZE:
            break
        if raw == b"\xff" * ENTRY_SIZE:
            return out
        if raw[:2] == MD5_MAGIC:
            if raw[16:] != md5.digest():
                raise ValueError(f"partition table MD5 mismatch at entry {off // ENTRY_SIZE} "
                                 f"(table says {raw[16:].hex()}, entries hash to {md5.hexdigest()})")
            seen_md5 = True
            continue
        if seen_md5:
            raise ValueError(f"partition entry {off // ENTRY_SIZE} follows the MD5 entry")
        magic, t, st, offset, size, label, flags = _ENTRY.unpack(raw)
        if magic != MAGIC:
            raise ValueError(f"partition entry {off // ENTRY_SIZE} has magic {magic.hex()}, not aa50")
        try:
            name = label.split(b"\0", 1)[0].decode()
        except UnicodeDecodeError:
            raise ValueError(f"partition entry {off // ENTRY_SIZE} has a label that is not UTF-8") from None
        md5.update(raw)
        out.append(Entry(name, t, st, offset, size, flags))
    raise ValueError("partition table has no end marker (an all-0xFF entry) within 0xC00 bytes")


def table_for_board(board) -> bytes:
    """The 4 KiB sector written at TABLE_OFFSET: the table, then erased flash."""
    return encode(entries_for_board(board)) + b"\xff" * (TABLE_SECTOR - TABLE_MAX)
