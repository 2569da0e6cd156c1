# The virtual hub's runtime start-up: what the ESP32 port does in C and in its
# frozen _boot.py, done for the Unix-port interpreter. Started by the
# supervisor (hubctl vhub run) for every power-on, hard reset and soft reset:
#   1. load the emulation modules (machine, esp32, time, select, bluetooth) from the board
#      directory, which plays the role of the ESP32 build's C modules;
#   2. mount the app partition (label "vfs") over '/', as _boot.py does;
#   3. run boot.py, then main.py unless a soft reset came from the raw REPL;
#   4. run the REPL on the console.
# Exit codes tell the supervisor what to do next (see supervisor.py).
import gc
import os
import sys

import _world  # connects to the world before anything else
import time  # the emulated time, select, machine and esp32 modules
import select
import machine
import esp32
import vfs
import bluetooth  # the radio: NimBLE is part of the ESP32 runtime, not of the firmware
import _repl

gc.collect()

_EXIT_SOFT_FRIENDLY = 64
_EXIT_SOFT_RAW = 65
_EXIT_NO_FS = 66


def _mount_root():
    app = esp32.Partition("vfs")
    gc.collect()
    vfs.umount("/")
    try:
        vfs.mount(vfs.VfsLfs2(app), "/")
    except OSError as e:
        # The ESP32 runtime would reformat here (inisetup); the supervisor has
        # checked the image, so this means it changed under us: say so and stop.
        print("hemhub runtime: cannot mount the app partition (vfs):", e)
        sys.exit(_EXIT_NO_FS)
    _mount_romfs()
    # The emulation modules are all imported by now, like C modules linked into
    # the ESP32 runtime; the host directory they came from is not visible.
    sys.path[:] = ["", ".frozen", "/rom", "/rom/lib", "/lib"] if _romfs else ["", ".frozen", "/lib"]
    # ... except board/late (network, socket, UART): they shadow built-ins the
    # board's own start-up needs unshadowed (the world link uses the real
    # socket), so they come from a hidden mount (not listed in "/"), last on the
    # path, as a built-in yields to /lib. They are imported now, still in the
    # board's reserve: C in flash on the chip, they must cost the firmware
    # nothing (they took 7.3 KiB of its heap when it first used them; decision
    # 0005).
    vfs.mount(vfs.VfsPosix((os.getenv("HEMHUB_BOARD_DIR") or ".") + "/late"), "/.board")
    sys.path.append("/.board")
    os.chdir("/")
    import _uart  # noqa: F401
    import network  # noqa: F401
    import socket  # noqa: F401


_romfs = None


def _mount_romfs():
    # The ESP32 runtime mounts a ROMFS partition at /rom and imports from it in
    # place (the flash is memory-mapped). Here the image is read into the
    # board's part of the heap, which the firmware's 96 KiB never includes.
    global _romfs
    try:
        part = esp32.Partition("romfs")
    except ValueError:
        return
    head = bytearray(8)
    part.readblocks(0, head, 0)
    if head[:3] != b"\xd2\xcd\x31":
        return
    # ROMFS header: magic, then the image length as a varint.
    n = 0
    i = 3
    while True:
        b = head[i]
        n = (n << 7) | (b & 0x7F)
        i += 1
        if not b & 0x80:
            break
    size = i + n
    window = int(os.getenv("HEMHUB_ROMFS_WINDOW") or "0")
    if size > window:
        print("hemhub runtime: ROMFS image of %d bytes exceeds the %d mapped window" % (size, window))
        return
    buf = bytearray(size)
    part.readblocks(0, buf, 0)
    _romfs = bytes(buf)
    buf = None
    gc.collect()
    vfs.mount(vfs.VfsRom(_romfs), "/rom")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _run_file(path, g):
    if not _exists(path):
        return
    with open(path) as f:
        src = f.read()
    err = _repl.run_code(src, g)
    if err is not None:
        sys.print_exception(err)


_ballast = None
_POOL_FOR_FIRMWARE = 10000  # bytes: only the 1,280-entry qstr pool is this big


class _Names:
    pass


def _fill_qstr_pools():
    # HEMHUB_QSTR_POOLS=chip (decision 0005). Interned names (qstrs) live in
    # pools that double: ... 320, 640, then 1,280 entries, each pool one block
    # (py/qstr.c, qstr_add; the MemoryError of a failed pool names its entry
    # count: "allocating 1280 bytes"). On the chip the board's names are ROM
    # qstrs and the firmware's own fill the pools from the first; here the board
    # interns ~400 first, so the firmware meets the 1,280-entry pool (~14 KiB
    # here) ~400 names early. Fill the pools with names of the board's own until
    # that pool is made; the firmware pays for it (as for its pools on the chip)
    # and has 1,280 names of room. Returns the pool's size in bytes.
    if os.getenv("HEMHUB_QSTR_POOLS") != "chip":
        return 0
    gc.collect()
    names = _Names()
    for i in range(4000):
        before = gc.mem_alloc()
        getattr(names, "_board_q%d" % i, None)  # interns the name
        grew = gc.mem_alloc() - before
        if grew > _POOL_FOR_FIRMWARE:
            return grew
    return 0


def _pin_reserve(firmware_pool=0):
    # The emulation's modules are C in flash on the chip, and the ROMFS window is
    # flash read through the cache. The interpreter was given room for both on
    # top of the hub's 96 KiB; hold whatever they leave unused, so the firmware
    # gets 96 KiB and not a byte more.
    global _ballast
    gc.collect()
    used = gc.mem_alloc() - firmware_pool
    reserve = int(os.getenv("HEMHUB_HEAP_RESERVE") or "0")
    window = int(os.getenv("HEMHUB_ROMFS_WINDOW") or "0")
    if reserve:
        if used > reserve + window:
            print("hemhub runtime: the board holds %d bytes, over its %d reserve" % (used, reserve + window))
        target = reserve + window + firmware_pool
        # In chunks: one block this size rarely fits between the board's objects.
        _ballast = []
        while True:
            left = target - gc.mem_alloc()
            if left < 96:
                break
            _ballast.append(bytearray(min(8192, left - 64)))
    romfs = len(_romfs) if _romfs else 0
    _world.notify({"req": "heap_baseline", "bytes": used - romfs, "romfs": romfs})


def main():
    mode = os.getenv("HEMHUB_REPL_MODE") or _repl.FRIENDLY
    _mount_root()
    _pin_reserve(_fill_qstr_pools())
    g = {"__name__": "__main__"}
    try:
        for name in ("boot.py", "main.py"):
            if name == "main.py" and mode != _repl.FRIENDLY:
                break
            try:
                _run_file(name, g)
            except KeyboardInterrupt:  # a Ctrl-C racing the start of a file
                pass
        while True:
            try:
                if mode == _repl.RAW:
                    mode = _repl.raw_repl(g)
                else:
                    mode = _repl.friendly_repl(g)
            except KeyboardInterrupt:  # Ctrl-C racing the prompt: start the prompt again
                _repl._write("\r\n")
    except _repl.SoftReset as sr:
        nxt = sr.args[0] or mode
        while True:
            # An interrupt that was already on its way must not turn a soft
            # reset into a crash of the runtime.
            try:
                # Tell the world first, and wait for it: console input that
                # arrives from now on is kept for the next boot, as a UART keeps
                # it across a soft reset.
                _world.request({"req": "console", "state": "busy", "resetting": True})
                _repl._write("MPY: soft reboot\r\n")
                break
            except KeyboardInterrupt:
                pass
        sys.exit(_EXIT_SOFT_RAW if nxt == _repl.RAW else _EXIT_SOFT_FRIENDLY)


main()
