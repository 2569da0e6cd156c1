def unload(package, *names):
    """Forget the modules package.name for each name (sys.modules and the
    package's attribute), so their functions and tables can be collected. A
    later import loads them again; their names stay interned (qstrs are never
    freed). Used for code a boot or a GATT link needs once."""
    import sys

    pkg = sys.modules.get(package)
    for name in names:
        sys.modules.pop(package + "." + name, None)
        if pkg is not None and hasattr(pkg, name):
            delattr(pkg, name)
