# hemhub.unload: code a boot or a GATT link needs once gives its heap back
# (the identity after start-up, the GATT side after each link), under
# MicroPython with the hub's 96 KiB heap.
import gc
import sys

import hemhub


def _free():
    gc.collect()
    return gc.mem_free()


_GATT_SIDE = ("gatt", "gatt_weight", "gatt_plx", "gatt_bp", "gatt_temp", "gatt_device", "gatt_racp")


def _link_cycle():
    # What a GATT link loads (hemhub.sense.central) and drops after it; returns
    # (import cost, bytes given back by unload).
    before = _free()
    from hemhub.codec import gatt, gatt_plx  # noqa: F401

    loaded = _free()
    del gatt, gatt_plx
    hemhub.unload("hemhub.codec", *_GATT_SIDE)
    return before - loaded, _free() - loaded


def test_an_unloaded_module_gives_its_heap_back_and_loads_again():
    _link_cycle()  # the first one also interns the modules' names, for good
    import hemhub.codec as codec

    assert "hemhub.codec.gatt" not in sys.modules and not hasattr(codec, "gatt")
    cost, returned = _link_cycle()
    assert cost > 1000, "importing the GATT codecs cost only %d bytes" % cost
    assert returned >= cost * 9 // 10, "unload gave back %d of %d bytes" % (returned, cost)
    for _ in range(3):  # link after link, nothing accumulates
        assert _link_cycle()[1] >= cost * 9 // 10
    from hemhub.codec import gatt as again

    assert again.__name__ == "hemhub.codec.gatt"


def test_unloading_what_was_never_loaded_is_harmless():
    hemhub.unload("hemhub", "no_such_module")
    hemhub.unload("hemhub.no_such_package", "x")


def test_a_module_whose_import_failed_gives_its_heap_back():
    # A failed import leaves the half-made module in sys.modules' table (the
    # removed entry keeps its value until the slot is reused): after a GATT
    # link whose import met MemoryError, its heap stayed held. unload() frees it.
    import os

    d = "/tmp/hemhub-unload-test"
    for p in (d, d + "/unload_pkg"):
        try:
            os.mkdir(p)
        except OSError:
            pass
    with open(d + "/unload_pkg/__init__.py", "w") as f:
        f.write("")
    with open(d + "/unload_pkg/failing.py", "w") as f:
        f.write("HELD = bytearray(20000)\nraise MemoryError('the import ran out of heap')\n")
    sys.path.insert(0, d)
    try:
        import unload_pkg  # noqa: F401

        before = _free()
        try:
            from unload_pkg import failing  # noqa: F401
        except MemoryError:
            pass
        assert "unload_pkg.failing" not in sys.modules
        held = before - _free()
        assert held >= 20000, "the failed import held only %d bytes: the leak did not show" % held
        hemhub.unload("unload_pkg", "failing")
        assert before - _free() < 1000, "still held after unload: %d bytes" % (before - _free())
    finally:
        sys.path.pop(0)
        os.remove(d + "/unload_pkg/failing.py")
