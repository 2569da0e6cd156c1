# Stage 1 of every start (after the runtime has mounted the app partition at /):
# mount the data partition at /data, pick the application slot, and keep the
# watchdog fed while a technician's console session holds the hub.
# Tiny and stable: only ever replaced together with the runtime image.
import sys

import esp32
import vfs


def _blank(part):
    # littlefs keeps its superblock in blocks 0 and 1; erased flash reads 0xFF.
    buf = bytearray(512)
    for block in (0, 1):
        for off in range(0, 4096, 512):
            part.readblocks(block, buf, off)
            for b in buf:
                if b != 0xFF:
                    return False
    return True


def _mount_data():
    part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="data")[0]
    try:
        vfs.mount(vfs.VfsLfs2(part), "/data")
        return "mounted"
    except OSError:
        pass
    if not _blank(part):
        # Never format a partition that holds something: it may be the only copy
        # of readings. The application reports it; a technician decides.
        return "damaged"
    vfs.VfsLfs2.mkfs(part)
    vfs.mount(vfs.VfsLfs2(part), "/data")
    return "formatted"


def _slot():
    try:
        with open("/slot") as f:
            s = f.read().strip()
    except OSError:
        s = "a"
    return s if s in ("a", "b", "rom") else "a"


def _runs_frozen(slot_dir):
    # The runtime image carries one build of the application frozen in: its
    # bytecode, constants and names in flash (docs/decisions/0007). It runs only
    # when the slot holds that very build; any other build runs from the slot.
    try:
        from _frozen_app import APP_ID
    except ImportError:
        return False
    try:
        with open(slot_dir + "/manifest.json") as f:
            head = f.read(160)  # "app_id" is the manifest's first key
    except OSError:
        return False
    return ('"app_id": "' + APP_ID + '"') in head


_data_state = _mount_data()
_active = _slot()
_slot_dir = "/" + _active
_frozen = _runs_frozen(_slot_dir)
if not _frozen:  # the slot's build, ahead of the runtime's frozen one
    if _slot_dir in sys.path:
        sys.path.remove(_slot_dir)
    sys.path.insert(0, _slot_dir)
try:
    from hemhub import bootinfo

    bootinfo.data = _data_state
    bootinfo.slot = _active
    bootinfo.frozen = _frozen
    import machine

    if machine.reset_cause() == machine.SOFT_RESET:
        from hemhub import watchdog

        watchdog.service_window()
except ImportError as e:
    print("boot: application slot", _active, "is not installed:", e)
