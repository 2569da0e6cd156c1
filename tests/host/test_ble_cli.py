"""hubctl ble: decode and decode-bthome through the real command (the
firmware's codecs underneath), and scan with bleak mocked at its API boundary
(BleakScanner.discover)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from hubctl import ble
from hubctl.cli import main

HUBCTL = str(Path(sys.executable).parent / "hubctl")
VECTORS = Path(__file__).parents[2] / "protocol/vectors"


def hubctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HUBCTL, "ble", *args], capture_output=True, text=True, timeout=60)


def ok_json(*args: str):
    p = hubctl(*args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def usage_error(*args: str) -> str:
    p = hubctl(*args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("hubctl: ")
    return p.stderr


# -- decode -----------------------------------------------------------------------------
@pytest.mark.parametrize("uuid", ["2A9D", "0x2a9d", "2a9d", "00002A9D-0000-1000-8000-00805F9B34FB"])
def test_decode_weight_any_uuid_form(uuid):
    out = ok_json("decode", uuid, "00b036")
    assert out["uuid"] == "0x2A9D"
    assert out["characteristic"] == "weight_measurement"
    assert out["observations"] == [{"mdc": 188736, "value": 70.0, "unit": "kg"}]


def test_decode_special_value_is_absent_with_reason():
    # Temperature Measurement, Celsius, FLOAT NaN (0x007FFFFF)
    out = ok_json("decode", "2A1C", "00 ff ff 7f 00")
    (obs,) = out["observations"]
    assert obs == {"mdc": 150364, "value": None, "unit": "Cel", "reason": "nan"}


def test_decode_matches_the_shared_vectors():
    vectors = json.loads((VECTORS / "gatt.json").read_text())["decode"]
    for v in vectors[:8]:
        out = ok_json("decode", v["uuid"], v["hex"] or "")
        assert out["observations"] == v["expect"]["observations"], v["name"]


def test_decode_blood_pressure_observations_have_the_required_keys():
    v = next(v for v in json.loads((VECTORS / "gatt.json").read_text())["decode"] if v["uuid"].lower() == "2a35")
    out = ok_json("decode", v["uuid"], v["hex"])
    assert out["observations"]
    for obs in out["observations"]:
        assert {"mdc", "value", "unit"} <= set(obs)
        assert obs["value"] is not None or "reason" in obs


@pytest.mark.parametrize("args, words", [
    (("2A9D", "00b0"), "truncated"),
    (("2A9D", "zz"), "not hex"),
    (("2A9D", "00b03"), "odd number"),
    (("2A9F", "00"), "not one the hub decodes"),
    (("xyz", "00"), "not a characteristic UUID"),
    (("12345678-1234-1234-1234-123456789abc", "00"), "vendor UUID"),
    (("2A9D", "00b03600"), "does not decode"),  # trailing byte
])
def test_decode_bad_input_is_a_usage_error(args, words):
    err = usage_error("decode", *args)
    assert words in err


def test_decode_needs_its_arguments():
    p = hubctl("decode", "2A9D")
    assert p.returncode == 2 and "usage" in p.stderr


# -- decode-bthome ------------------------------------------------------------------------
def test_decode_bthome_plain():
    out = ok_json("decode-bthome", "A4:C1:38:12:34:56", "4002c40903bf13")
    assert out["encrypted"] is False
    assert out["objects"] == [{"id": "0x02", "name": "temperature", "value": 25.0},
                              {"id": "0x03", "name": "humidity", "value": 50.55}]


def test_decode_bthome_with_uuid_prefix():
    out = ok_json("decode-bthome", "A4:C1:38:12:34:56", "d2fc4002c40903bf13")
    assert [o["name"] for o in out["objects"]] == ["temperature", "humidity"]


def test_decode_bthome_encrypted_spec_example():
    out = ok_json("decode-bthome", "54:48:E6:8F:80:A5", "41a47266c95f730011223378237214",
                  "--key", "231d39c1d7cc1ab1aee224cd096db932")
    assert out["encrypted"] is True and out["counter"] == 857870592
    assert [(o["name"], o["value"]) for o in out["objects"]] == [("temperature", 25.06), ("humidity", 50.55)]


def test_decode_bthome_kind_shows_alarm_events():
    out = ok_json("decode-bthome", "A4:C1:38:12:34:56", "403a04", "--kind", "pendant")
    assert out["events"] == [{"event": "sos", "object": "button", "value": "long_press"}]


@pytest.mark.parametrize("args, words", [
    (("54:48:E6:8F:80:A5", "41a47266c95f730011223378237214"), "--key"),
    (("54:48:E6:8F:80:A5", "41a47266c95f730011223378237215", "--key", "231d39c1d7cc1ab1aee224cd096db932"),
     "MIC mismatch"),
    (("54:48:E6:8F:80:A6", "41a47266c95f730011223378237214", "--key", "231d39c1d7cc1ab1aee224cd096db932"),
     "MAC"),
    (("54:48:E6:8F:80:A5", "41a47266c95f730011223378237214", "--key", "231d39"), "16"),
    (("54:48:E6:8F:80:A5", "4002c40903bf13", "--key", "231d39c1d7cc1ab1aee224cd096db932"), "not encrypted"),
    (("nonsense", "4002c40903bf13"), "not a Bluetooth device address"),
    (("A4:C1:38:12:34:56", ""), "does not decode"),
    (("A4:C1:38:12:34:56", "6002c409"), "version"),
    (("A4:C1:38:12:34:56", "4002c4"), "truncated"),
    (("A4:C1:38:12:34:56", "40g2"), "not hex"),
    (("A4:C1:38:12:34:56", "403a04", "--kind", "toaster"), "Unknown device kind"),
])
def test_decode_bthome_bad_input_is_a_usage_error(args, words):
    err = usage_error("decode-bthome", *args)
    assert words in err


# -- scan (bleak mocked) -------------------------------------------------------------------
def _adv(name, rssi, uuids=(), service_data=None):
    return AdvertisementData(local_name=name, manufacturer_data={}, service_data=service_data or {},
                             service_uuids=list(uuids), tx_power=None, rssi=rssi, platform_data=())


def _found():
    sig = "0000{}-0000-1000-8000-00805f9b34fb"
    devices = [
        ("C4:7C:8D:00:00:01", _adv("Scale", -70, [sig.format("181d")])),
        ("C4:7C:8D:00:00:02", _adv("PO60", -50, [sig.format("1822"), sig.format("180a")])),
        ("C4:7C:8D:00:00:03", _adv("BP", -60, [sig.format("1810")])),
        ("C4:7C:8D:00:00:04", _adv(None, -80, [sig.format("1809")])),
        ("A4:C1:38:00:00:05", _adv("SOS", -40, service_data={sig.format("fcd2"): b"\x40\x3a\x01"})),
        ("11:22:33:44:55:66", _adv("Phone", -90, ["6e400001-b5a3-f393-e0a9-e50e24dcca9e"])),
    ]
    return {a: (BLEDevice(a, adv.local_name, None), adv) for a, adv in devices}


@pytest.fixture
def discover(mocker):
    return mocker.patch("bleak.BleakScanner.discover", new_callable=mocker.AsyncMock, return_value=_found())


def test_scan_lists_devices_strongest_first_with_kind(discover):
    rows = ble.scan(2.0)
    discover.assert_awaited_once()
    assert discover.await_args.kwargs == {"timeout": 2.0, "return_adv": True}
    assert [r["address"] for r in rows] == ["A4:C1:38:00:00:05", "C4:7C:8D:00:00:02", "C4:7C:8D:00:00:03",
                                           "C4:7C:8D:00:00:01", "C4:7C:8D:00:00:04", "11:22:33:44:55:66"]
    kinds = {r["address"][-2:]: r["kind"] for r in rows}
    assert kinds == {"05": "bthome", "02": "oximeter", "03": "bp", "01": "scale", "04": "thermometer", "66": None}
    po = rows[1]
    assert po == {"address": "C4:7C:8D:00:00:02", "name": "PO60", "rssi": -50, "services": ["1822", "180A"],
                  "kind": "oximeter"}
    assert rows[-1]["services"] == ["6e400001-b5a3-f393-e0a9-e50e24dcca9e"]


def test_scan_cli_json(discover, capsys):
    assert main(["ble", "scan", "--timeout", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and rows[0]["kind"] == "bthome"


def test_scan_cli_table(discover, capsys):
    assert main(["ble", "scan", "--timeout", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    assert out[0].startswith("A4:C1:38:00:00:05") and "bthome" in out[0] and "SOS" in out[0]
    assert "(no name)" in out[4]


def test_scan_nothing_heard(mocker, capsys):
    mocker.patch("bleak.BleakScanner.discover", new_callable=mocker.AsyncMock, return_value={})
    assert main(["ble", "scan", "--timeout", "1"]) == 0
    assert "no BLE devices heard" in capsys.readouterr().out


@pytest.mark.parametrize("exc", [BleakError("No Bluetooth adapters found."), FileNotFoundError(2, "No such file"),
                                 PermissionError(13, "Permission denied")])
def test_scan_without_adapter_is_a_clear_error(mocker, capsys, exc):
    mocker.patch("bleak.BleakScanner.discover", new_callable=mocker.AsyncMock, side_effect=exc)
    rc = main(["ble", "scan", "--timeout", "1"])
    err = capsys.readouterr().err
    assert rc == ble.BleUnavailableError.exit_code
    assert err.startswith("hubctl: No Bluetooth adapter is available") and "bluetoothctl" in err


def test_scan_bad_timeout(capsys):
    assert main(["ble", "scan", "--timeout", "0"]) == 2
    assert "--timeout must be positive" in capsys.readouterr().err
