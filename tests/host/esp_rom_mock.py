"""A mock ESP32 ROM serial bootloader on a pseudo-terminal, for testing the
esptool path of `hubctl flash` at the serial boundary (the USB port).

It answers the commands esptool 5.x sends to a classic ESP32 ROM loader
(``--no-stub``), as documented in Espressif's "Serial Protocol" page
(esptool docs, Advanced Topics > Serial Protocol,
https://docs.espressif.com/projects/esptool/en/latest/esp32/advanced-topics/serial-protocol.html):

- SLIP framing both ways: 0xC0 ends a packet, 0xC0/0xDB inside become
  0xDB 0xDC / 0xDB 0xDD.
- Command packet: direction 0x00, command, size (u16), checksum (u32), data.
  Response: direction 0x01, command, size, value (u32), data, then the status
  bytes (status, error; the ESP32 ROM appends two reserved bytes, 4 in all).
- SYNC (0x08): answered 8 times with a non-zero value (the ROM's, not the stub's 0).
- READ_REG (0x0A) / WRITE_REG (0x09): a small register file: the chip-detect
  magic at 0x40001000, eFuse words (MAC in BLK0 words 1 and 2), UART_CLKDIV
  (crystal estimate), the SPI0 user-command registers (see _spi_command).
- SPI_SET_PARAMS (0x0B), SPI_ATTACH (0x0D), CHANGE_BAUDRATE (0x0F): acknowledged.
- FLASH_BEGIN/DATA/END (0x02-0x04) and FLASH_DEFL_BEGIN/DATA/END (0x10-0x12):
  like the ROM, BEGIN erases the region first; DATA blocks carry
  ``size, seq, 0, 0`` then the data, with the XOR checksum (seed 0xEF) in the
  header checked (error 0x07 on mismatch), sequence numbers checked.
- SPI_FLASH_MD5 (0x13): the ROM form of the answer: 32 lower-case hex digits.
- GET_SECURITY_INFO (0x14) and anything else: "invalid message" (0x05), as the
  ESP32 ROM answers (it has no security-info command; esptool then detects the
  chip by its magic value).

Flash is an in-memory bytearray the test reads directly (8 MiB by default,
reported through the SPI RDID answer, so esptool's flash-size detection runs).
Modem lines: esptool's default reset pulses DTR/RTS; a Linux pty refuses those
ioctls, esptool warns "Chip was NOT reset. Setting RTS/DTR lines is not
supported" and carries on, so `hubctl flash`'s default ``default-reset`` /
``hard-reset`` path runs unchanged against the mock, which simply stays in its
bootloader.

Not modelled: the flasher stub (MEM_* upload and OHAI: use ``--no-stub``),
ERASE_FLASH/ERASE_REGION (stub-only commands), READ_FLASH, encryption, timing.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import tty
import zlib

SLIP_END, SLIP_ESC = 0xC0, 0xDB

CHIPS = {
    # chip-detect magic at 0x40001000 and number of status bytes in a response
    "esp32": {"magic": 0x00F01D83, "status_len": 4},
    "esp8266": {"magic": 0xFFF0C101, "status_len": 2},
}

_DETECT_REG = 0x40001000
_EFUSE_BASE = 0x3FF5A000
_UART_CLKDIV = 0x3FF40014
_SPI_BASE = 0x3FF42000
_SPI_CMD, _SPI_ADDR, _SPI_USR2, _SPI_W0 = _SPI_BASE, _SPI_BASE + 0x04, _SPI_BASE + 0x24, _SPI_BASE + 0x80
_SPI_CMD_USR = 1 << 18

_INVALID_MESSAGE = 0x05
_BAD_CHECKSUM = 0x07
_BAD_SEQUENCE = 0x08  # "Received message has wrong sequence number" (docs' error table)
_CHECKSUM_SEED = 0xEF

# JEDEC ids by capacity: Winbond (0xEF), memory type 0x40, capacity code 2^n bytes.
_JEDEC = {4 << 20: 0x1640EF, 8 << 20: 0x1740EF, 16 << 20: 0x1840EF}


def slip(packet: bytes) -> bytes:
    return bytes([SLIP_END]) + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + bytes([SLIP_END])


def unslip(frame: bytes) -> bytes:
    return frame.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


class EspRomMock:
    """``with EspRomMock() as m: flash(m.port, ...); m.flash[...]``.

    ``chip``: "esp32" or "esp8266" (another chip, for the wrong-chip error).
    ``silent``: read and ignore everything (a board not in its bootloader).
    """

    def __init__(self, *, chip: str = "esp32", flash_size: int = 8 << 20,
                 mac: bytes = bytes.fromhex("a4cf12345678"), silent: bool = False):
        self.chip = CHIPS[chip]
        self.flash = bytearray(b"\xff" * flash_size)
        self.flash_size = flash_size
        self.silent = silent
        self.commands: list[int] = []  # every command received, in order
        self.bytes_in = 0  # bytes the host sent, SLIP framing included
        self.regs: dict[int, int] = {
            _DETECT_REG: self.chip["magic"],
            _EFUSE_BASE + 4: int.from_bytes(mac[2:6], "big"),
            _EFUSE_BASE + 8: int.from_bytes(mac[0:2], "big"),
            _UART_CLKDIV: 347,  # 40 MHz crystal / 115200 baud
        }
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._write: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esp-rom-mock", daemon=True)

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> EspRomMock:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        for fd in (self._slave, self._master):
            try:
                os.close(fd)
            except OSError:
                pass
        self._thread.join(timeout=2)

    def _run(self) -> None:
        import select

        buf = bytearray()
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._master], [], [], 0.1)
                if not r:
                    continue
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            if not chunk:
                continue
            self.bytes_in += len(chunk)
            if self.silent:
                continue
            buf += chunk
            while True:
                start = buf.find(SLIP_END)
                if start < 0:
                    buf.clear()
                    break
                end = buf.find(SLIP_END, start + 1)
                if end < 0:
                    del buf[:start]
                    break
                frame = bytes(buf[start + 1:end])
                del buf[:end]  # keep the closing 0xC0: it may open the next packet
                if frame:
                    reply = self._handle(unslip(frame))
                    if reply:
                        try:
                            os.write(self._master, reply)
                        except OSError:
                            return

    # -- protocol -----------------------------------------------------------------------
    def _response(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> bytes:
        status = bytes([1 if error else 0, error]) + b"\0" * (self.chip["status_len"] - 2)
        body = data + status
        return slip(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _handle(self, pkt: bytes) -> bytes:
        if len(pkt) < 8 or pkt[0] != 0:
            return b""
        _, op, size, chk = struct.unpack_from("<BBHI", pkt)
        data = pkt[8:8 + size]
        self.commands.append(op)
        if op == 0x08:  # SYNC
            return self._response(op, 0x20120707) * 8
        if op == 0x0A:  # READ_REG
            (addr,) = struct.unpack_from("<I", data)
            return self._response(op, self.regs.get(addr, 0))
        if op == 0x09:  # WRITE_REG: address, value, mask, delay
            addr, value, mask, _ = struct.unpack_from("<IIII", data)
            self.regs[addr] = (self.regs.get(addr, 0) & ~mask) | (value & mask)
            if addr == _SPI_CMD and value & _SPI_CMD_USR:
                self._spi_command()
            return self._response(op)
        if op in (0x0B, 0x0D, 0x0F):  # SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE
            return self._response(op)
        if op in (0x02, 0x10):  # FLASH_BEGIN, FLASH_DEFL_BEGIN: erase size, blocks, block size, offset
            erase, blocks, block, offset = struct.unpack_from("<IIII", data)
            if offset + erase > self.flash_size:
                return self._response(op, error=_INVALID_MESSAGE)
            if erase:  # the ROM erases whole 4 KiB sectors from offset
                end = min(self.flash_size, -(-(offset + erase) // 4096) * 4096)
                self.flash[offset:end] = b"\xff" * (end - offset)
            self._write = {"offset": offset, "seq": 0, "z": zlib.decompressobj() if op == 0x10 else None}
            return self._response(op)
        if op in (0x03, 0x11):  # FLASH_DATA, FLASH_DEFL_DATA: size, seq, 0, 0, data
            n, seq = struct.unpack_from("<II", data)
            block = data[16:16 + n]
            x = _CHECKSUM_SEED
            for b in block:
                x ^= b
            if x != chk:
                return self._response(op, error=_BAD_CHECKSUM)
            w = self._write
            if w is None or seq != w["seq"]:
                return self._response(op, error=_BAD_SEQUENCE)
            out = w["z"].decompress(block) if w["z"] else block
            self.flash[w["offset"]:w["offset"] + len(out)] = out
            w["offset"] += len(out)
            w["seq"] += 1
            return self._response(op)
        if op in (0x04, 0x12):  # FLASH_END, FLASH_DEFL_END
            self._write = None
            return self._response(op)
        if op == 0x13:  # SPI_FLASH_MD5: address, size, 0, 0
            addr, n = struct.unpack_from("<II", data)
            digest = hashlib.md5(bytes(self.flash[addr:addr + n])).hexdigest().encode()
            return self._response(op, data=digest)
        return self._response(op, error=_INVALID_MESSAGE)

    def _spi_command(self) -> None:
        """Run the SPI flash command esptool set up in the USR registers
        (its run_spiflash_command): RDID (0x9F) and SFDP reads (0x5A); other
        commands (status, reset) return zero. Clears the USR bit: done."""
        cmd = self.regs.get(_SPI_USR2, 0) & 0xFF
        addr = self.regs.get(_SPI_ADDR, 0) >> 8  # 24-bit address, left-aligned
        result = 0
        if cmd == 0x9F:
            result = _JEDEC.get(self.flash_size, 0)
        elif cmd == 0x5A:
            result = {0: 0x50444653, 0x10: 0xEF}.get(addr, 0)  # "SFDP", manufacturer id
        self.regs[_SPI_W0] = result
        self.regs[_SPI_CMD] = 0
