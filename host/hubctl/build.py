"""hubctl build: compile firmware/ into an application bundle.

The bundle is what goes into an application slot: every module of the
``hemhub`` package compiled with mpy-cross to .mpy, plus ``manifest.json``
listing each file's path, size and SHA-256 and the build's ``app_id``. ``boot.py`` and ``main.py`` are
installed at the root of the app partition as source (they are the stable
stage that picks a slot).

The bundle also comes as a ROMFS image (``app.romfs``), which the runtime
mounts at /rom and imports from in place: the bytecode stays in flash instead
of being copied into the 96 KiB heap.

The build is reproducible: files are compiled in sorted order with paths
relative to firmware/ as their recorded source names, and the manifest is
written with sorted keys, so the same source gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import HubctlError

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
ROOT_FILES = ("boot.py", "main.py")


class BuildError(HubctlError):
    pass


@dataclass
class Bundle:
    """A built application: ``app/`` holds the slot's files, ``root/`` the stage."""

    dir: Path
    version: str
    manifest: dict

    @property
    def app_dir(self) -> Path:
        return self.dir / "app"

    @property
    def root_dir(self) -> Path:
        return self.dir / "root"

    @property
    def romfs_image(self) -> Path:
        """The application as a ROMFS image: executed in place from flash."""
        return self.dir / "app.romfs"

    @property
    def app_bytes(self) -> int:
        return sum(f["size"] for f in self.manifest["files"])


def firmware_version(src: Path = FIRMWARE_DIR) -> str:
    text = (src / "hemhub" / "version.py").read_text()
    for line in text.splitlines():
        if line.startswith("VERSION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BuildError(f"{src}/hemhub/version.py has no VERSION line.")


def mpy_cross_path() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross is not installed.", hint="Run tools/setup.")
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def app_id(files: list[dict]) -> str:
    """One name for one build: a digest of its files' paths and contents. The
    runtime records the build it carries frozen by this name (hubctl.vhub.runtime),
    and boot.py compares the slot's with it."""
    text = json.dumps(sorted((f["path"], f["sha256"]) for f in files), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build(out: Path, src: Path = FIRMWARE_DIR) -> Bundle:
    """Compile ``src`` (a firmware tree) into ``out``; returns the bundle."""
    if not (src / "hemhub").is_dir():
        raise BuildError(f"{src} is not a firmware tree (no hemhub/ package).")
    out = Path(out).resolve()  # mpy-cross runs in src: relative paths would land there
    if out.exists():
        shutil.rmtree(out)
    app = out / "app"
    root = out / "root"
    app.mkdir(parents=True)
    root.mkdir(parents=True)
    mpy_cross = mpy_cross_path()
    files = []
    for py in sorted((src / "hemhub").rglob("*.py")):
        rel = py.relative_to(src)
        dst = app / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [mpy_cross, "-s", str(rel), "-o", str(dst), str(rel)],
            cwd=src, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BuildError(f"mpy-cross failed on {rel}:\n{proc.stderr.strip()}")
        files.append({"path": str(dst.relative_to(app)), "size": dst.stat().st_size,
                      "sha256": _sha256(dst)})
    version = firmware_version(src)
    manifest = {"format": 1, "version": version, "files": files, "app_id": app_id(files)}
    (app / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    for name in ROOT_FILES:
        shutil.copyfile(src / name, root / name)
    bundle = Bundle(out, version, manifest)
    bundle.romfs_image.write_bytes(make_romfs_image(app))
    return bundle


def make_romfs_image(app_dir: Path) -> bytes:
    """ROMFS image of a built application (mpremote's ROMFS writer, sorted, so
    the same bundle gives the same bytes)."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):
        return make_romfs(str(app_dir), mpy_cross=False)
