# Host-side littlefs image tool, run by hubctl inside the real MicroPython
# interpreter so images are made by the same littlefs as the hub's:
#   micropython _imgtool.py check LABEL
#   micropython _imgtool.py mkfs LABEL
#   micropython _imgtool.py install LABEL SRC_DIR     (copies SRC_DIR's tree in)
#   micropython _imgtool.py usage LABEL
# The partition comes from esp32.Partition (env HEMHUB_HUB_DIR, HEMHUB_PARTS).
import os
import sys

import esp32
import vfs


def _mount(label):
    p = esp32.Partition(label)
    vfs.mount(vfs.VfsLfs2(p), "/_img")


def _copy_tree(src, dst):
    for name, kind, *_ in os.ilistdir(src):
        s = src + "/" + name
        d = dst + "/" + name
        if kind == 0x4000:
            try:
                os.mkdir(d)
            except OSError:
                pass
            _copy_tree(s, d)
        else:
            with open(s, "rb") as fi, open(d, "wb") as fo:
                while True:
                    b = fi.read(4096)
                    if not b:
                        break
                    fo.write(b)


def main(argv):
    cmd, label = argv[0], argv[1]
    if cmd == "check":
        try:
            _mount(label)
        except OSError as e:
            print("ERROR", e)
            sys.exit(1)
        print("OK")
    elif cmd == "mkfs":
        vfs.VfsLfs2.mkfs(esp32.Partition(label))
        print("OK")
    elif cmd == "install":
        _mount(label)
        _copy_tree(argv[2], "/_img")
        print("OK")
    elif cmd == "usage":
        _mount(label)
        st = os.statvfs("/_img")
        print("USAGE", st[0] * (st[2] - st[3]), st[0] * st[2])


main(sys.argv[1:])
