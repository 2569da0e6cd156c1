def unload(package, *names):
    """Forget the modules package.name for each name (sys.modules and the
    package's attribute), so their functions and tables can be collected. A
    later import loads them again; their names stay interned (qstrs are never
    freed). Used for code a boot or a GATT link needs once, also after its
    import failed half-way (MemoryError).

    MicroPython keeps a removed entry's value in its table slot until the slot
    is used again (py/map.c, MP_MAP_LOOKUP_REMOVE_IF_FOUND), and a failed
    import removes its module from sys.modules that way: the half-made module
    and all it allocated stayed alive until the next import filled the slot
    (2-7 KiB per failed GATT link on this build). Each entry is overwritten
    with None before it is removed."""
    import sys

    pkg = sys.modules.get(package)
    for name in names:
        key = package + "." + name
        try:
            sys.modules[key] = None
        except MemoryError:
            pass  # no room to add it: it was not there, nothing is held
        sys.modules.pop(key, None)
        if pkg is not None and hasattr(pkg, name):
            setattr(pkg, name, None)
            delattr(pkg, name)
