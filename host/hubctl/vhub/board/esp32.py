# esp32, as on the ESP32 port, for the virtual hub: flash partitions backed by
# the hub's <name>.img files. Writes follow NOR-flash rules: programming can
# only clear bits (new = old & data); only an erase (ioctl 6) sets them to 1.
import os

_BLOCK = 4096
_CHUNK = 256  # flash I/O in pieces this big: the emulation keeps no block-sized buffers
_ERASED = b"\xff" * _CHUNK
_scratch = bytearray(_CHUNK)
_files = {}  # label -> open image file
_table = []  # (name, label, type, subtype, offset, size)


def _load_table():
    for ent in (os.getenv("HEMHUB_PARTS") or "").split(","):
        if ent:
            name, label, typ, sub, off, size = ent.split(":")
            _table.append((name, label, int(typ), int(sub), int(off), int(size)))


def _image(name):
    f = _files.get(name)
    if f is None:
        f = open(os.getenv("HEMHUB_HUB_DIR") + "/" + name + ".img", "r+b")
        _files[name] = f
    return f


def _open_images():
    # Opened before the app partition is mounted over '/', like flash that is
    # always wired up.
    for ent in _table:
        _image(ent[0])


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_BLOCK):
        if id == Partition.BOOT or id == Partition.RUNNING:
            id = _boot_slot()
        for ent in _table:
            if ent[1] == id or ent[0] == id:
                self._ent = ent
                break
        else:
            raise ValueError("partition not found")
        self._f = _image(self._ent[0])
        self._bs = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=_BLOCK):
        out = []
        for ent in _table:
            if ent[2] == type and (subtype == 0xFF or ent[3] == subtype) and (label is None or ent[1] == label):
                out.append(Partition(ent[1], block_size))
        return out

    def info(self):
        e = self._ent
        return (e[2], e[3], e[4], e[5], e[1], False)

    def readblocks(self, block_num, buf, offset=0):
        self._f.seek(block_num * self._bs + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: read past the end of the image

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:  # simple interface: erase then program
            for i in range((len(buf) + self._bs - 1) // self._bs):
                self.ioctl(6, block_num + i)
            offset = 0
        pos = block_num * self._bs + offset
        f = self._f
        n = len(buf)
        src = memoryview(buf)
        # In chunks through one preallocated buffer: on the chip this is C and
        # takes nothing from the firmware's heap, so neither may the emulation.
        i = 0
        while i < n:
            k = min(_CHUNK, n - i)
            old = memoryview(_scratch)[:k]
            f.seek(pos + i)
            f.readinto(old)
            if min(old) != 0xFF:  # programming over programmed bits: AND, like NOR flash
                for j in range(k):
                    old[j] &= src[i + j]
                part = old
            else:
                part = src[i:i + k]
            f.seek(pos + i)
            f.write(part)
            i += k

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self._ent[5] // self._bs
        if op == 5:  # block size
            return self._bs
        if op == 6:  # erase block (without a block-sized buffer on the heap)
            self._f.seek(arg * self._bs)
            for _ in range(self._bs // _CHUNK):
                self._f.write(_ERASED)
            return 0
        if op in (1, 2, 3):  # init, deinit, sync: the image file needs none
            return 0
        return None

    def set_boot(self):
        if self._ent[2] != Partition.TYPE_APP:
            raise OSError(22)
        _otadata({"boot": self._ent[1], "state": "new"})

    def get_next_update(self):
        cur = _boot_slot()
        return Partition("ota_1" if cur == "ota_0" else "ota_0")

    @staticmethod
    def mark_app_valid_cancel_rollback():
        st = _otadata()
        st["state"] = "valid"
        _otadata(st)

    def __repr__(self):
        e = self._ent
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (e[2], e[3], e[4], e[5], e[1])


def _otadata(new=None):
    # The otadata partition holds a small JSON record in the emulation; the
    # ESP-IDF binary format is only needed on real flash, which esptool writes.
    import json

    f = _image("otadata")
    if new is None:
        f.seek(0)
        raw = f.read(256).split(b"\xff")[0].split(b"\x00")[0]
        try:
            return json.loads(raw) if raw else {"boot": "ota_0", "state": "valid"}
        except ValueError:
            return {"boot": "ota_0", "state": "valid"}
    data = json.dumps(new).encode()
    f.seek(0)
    f.write(data + b"\x00" + b"\xff" * (_BLOCK - len(data) - 1))
    return new


def _boot_slot():
    return _otadata().get("boot", "ota_0")


_load_table()
_open_images()
