# Runs firmware unit tests inside MicroPython (not CPython).
#
#   micropython -X heapsize=96K tests/firmware/mprun.py FILE [--list | TEST]
#
# A test file is a module with plain `test_*` functions that use `assert`; the
# firmware modules it imports come precompiled (.mpy) when HEMHUB_FIRMWARE_MPY
# names a `hubctl build` output, as on the hub.
# Output protocol, one line each, read by tests/firmware/conftest.py:
#   TEST <name>                  (with --list)
#   PASS <name> <heap_peak_bytes>
#   FAIL <name>  followed by the traceback, then END
import gc
import sys

_ROOT = sys.argv[0].rsplit("/", 3)[0] if sys.argv[0].count("/") >= 3 else "."


def _setup_path():
    # The firmware as the hub imports it: compiled .mpy (HEMHUB_FIRMWARE_MPY, set
    # by conftest.py), else the source in firmware/.
    import os

    for p in ("/tests/firmware", "/host/hubctl/vhub/board", "/firmware"):
        sys.path.insert(0, _ROOT + p)
    mpy = os.getenv("HEMHUB_FIRMWARE_MPY")
    if mpy:
        sys.path.insert(0, mpy)


def _load(path):
    name = path.rsplit("/", 1)[-1][:-3]
    return __import__(name)


def main():
    _setup_path()
    args = sys.argv[1:]
    mod = _load(args[0])
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    if len(args) > 1 and args[1] == "--list":
        for n in names:
            print("TEST", n)
        return
    wanted = args[1:] or names
    failed = 0
    for n in wanted:
        gc.collect()
        try:
            getattr(mod, n)()
            gc.collect()
            try:
                import micropython

                peak = micropython.mem_peak()
            except (ImportError, AttributeError):
                peak = -1
            print("PASS", n, peak)
        except Exception as e:  # report every failure, keep running the rest
            failed += 1
            print("FAIL", n)
            sys.print_exception(e, sys.stdout)
            print("END")
    sys.exit(1 if failed else 0)


main()
