"""Shared fixtures: a firmware bundle built once per session, and virtual hubs.

HIL tests take ``--hub``: ``sim`` (default) runs them on virtual hubs; a serial
port (``--hub /dev/ttyUSB0``) runs the same tests on a real hub, skipping those
that need the simulated world (power cuts, GPIO injection).
"""

from __future__ import annotations

import pytest
from hubctl.build import build
from vhubtest import run_hub


def pytest_addoption(parser):
    parser.addoption("--hub", default="sim",
                     help="where HIL tests run: sim (virtual hubs, default) or a serial port")


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return build(tmp_path_factory.mktemp("build") / "app")


@pytest.fixture
def vhub(tmp_path, bundle):
    with run_hub(tmp_path / "hub", bundle) as rh:
        yield rh


