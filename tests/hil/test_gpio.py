"""HIL: the wired door contact and the service button on a (virtual) hub.

The world drives GPIO 25 (door, 1 = open) and GPIO 0 (button, 0 = pressed);
the application's events are read back with service.events_json over a
console session that interrupts the application rather than soft-resetting
it (the events live in RAM).
"""

from __future__ import annotations

import time

import pytest
from hubctl.transport import HubConsole
from vhubtest import write_config

DOOR, BUTTON = 25, 0


@pytest.fixture
def hub(vhub, sim_only):
    _wait_app(vhub)
    return vhub


def _wait_app(rh, after_boot: int | None = None) -> None:
    """Wait until the application has started its tasks: the status LED
    (GPIO 2) is first lit after the gpio watchers are registered."""
    rh.wait_app(after_boot)
    time.sleep(0.3)


def events(rh) -> dict:
    with HubConsole(rh.port, soft_reset=False) as con:
        return con.call("service", "events_json")


def test_no_events_at_rest(hub):
    snap = events(hub)
    assert snap == {"recording": True, "total": 0, "events": []}


def test_door_open_and_close(hub):
    with hub.world() as w:
        w.pin(DOOR, 1)
        time.sleep(0.15)
        w.pin(DOOR, 0)
        time.sleep(0.15)
    snap = events(hub)
    assert [e["event"] for e in snap["events"]] == ["door_open", "door_close"], snap
    for e in snap["events"]:
        assert e["source"] == "wired"
        # recorded right after the 30 ms debounce, counted from the edge
        assert 30 <= e["latency_ms"] < 50, e
    opened, closed = snap["events"]
    assert 130 <= closed["ticks_ms"] - opened["ticks_ms"] <= 300


def test_bouncing_contact_gives_one_event(hub):
    with hub.world() as w:
        for _ in range(3):  # chatter: edges a couple of ms apart, ending open
            w.pin(DOOR, 1)
            time.sleep(0.002)
            w.pin(DOOR, 0)
            time.sleep(0.002)
        w.pin(DOOR, 1)
        time.sleep(0.2)
    snap = events(hub)
    assert [e["event"] for e in snap["events"]] == ["door_open"], snap


def test_short_press(hub):
    with hub.world() as w:
        w.pin(BUTTON, 0)
        time.sleep(0.3)
        w.pin(BUTTON, 1)
        time.sleep(0.15)
    snap = events(hub)
    assert [e["event"] for e in snap["events"]] == ["button_short"], snap


def test_long_press(vhub, sim_only):
    boots = vhub.boot_count()
    write_config(vhub, {"button_long_press_ms": 1000})  # the session's end restarts the app
    _wait_app(vhub, after_boot=boots)
    with vhub.world() as w:
        w.pin(BUTTON, 0)
        time.sleep(1.4)
    snap = events(vhub)  # reported while still held
    assert [e["event"] for e in snap["events"]] == ["button_long"], snap
    with vhub.world() as w:
        w.pin(BUTTON, 1)
