"""BLE on the host: decode captured values with the firmware's own codecs, and
scan for devices to enrol.

    decode_characteristic(uuid, hex)      -> dict  (hemhub.codec.gatt.decode)
    decode_bthome(mac, hex, key=, kind=)  -> dict  (hemhub.codec.bthome)
    scan(timeout)                         -> [dict] (bleak's BleakScanner)

The codecs are the ones the hub runs (firmware/hemhub/codec/), imported, not
re-implemented: a capture decodes here exactly as on the hub. Every bad input
raises UsageError (exit code 2) naming the problem and the fix; a missing
Bluetooth adapter raises BleUnavailableError.
"""

from __future__ import annotations

import asyncio
import re

from hemhub.codec import CodecError, bthome, gatt

from .errors import HubctlError, UsageError

# Bluetooth Core Spec Vol 3 Part B 2.5.1: a 16-bit UUID xxxx stands for
# 0000xxxx-0000-1000-8000-00805F9B34FB (the Bluetooth Base UUID).
_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_UUID128 = re.compile(r"^([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Characteristic names for messages (protocol/gatt.md).
_CHAR_NAMES = {
    0x2A9D: "Weight Measurement", 0x2A9E: "Weight Scale Feature",
    0x2A5E: "PLX Spot-check Measurement", 0x2A5F: "PLX Continuous Measurement",
    0x2A60: "PLX Features", 0x2A35: "Blood Pressure Measurement",
    0x2A1C: "Temperature Measurement", 0x2A19: "Battery Level", 0x2A08: "Date Time",
    0x2A2B: "Current Time", 0x2A52: "Record Access Control Point",
}

# Advertised 16-bit service UUID -> the kind of device a technician enrols.
SERVICE_KINDS = {
    0x181D: "scale",  # Weight Scale
    0x181B: "scale",  # Body Composition
    0x1822: "oximeter",  # Pulse Oximeter
    0x1810: "bp",  # Blood Pressure
    0x1809: "thermometer",  # Health Thermometer
    0xFCD2: "bthome",  # BTHome (service data)
}

BTHOME_KINDS = ("pendant", "fall", "door", "motion")


class BleUnavailableError(HubctlError):
    """No usable Bluetooth adapter on this computer."""

    exit_code = 1


# -- input parsing --------------------------------------------------------------------
def uuid16(text: str) -> int:
    """'2A9D', '0x2a9d' or '00002a9d-0000-1000-8000-00805f9b34fb' -> 0x2A9D."""
    t = text.strip().lower()
    m = _UUID128.match(t)
    if m:
        if not t.endswith(_BASE_SUFFIX) or not m.group(1).startswith("0000"):
            raise UsageError(f"UUID {text!r} is a 128-bit vendor UUID, not a Bluetooth SIG characteristic.",
                             hint="The codecs decode SIG health characteristics; give their 16-bit UUID, e.g. 2A9D.")
        return int(m.group(1), 16)
    if t.startswith("0x"):
        t = t[2:]
    if not re.fullmatch(r"[0-9a-f]{1,4}", t):
        raise UsageError(f"{text!r} is not a characteristic UUID.",
                         hint="Give it as 2A9D, 0x2a9d or 00002a9d-0000-1000-8000-00805f9b34fb.")
    return int(t, 16)


def hex_bytes(text: str, what: str = "value") -> bytes:
    """Hex with optional spaces, colons or dashes between bytes (as capture tools print it)."""
    t = re.sub(r"[\s:\-]", "", text)
    if t.lower().startswith("0x"):
        t = t[2:]
    if len(t) % 2:
        raise UsageError(f"The {what} {text!r} has an odd number of hex digits ({len(t)}).",
                         hint="Give whole bytes, two hex digits each, e.g. 00b036.")
    try:
        return bytes.fromhex(t)
    except ValueError:
        bad = next((c for c in t if c not in "0123456789abcdefABCDEF"), "?")
        raise UsageError(f"The {what} {text!r} is not hex (found {bad!r}).",
                         hint="Use the digits 0-9 and a-f only, e.g. 00b036.") from None


def _jsonable(x):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).hex()
    if isinstance(x, (list, tuple)):
        return [_jsonable(i) for i in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


# -- decoding -------------------------------------------------------------------------
def decode_characteristic(uuid_text: str, hex_text: str) -> dict:
    """A GATT characteristic value -> the hub's decoded dict, JSON-ready.

    Every observation has mdc, value (None when absent), unit, and reason when
    value is None."""
    u = uuid16(uuid_text)
    name = _CHAR_NAMES.get(u)
    if name is None or u not in gatt.UUIDS:
        known = ", ".join(f"{k:04X} {v}" for k, v in _CHAR_NAMES.items())
        raise UsageError(f"Characteristic 0x{u:04X} is not one the hub decodes.",
                         hint=f"Supported: {known}.")
    data = hex_bytes(hex_text)
    try:
        result = gatt.decode(u, data)
    except CodecError as e:
        raise UsageError(f"The value {data.hex()} does not decode as {name} (0x{u:04X}): {e}.",
                         hint="Give only the characteristic value (no ATT opcode or handle) and check "
                              "that the UUID is the characteristic it was read from.") from None
    for obs in result.get("observations", []):
        obs.setdefault("value", None)
    return {"uuid": f"0x{u:04X}", **_jsonable(result)}


def decode_bthome(mac: str, hex_text: str, key: str | None = None, kind: str | None = None) -> dict:
    """BTHome v2 service data (after UUID 0xFCD2; a leading D2 FC is skipped) ->
    decoded objects, JSON-ready; with kind, also the alarm events it raises."""
    data = hex_bytes(hex_text, "service data")
    if data[:2] == b"\xd2\xfc":  # copied with the UUID: D2 as an info byte would be version 6
        data = data[2:]
    try:
        mac_b = bthome.mac_bytes(mac)
    except CodecError:
        raise UsageError(f"{mac!r} is not a Bluetooth device address.",
                         hint="Give 6 bytes as AA:BB:CC:DD:EE:FF.") from None
    if kind is not None and kind not in BTHOME_KINDS:
        raise UsageError(f"Unknown device kind {kind!r}.", hint=f"Use one of: {', '.join(BTHOME_KINDS)}.")
    try:
        if key is not None:
            k = hex_bytes(key, "key")
            if len(k) != 16:
                raise UsageError(f"The key has {len(k)} bytes; a BTHome key has 16 (32 hex digits).")
            if not bthome.is_encrypted(data):
                raise UsageError("The advert is not encrypted, but a key was given.",
                                 hint="Drop --key, or check that this is the device enrolled with that key.")
            result = bthome.decrypt_and_parse(mac_b, data, k)
        else:
            if data and bthome.is_encrypted(data):
                raise UsageError("The advert is encrypted.", hint="Give the device's key: --key HEX (32 digits).")
            result = bthome.parse(data)
    except CodecError as e:
        hint = ("Check the key and the MAC address (both are part of the nonce)." if "MIC" in str(e)
                else "Give the service data after the UUID, starting at the device information byte (0x40 / 0x41 ...).")
        raise UsageError(f"The BTHome service data {data.hex()} does not decode: {e}.", hint=hint) from None
    out = {
        "mac": ":".join(f"{b:02X}" for b in mac_b),
        "version": result["version"],
        "encrypted": result["encrypted"],
        "trigger_based": result["trigger_based"],
        "packet_id": result["packet_id"],
        "objects": [{"id": f"0x{oid:02X}", "name": name, "value": _jsonable(value)}
                    for oid, name, value in result["objects"]],
        "unknown_id": None if result["unknown_id"] is None else f"0x{result['unknown_id']:02X}",
    }
    if "counter" in result:
        out["counter"] = result["counter"]
    if kind is not None:
        out["kind"] = kind
        out["events"] = [{"event": ev, "object": name, "value": _jsonable(v)}
                         for ev, name, v in bthome.events(kind, result)]
    return out


# -- scanning -------------------------------------------------------------------------
def _short_uuid(u: str) -> str:
    u = u.lower()
    if u.endswith(_BASE_SUFFIX) and u.startswith("0000"):
        return u[4:8].upper()
    return u


def guess_kind(uuids: list[str]) -> str | None:
    for u in uuids:
        s = _short_uuid(u)
        if len(s) == 4 and int(s, 16) in SERVICE_KINDS:
            return SERVICE_KINDS[int(s, 16)]
    return None


def _device_row(device, adv) -> dict:
    uuids = list(adv.service_uuids or [])
    for u in adv.service_data or {}:  # BTHome advertises service data, not a UUID list
        if u not in uuids:
            uuids.append(u)
    short = [_short_uuid(u) for u in uuids]
    return {
        "address": device.address,
        "name": adv.local_name or device.name,
        "rssi": adv.rssi,
        "services": short,
        "kind": guess_kind(uuids),
    }


async def _discover(timeout: float):
    from bleak import BleakScanner

    return await BleakScanner.discover(timeout=timeout, return_adv=True)


def scan(timeout: float = 5.0) -> list[dict]:
    """Nearby BLE devices, strongest first: address, name, rssi, services (16-bit
    as 4 hex digits, others in full) and kind (scale, oximeter, bp,
    thermometer, bthome, or None)."""
    if timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout}.")
    from bleak.exc import BleakError

    try:
        found = asyncio.run(_discover(timeout))
    except (BleakError, OSError) as e:
        if isinstance(e, FileNotFoundError):  # bleak's BlueZ backend: no D-Bus system bus
            detail = "BlueZ is not reachable: no D-Bus system bus"
        else:
            detail = str(e) or type(e).__name__
        raise BleUnavailableError(f"No Bluetooth adapter is available for scanning ({detail}).",
                                  hint="Plug in or enable an adapter; on Linux check that bluetoothd runs "
                                       "(systemctl status bluetooth) and that bluetoothctl list shows one.") from None
    rows = [_device_row(dev, adv) for dev, adv in found.values()]
    rows.sort(key=lambda r: -(r["rssi"] if r["rssi"] is not None else -999))
    return rows
