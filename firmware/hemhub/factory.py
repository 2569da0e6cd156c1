"""Factory record reader (layout: protocol/factory-record.md)."""
import binascii
import json
import struct

from micropython import const

_MAGIC = b"HMHF"
_HEADER = const(8)
_BLOCK = const(4096)


def parse(block):
    """Parse a factory record from the first block of the factory partition.

    Returns (record dict, None) or (None, reason)."""
    if len(block) < _HEADER or block[:4] != _MAGIC:
        return None, "no factory record (bad magic)"
    version, _, length = struct.unpack_from("<BBH", block, 4)
    if version != 1:
        return None, "unknown factory record version %d" % version
    if _HEADER + length + 4 > len(block):
        return None, "factory record length %d runs past the block" % length
    (crc,) = struct.unpack_from("<I", block, _HEADER + length)
    if binascii.crc32(memoryview(block)[: _HEADER + length]) != crc:
        return None, "factory record CRC mismatch"
    try:
        return json.loads(bytes(block[_HEADER : _HEADER + length])), None
    except ValueError:
        return None, "factory record body is not JSON"


def read():
    import esp32

    parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="factory")
    if not parts:
        return None, "no factory partition"
    part = parts[0]
    head = bytearray(_HEADER)
    part.readblocks(0, head, 0)
    if head[:4] != _MAGIC:
        return parse(head)
    length = struct.unpack_from("<H", head, 6)[0]
    # Read only what the record needs (a few hundred bytes, not the 4 KiB block).
    buf = bytearray(min(_BLOCK, _HEADER + length + 4))
    part.readblocks(0, buf, 0)
    return parse(buf)
