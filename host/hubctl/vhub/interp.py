"""Locating and starting the real MicroPython interpreter (Unix port).

The interpreter is the virtual hub's runtime image: MicroPython's Unix port
built from its release source with the application frozen in, as the chip's
runtime image carries it (``hubctl.vhub.runtime``, decision 0007).
``HEMHUB_MICROPYTHON`` names another binary instead (a diagnosis aid).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HubctlError

#: The heap an ESP32 without PSRAM leaves the application (SYSTEM.md section 3).
#: Firmware unit tests (tests/firmware) run in exactly this heap.
HEAP_SIZE = "96K"
ESP32_HEAP = 96 * 1024

#: The same heap for the whole application on the virtual hub. This interpreter
#: is a 64-bit build (the only one on PyPI): pointers are 8 bytes, not the
#: ESP32's 4, and GC blocks 32 bytes, not 16. Measured against a 32-bit build of
#: the same MicroPython (tools/heap_ratio.py), objects made at run time cost 2.0
#: times as much here and the application's modules, imported in place from
#: ROMFS, 1.36 times; the running application lies in between, near 1.4
#: (docs/decisions/0004-heap-on-a-64-bit-interpreter.md). 1.5 is therefore about
#: the chip's 96 KiB, not a margin: an application at the edge here is at the
#: edge there.
FIRMWARE_HEAP = ESP32_HEAP * 3 // 2  # 144 KiB
#: HEMHUB_FIRMWARE_HEAP_KIB=N: a diagnosis mode, never the tests' or the figures
#: of record: how much more than FIRMWARE_HEAP the application needs to do a
#: job, measured by running it with more (decision 0004, session-8 addendum).
#: Whatever prints a figure in this mode says so.
FIRMWARE_HEAP_OVERRIDE = os.environ.get("HEMHUB_FIRMWARE_HEAP_KIB")
if FIRMWARE_HEAP_OVERRIDE:
    FIRMWARE_HEAP = int(FIRMWARE_HEAP_OVERRIDE) * 1024

#: On the chip the board's modules (machine, esp32, the REPL, ...) are C in
#: flash; in the virtual hub they are Python on the heap. The virtual hub's
#: interpreter gets this much more heap for them, and the board start-up pins
#: whatever they leave unused, so the firmware sees exactly FIRMWARE_HEAP
#: (docs/decisions/0001-virtual-hub-heap.md; 40 KiB since the radio emulation,
#: docs/decisions/0002-board-reserve-for-the-radio.md; 52 KiB since network,
#: socket and UART are imported at start-up, 0005-qstr-pool-cliff.md).
BOARD_HEAP_RESERVE = 52 * 1024
#: HEMHUB_QSTR_POOLS=chip: the board also fills the interpreter's qstr pools up
#: to the 1,280-entry pool, which it makes and charges to the firmware, so the
#: firmware's own names meet the pools as on the chip (decision 0005). A
#: measuring mode (HEMHUB_QSTR_POOLS=chip tools/heap_report.py), not the default.
QSTR_POOLS_RESERVE = 24 * 1024  # the board's filler names and the pools they fill
QSTR_POOLS_AS_ON_CHIP = os.environ.get("HEMHUB_QSTR_POOLS") == "chip"
if QSTR_POOLS_AS_ON_CHIP:
    BOARD_HEAP_RESERVE += QSTR_POOLS_RESERVE
#: Flash the runtime maps into memory (the ROMFS partition): on the chip it is
#: read through the cache, in the virtual hub it is a bytes object that the
#: start-up loads into the reserve, at most this big.
ROMFS_WINDOW = 256 * 1024
VHUB_HEAP_SIZE = f"{(FIRMWARE_HEAP + BOARD_HEAP_RESERVE + ROMFS_WINDOW) // 1024}K"


def heap_mode() -> str:
    """One line for a benchmark or probe to print first: the heap its figures were made with."""
    return (f"firmware heap {FIRMWARE_HEAP // 1024} KiB"
            + (" (HEMHUB_FIRMWARE_HEAP_KIB: a diagnosis run, not the project's 144 KiB)"
               if FIRMWARE_HEAP_OVERRIDE else "")
            + (", chip qstr pools" if QSTR_POOLS_AS_ON_CHIP else ""))

BOARD_DIR = Path(__file__).with_name("board")


class InterpreterMissing(HubctlError):
    exit_code = 6


def micropython_path() -> str:
    """Path of the micropython binary: the runtime built for the firmware as it is now."""
    override = os.environ.get("HEMHUB_MICROPYTHON")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise InterpreterMissing(
                f"HEMHUB_MICROPYTHON points at {override!r}, which is not an executable file.",
                hint="Unset it or point it at a micropython binary.",
            )
        return override
    from .runtime import ensure_runtime

    return str(ensure_runtime())


def micropython_command(heapsize: str | None = HEAP_SIZE) -> list[str]:
    cmd = [micropython_path()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd
