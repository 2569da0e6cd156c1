"""Collects tests/firmware/test_*.py and runs each test inside the real MicroPython
interpreter with the hub's heap (-X heapsize=96K), one fresh interpreter per test.

The files are never imported by CPython: they are firmware tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hubctl.vhub.interp import HEAP_SIZE, micropython_command

RUNNER = Path(__file__).with_name("mprun.py")
_BUILT: list[str] = []


def _firmware_build() -> str:
    """The firmware compiled with mpy-cross, as the hub imports it (built once per
    run): tests then measure the firmware's heap, not the compiler's."""
    if not _BUILT:
        import atexit
        import shutil
        import tempfile

        from hubctl.build import build

        tmp = tempfile.mkdtemp(prefix="hemhub-fwtest-")
        atexit.register(shutil.rmtree, tmp, True)
        _BUILT.append(str(build(Path(tmp) / "b").app_dir))
    return _BUILT[0]


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = micropython_command(heapsize=HEAP_SIZE) + [str(RUNNER), *args]
    env = dict(os.environ, HEMHUB_FIRMWARE_MPY=_firmware_build())
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=str(RUNNER.parent.parent.parent), env=env)


class MicroPythonFailure(Exception):
    pass


class MicroPythonItem(pytest.Item):
    def __init__(self, *, name, parent, test_name):
        super().__init__(name=name, parent=parent)
        self.test_name = test_name

    def runtest(self):
        proc = _run([str(self.path), self.test_name])
        out = proc.stdout
        if f"PASS {self.test_name}" in out and proc.returncode == 0:
            return
        raise MicroPythonFailure(out + proc.stderr)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"MicroPython test failed:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"[micropython] {self.test_name}"


class MicroPythonFile(pytest.File):
    def collect(self):
        proc = _run([str(self.path), "--list"], timeout=60)
        names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("TEST ")]
        if proc.returncode != 0 or not names:
            raise MicroPythonFailure(
                f"could not list tests in {self.path} under MicroPython:\n{proc.stdout}{proc.stderr}")
        for n in names:
            yield MicroPythonItem.from_parent(self, name=n, test_name=n)


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("test_"):
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None
