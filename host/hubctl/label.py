"""Hub labels: SVG and PNG with the hub id, serial number, hardware and
firmware revision, the certificate fingerprint's first 16 hex digits, and a
QR code (segno) of ``HEMHUB:<hub id>:<serial>:<FP16>`` (all characters of
the QR alphanumeric mode, ISO/IEC 18004 section 7.4.4, so the symbol stays
small).

The PNG is drawn here (a 5x7 bitmap font, zlib-compressed 8-bit grey scale
per the PNG specification, W3C REC-PNG section 11.2.2) so no imaging library
is needed; the SVG uses real text for a label printer.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import segno

# 5x7 glyphs, one 5-bit row per entry, top row first (classic HD44780-style shapes).
_FONT = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "-": (0, 0, 0, 31, 0, 0, 0),
    ".": (0, 0, 0, 0, 0, 12, 12),
    ":": (0, 12, 12, 0, 12, 12, 0),
    "/": (1, 1, 2, 4, 8, 16, 16),
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
}
_UNKNOWN = (31, 17, 17, 17, 17, 17, 31)

_BOLD = ' font-weight="bold"'
QR_SCALE = 4
TEXT_SCALE = 2
MARGIN = 16


def qr_payload(hub_id: str, serial: str, cert_sha256: str) -> str:
    return f"HEMHUB:{hub_id}:{serial}:{cert_sha256[:16]}".upper()


def label_lines(facts: dict) -> list[str]:
    return [
        f"HEMHUB {facts['hub_id']}",
        f"S/N {facts['serial']}",
        f"HW {facts.get('hw_rev') or '-'}  FW {facts.get('firmware') or '-'}",
        f"CERT {facts['cert_sha256'][:16]}",
    ]


def _png(width: int, height: int, pixels: bytearray) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey scale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def render_png(facts: dict) -> bytes:
    qr = segno.make(qr_payload(facts["hub_id"], facts["serial"], facts["cert_sha256"]), error="m")
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix)
    qr_px = (n + 8) * QR_SCALE  # quiet zone of 4 modules
    lines = [s.upper() for s in label_lines(facts)]
    text_w = max(len(s) for s in lines) * 6 * TEXT_SCALE
    line_h = 10 * TEXT_SCALE
    width = MARGIN + qr_px + MARGIN + text_w + MARGIN
    height = max(qr_px, len(lines) * line_h) + 2 * MARGIN
    px = bytearray(b"\xff" * (width * height))

    def dot(x0: int, y0: int, s: int) -> None:
        for y in range(y0, y0 + s):
            px[y * width + x0:y * width + x0 + s] = b"\x00" * s

    for r, row in enumerate(matrix):
        for c, v in enumerate(row):
            if v:
                dot(MARGIN + (c + 4) * QR_SCALE, MARGIN + (r + 4) * QR_SCALE, QR_SCALE)
    x_text = MARGIN + qr_px + MARGIN
    y = MARGIN + (qr_px - len(lines) * line_h) // 2 if qr_px > len(lines) * line_h else MARGIN
    for s in lines:
        for i, ch in enumerate(s):
            glyph = _FONT.get(ch, _UNKNOWN)
            for gy, bits in enumerate(glyph):
                for gx in range(5):
                    if bits & (16 >> gx):
                        dot(x_text + (i * 6 + gx) * TEXT_SCALE, y + gy * TEXT_SCALE, TEXT_SCALE)
        y += line_h
    return _png(width, height, px)


def render_svg(facts: dict) -> str:
    qr = segno.make(qr_payload(facts["hub_id"], facts["serial"], facts["cert_sha256"]), error="m")
    n = len(qr.matrix)
    qr_px = (n + 8) * QR_SCALE
    lines = label_lines(facts)
    width = MARGIN + qr_px + MARGIN + 330 + MARGIN
    height = qr_px + 2 * MARGIN
    inner = qr.svg_inline(scale=QR_SCALE, border=4)
    texts = "\n".join(
        f'  <text x="{MARGIN + qr_px + MARGIN}" y="{MARGIN + 30 + i * 26}" font-family="monospace" '
        f'font-size="{20 if i == 0 else 16}"{_BOLD if i == 0 else ""}>'
        f"{escape(s)}</text>"
        for i, s in enumerate(lines))
    return (f'<?xml version="1.0" encoding="utf-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            f'  <rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fff" '
            f'stroke="#000"/>\n'
            f'  <g transform="translate({MARGIN},{MARGIN})">{inner}</g>\n{texts}\n</svg>\n')


def write_label(out_dir: Path, facts: dict) -> tuple[Path, Path]:
    """Write OUT_DIR/<hub id>.svg and .png; facts: hub_id, serial, hw_rev,
    firmware, cert_sha256. Returns the two paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    svg = out_dir / f"{facts['hub_id']}.svg"
    png = out_dir / f"{facts['hub_id']}.png"
    for path, data in ((svg, render_svg(facts).encode()), (png, render_png(facts))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return svg, png
