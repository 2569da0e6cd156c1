"""The AT response vectors (protocol/vectors/at.json) under CPython: the same file
tests/firmware/test_at_codec.py checks under MicroPython."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hemhub.codec import CodecError, at

VEC = json.loads((Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "at.json").read_text())


def _line(v) -> bytes:
    return bytes.fromhex(v["hex"]) if "hex" in v else v["line"].encode()


def _json(x):
    return [_json(i) for i in x] if isinstance(x, (list, tuple)) else x


@pytest.mark.parametrize("v", VEC["lines"], ids=lambda v: v["line"] or "empty")
def test_line(v):
    assert _json(at.parse_line(_line(v))) == v["expect"]


@pytest.mark.parametrize("v", VEC["line_errors"], ids=lambda v: v["error"])
def test_line_error(v):
    with pytest.raises(CodecError, match=v["error"]):
        at.parse_line(_line(v))


@pytest.mark.parametrize("name,fn", [("csq", at.csq), ("reg", at.reg), ("cpin", at.cpin)])
def test_fields(name, fn):
    for v in VEC[name]:
        got = fn(v["fields"])
        assert _json(got) == v["expect"], v
        if name == "reg":
            assert at.REG[got] == v["name"]
    for v in VEC[name + "_errors"]:
        with pytest.raises(CodecError, match=v["error"]):
            fn(v["fields"])
