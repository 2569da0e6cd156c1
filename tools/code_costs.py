#!/usr/bin/env python3
"""Measure: what a function, a method and a string constant cost the heap when a
module is imported in place from ROMFS, and how many of each the running
application keeps.

    .venv/bin/python tools/code_costs.py [--json]

1. Four synthetic modules (100 module-level functions, 100 methods of one
   class, 100 string constants of 10 characters or more, an empty module) are
   compiled with mpy-cross, packed into a ROMFS image and imported in place by
   the virtual hub's interpreter, as the hub imports its application. Bytecode
   and string data stay in the image; what the heap pays per item is the
   function object and its raw-code record, the constant's str object and its
   slot in the constant table (py/persistentcode.c).
2. The application's resident modules (those app.py and its tasks import at
   start-up, `tools/heap_report.py` MODULES, with everything they import at
   module level) are counted from their source: functions, methods, string
   constants of 10 characters or more (shorter ones are qstrs; docstrings are
   not compiled).

It prints both and their product, an estimate of where the import cost goes.
Nothing is asserted. Figures: docs/decisions/0004-heap-on-a-64-bit-interpreter.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import heap_report  # tools/, beside this script
from hubctl.build import FIRMWARE_DIR, make_romfs_image, mpy_cross_path
from hubctl.vhub.interp import micropython_command

N = 100
SHORTEST_STR_OBJECT = 10  # py/parse.c: MICROPY_ALLOC_PARSE_INTERN_STRING_LEN; shorter strings are qstrs

SYNTHETIC = {
    "m_empty": "def f(i):\n    return i\n",
    "m_functions": "".join(f"def f{k}(i):\n    return i + {k}\n" for k in range(N)),
    "m_methods": "class C:\n" + "".join(f"    def f{k}(self, i):\n        return i + {k}\n" for k in range(N)),
    "m_strings": "def f(i):\n    x = None\n"
                 + "".join(f"    if i == {k}:\n        x = 'a console message, number {k}'\n" for k in range(N))
                 + "    return x\n",
}

_IMPORTER = """
import gc, sys, vfs
img = open({image!r}, 'rb').read()
vfs.mount(vfs.VfsRom(img), '/rom')
sys.path.insert(0, '/rom')
for name in {names!r}:
    gc.collect()
    before = gc.mem_free()
    __import__(name)
    gc.collect()
    print(name, before - gc.mem_free())
"""


def measure_per_item() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hemhub-costs-") as tmp:
        src, app = Path(tmp) / "src", Path(tmp) / "app"
        src.mkdir()
        app.mkdir()
        for name, text in SYNTHETIC.items():
            (src / f"{name}.py").write_text(text)
            subprocess.run([mpy_cross_path(), "-o", str(app / f"{name}.mpy"), str(src / f"{name}.py")], check=True)
        image = Path(tmp) / "app.romfs"
        image.write_bytes(make_romfs_image(app))
        script = Path(tmp) / "importer.py"
        script.write_text(_IMPORTER.format(image=str(image), names=tuple(SYNTHETIC)))
        out = subprocess.run(micropython_command("512K") + [str(script)], capture_output=True, text=True,
                             check=True).stdout
    costs = dict((name, int(n)) for name, n in (line.split() for line in out.splitlines()))
    empty = costs["m_empty"]
    return {"function": (costs["m_functions"] - empty) / N, "method": (costs["m_methods"] - empty) / N,
            "string": (costs["m_strings"] - empty) / N}


def _module_path(name: str) -> Path | None:
    base = FIRMWARE_DIR / name.replace(".", "/")
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def _top_level_imports(tree: ast.Module) -> list[str]:
    # Imports the module body runs when it is imported (not those inside functions).
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Try):
            names += _top_level_imports(ast.Module(body=node.body, type_ignores=[]))
    return names


def resident_modules() -> list[str]:
    seen: list[str] = []
    todo = [m for m in heap_report.MODULES if m.startswith("hemhub")]
    while todo:
        name = todo.pop(0)
        path = _module_path(name)
        if name in seen or path is None:
            continue
        seen.append(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a package's __init__ runs first
        todo += [m for m in _top_level_imports(ast.parse(path.read_text())) if m.startswith("hemhub")]
    return seen


def count(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
               for f in c.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
    strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes))
               and id(n) not in docstrings and len(n.value) >= SHORTEST_STR_OBJECT]
    return {"function": sum(id(f) not in methods for f in funcs), "method": len(methods), "string": len(strings)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    per = measure_per_item()
    rows = {m: count(_module_path(m)) for m in resident_modules()}
    totals = {k: sum(r[k] for r in rows.values()) for k in per}
    if args.json:
        print(json.dumps({"bytes_per_item": per, "modules": rows, "totals": totals}, indent=1))
        return 0
    print("heap bytes per item, imported in place from ROMFS (this interpreter):")
    for k, v in per.items():
        print(f"  {k:9} {v:6.1f}")
    print(f"\nresident application modules ({len(rows)}):")
    print(f"  {'module':28} {'functions':>9} {'methods':>8} {'strings':>8} {'est. B':>7}")
    for m, r in rows.items():
        est = sum(r[k] * per[k] for k in per)
        print(f"  {m:28} {r['function']:9} {r['method']:8} {r['string']:8} {est:7.0f}")
    print(f"  {'total':28} {totals['function']:9} {totals['method']:8} {totals['string']:8} "
          f"{sum(totals[k] * per[k] for k in per):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
