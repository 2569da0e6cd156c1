"""Bonding keys for BLE peripherals, kept in /data (the driver asks through
_IRQ_GET_SECRET / _IRQ_SET_SECRET and gets its answer synchronously, so the
keys live in RAM and are written back from async code).

Bounded: at most _MAX entries; the oldest goes first. A wipe erases /data and
with it every bond, as SYSTEM.md section 4 requires.
"""
import binascii
import json
import os

from micropython import const

PATH = "/data/ble_keys.json"
_MAX = const(16)


class KeyStore:
    def __init__(self, path=PATH):
        self.path = path
        self.keys = []  # [(sec_type, key hex, value hex)], oldest first
        self.dirty = False
        try:
            with open(path) as f:
                for e in json.load(f)[-_MAX:]:
                    self.keys.append((int(e[0]), str(e[1]), str(e[2])))
        except (OSError, ValueError, TypeError, IndexError):
            pass

    def get(self, sec_type, index, key):
        # Called from the BLE IRQ: no allocation beyond the lookup.
        if key is None:
            n = 0
            for t, _k, v in self.keys:
                if t == sec_type:
                    if n == index:
                        return binascii.unhexlify(v)
                    n += 1
            return None
        k = binascii.hexlify(bytes(key)).decode()
        for t, kk, v in self.keys:
            if t == sec_type and kk == k:
                return binascii.unhexlify(v)
        return None

    def set(self, sec_type, key, value):
        k = binascii.hexlify(bytes(key)).decode()
        self.keys = [e for e in self.keys if not (e[0] == sec_type and e[1] == k)]
        if value is not None:
            self.keys.append((sec_type, k, binascii.hexlify(bytes(value)).decode()))
            del self.keys[:-_MAX]
        self.dirty = True
        return True

    def save(self):
        if not self.dirty:
            return
        self.dirty = False
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.keys, f)
            os.rename(tmp, self.path)
        except OSError:
            self.dirty = True  # /data damaged or full: health reports it; retry next time
