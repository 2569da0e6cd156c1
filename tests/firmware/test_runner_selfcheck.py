# Proves the runner executes under MicroPython with the hub's heap, not CPython.
import sys


def test_runs_under_micropython():
    assert sys.implementation.name == "micropython"


def test_heap_is_the_hubs_96k():
    import gc

    total = gc.mem_free() + gc.mem_alloc()
    assert 90 * 1024 < total <= 96 * 1024, total
