"""The firmware uses only the MicroPython ESP32 port's real API, and the
virtual hub's board modules invent none: both are checked against the ESP32
stubs (micropython-esp32-stubs, pinned in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PORT_MODULES = ("machine", "esp32", "vfs", "select", "time", "bluetooth", "network")
BOARD = ROOT / "host/hubctl/vhub/board"


def _stub_path(mod: str) -> Path:
    site = Path(importlib.util.find_spec("serial").origin).parents[1]
    p = site / f"{mod}.pyi"
    if not p.exists():
        p = site / mod / "__init__.pyi"
    return p


def _stub_api(mod: str) -> dict[str, set[str]]:
    """Top-level names of a stub, and for classes their members."""
    tree = ast.parse(_stub_path(mod).read_text())
    api: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(sub.name)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    members.add(sub.target.id)
                elif isinstance(sub, ast.Assign):
                    members.update(t.id for t in sub.targets if isinstance(t, ast.Name))
            api[node.name] = members
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            api[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            api[node.target.id] = set()
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    api[t.id] = set()
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                api[a.asname or a.name] = set()
    return api


def _uses(path: Path):
    """(module, name, member) for every port-API use in a firmware file."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in PORT_MODULES:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in PORT_MODULES:
            for a in node.names:
                yield node.module, a.name, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield aliases[node.value.id], node.attr, None
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases):
            yield aliases[node.value.value.id], node.value.attr, node.attr


FIRMWARE = sorted((ROOT / "firmware").rglob("*.py"))


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_uses_only_the_esp32_port_api(path):
    for mod, name, member in _uses(path):
        api = _stub_api(mod)
        assert name in api, f"{path.name}: {mod}.{name} is not in the ESP32 port's {mod} module"
        if member is not None and api[name]:
            assert member in api[name], f"{path.name}: {mod}.{name}.{member} is not in the ESP32 port API"


@pytest.mark.parametrize("mod", ["machine", "esp32", "time", "select"])
def test_board_emulation_invents_no_api(mod):
    tree = ast.parse((BOARD / f"{mod}.py").read_text())
    api = _stub_api(mod)
    for node in tree.body:
        name = getattr(node, "name", None)
        if isinstance(node, ast.Assign):
            name = next((t.id for t in node.targets if isinstance(t, ast.Name)), None)
        if not name or name.startswith("_"):
            continue
        assert name in api, f"board/{mod}.py defines {name}, which the ESP32 port's {mod} has not"
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                sname = getattr(sub, "name", None)
                if isinstance(sub, ast.Assign):
                    sname = next((t.id for t in sub.targets if isinstance(t, ast.Name)), None)
                if sname and not sname.startswith("_") and api[name]:
                    assert sname in api[name], f"board/{mod}.py: {name}.{sname} is not in the ESP32 port API"
