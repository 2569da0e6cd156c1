# A file-backed flash block device for firmware tests and benchmarks, with NOR
# flash rules and power-cut injection. Runs under MicroPython (the 96 KiB heap
# cannot hold a flash image, so the image lives in a host file).
#
# It speaks the littlefs "extended" block protocol that vfs.VfsLfs2 uses and
# that esp32.Partition implements:
#   readblocks(block, buf, offset=0)
#   writeblocks(block, buf, offset=None)  offset None: erase then program whole blocks
#   ioctl(op, arg)                        4 block count, 5 block size, 6 erase block
#
# Like NOR flash (and the virtual hub's esp32.py), programming can only clear
# bits (new = old & data); only an erase sets them back to 1.
#
# Power cuts: arm(n) lets n more bytes be programmed. The write that crosses the
# limit programs only the bytes up to it (an erase that starts with no budget
# left erases only half its block), and from then on the device is dead: it
# drops every write and erase, so the image stays exactly as the cut left it.
# Nothing raises inside the filesystem: the code under test runs on against a
# flash that no longer listens (littlefs notices when it reads back), and the
# test checks `dead` after each operation to learn the power went (a Python
# exception thrown through littlefs's C code would leave a half-updated
# filesystem object whose finalisers run later). reopen() gives a fresh device
# on the same image, as after a reboot.
import os

_FF = b"\xff" * 256  # erased flash, written in small pieces: the heap is small


class PowerCut(Exception):
    # Raised by tests (not by the device) once they see the device is dead.
    pass


class FileBlockDev:
    def __init__(self, path, block_size=4096, block_count=512, create=True):
        self.path = path
        self.block_size = block_size
        self.block_count = block_count
        if create:
            with open(path, "wb") as f:
                for _ in range(block_count * block_size // len(_FF)):
                    f.write(_FF)
        self._f = open(path, "r+b")
        self._budget = None  # programmable bytes left before the cut; None: no cut
        self.dead = False
        self.reset_counters()

    def reset_counters(self):
        self.programmed = 0  # bytes programmed
        self.erased = 0  # blocks erased
        self.read_bytes = 0

    def arm(self, nbytes):
        """Cut the power once nbytes more bytes have been programmed."""
        self._budget = nbytes
        return self

    def reopen(self):
        """The same image after a reboot: a fresh device object; this one stays dead."""
        self.dead = True
        return FileBlockDev(self.path, self.block_size, self.block_count, create=False)

    def close(self):
        self.dead = True
        self._f.close()

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            raise OSError(5)
        self.read_bytes += n

    def writeblocks(self, block, buf, offset=None):
        if self.dead:
            return
        if offset is None:
            for i in range((len(buf) + self.block_size - 1) // self.block_size):
                self.ioctl(6, block + i)
            offset = 0
        n = len(buf)
        cut = False
        if self._budget is not None and n > self._budget:
            n = self._budget
            cut = True
        if n:
            self._program(block * self.block_size + offset, buf, n)
        if self._budget is not None:
            self._budget -= n
        if cut:
            self.dead = True

    def _program(self, pos, buf, n):
        f = self._f
        old = bytearray(n)
        f.seek(pos)
        f.readinto(old)
        data = memoryview(buf)[:n]
        if old.count(b"\xff") != n:
            for i in range(n):  # programming over programmed bits: AND, like NOR flash
                old[i] &= data[i]
            data = old
        f.seek(pos)
        f.write(data)
        self.programmed += n

    def _fill(self, n):
        for _ in range(n // len(_FF)):
            self._f.write(_FF)

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:
            if self.dead:
                return 0
            f = self._f
            f.seek(arg * self.block_size)
            if self._budget is not None and self._budget <= 0:
                self._fill(self.block_size // 2)  # an erase cut half-way
                self.dead = True
                return 0
            self._fill(self.block_size)
            self.erased += 1
            return 0
        if op in (1, 2, 3):  # init, deinit, sync
            return 0
        return None


def mount(bdev, where="/data", mkfs=False):
    """Mounts bdev at `where` with littlefs2 (formatting first if mkfs), as boot.py
    does with the data partition. Unmounts whatever was there."""
    import vfs

    try:
        vfs.umount(where)
    except OSError:
        pass
    if mkfs:
        vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev)
    vfs.mount(fs, where)
    return fs


def unmount(where="/data"):
    import vfs

    try:
        vfs.umount(where)
    except OSError:
        pass


def copy_image(src, dst):
    """Copies an image file (to restore a saved flash state)."""
    buf = bytearray(512)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            fo.write(memoryview(buf)[:n])


class Disk:
    """A scratch data partition mounted at `where`: a fresh littlefs image of
    `blocks` blocks (or an existing image file), with reboot() for power cuts."""

    def __init__(self, blocks=64, path=None, where="/data"):
        self.where = where
        self.own = path is None
        self.path = path or tmp_image("disk")
        self.bd = FileBlockDev(self.path, block_count=blocks, create=self.own)
        mount(self.bd, where, mkfs=self.own)

    def reboot(self):
        """The image as the power cut (or a clean stop) left it, mounted afresh."""
        unmount(self.where)
        self.bd = self.bd.reopen()
        mount(self.bd, self.where)

    def done(self):
        unmount(self.where)
        self.bd.close()
        if self.own:
            os.remove(self.path)


def sweep(blocks, setup, run, check, step):
    """Cuts the power at byte 0, step, 2*step, ... of what one operation programs.

    setup() prepares a fresh image of `blocks` blocks mounted at /data. Then for
    every cut point, on a copy of that image, run(arm) does the operation,
    calling arm() right before it (arm() starts the count and returns the
    device, whose `dead` tells that the power went); the image is rebooted and
    check() looks at what the cut left. The first, uncut, run measures the
    operation. Returns the bytes it programs."""
    d = Disk(blocks)
    base = tmp_image("base")
    try:
        setup()
        unmount()
        d.bd.close()
        copy_image(d.path, base)
        total = None
        cut = 0
        while total is None or cut <= total:
            copy_image(base, d.path)
            d.bd = FileBlockDev(d.path, block_count=blocks, create=False)
            mount(d.bd)
            bd = d.bd

            def arm(bd=bd, cut=None if total is None else cut):
                bd.reset_counters()
                return bd if cut is None else bd.arm(cut)

            try:
                run(arm)
            except PowerCut:
                pass
            if total is None:
                total = bd.programmed
            elif not bd.dead:
                cut = total  # done before the cut point: no need to go on
            d.reboot()
            check()
            cut += step
        return total
    finally:
        d.done()
        try:
            os.remove(base)
        except OSError:
            pass


def tmp_image(name):
    """A fresh path for a scratch image under /tmp (remove it with os.remove)."""
    import binascii

    return "/tmp/hemhub-%s-%s.img" % (name, binascii.hexlify(os.urandom(4)).decode())
