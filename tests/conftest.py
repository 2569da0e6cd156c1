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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test on a virtual hub shows the end of the hub's console, so a
    failure seen only once (in CI) still says what the firmware was doing."""
    report = yield
    hub = getattr(item, "funcargs", {}).get("vhub")
    if report.failed and call.when == "call" and hub is not None:
        try:
            tail = hub.console_log()[-HUB_LOG_TAIL:].decode(errors="replace")
        except OSError as e:
            tail = f"(the console log could not be read: {e})"
        report.sections.append(("hub console (its last %d bytes)" % HUB_LOG_TAIL, tail))
    return report


HUB_LOG_TAIL = 4000


@pytest.fixture
def vhub(tmp_path, bundle):
    with run_hub(tmp_path / "hub", bundle) as rh:
        yield rh


