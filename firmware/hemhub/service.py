"""The service API host tools call over the console (raw REPL).

Every call prints one JSON line; secrets (keys, PSKs) are never returned.
"""
import gc
import json
import sys

from hemhub import bootinfo, factory, health, version


def status():
    rec, problem = factory.read()
    rec = rec or {}
    snap = health.snapshot()
    gc.collect()
    return {
        "serial": rec.get("serial"),
        "hw_rev": rec.get("hw_rev"),
        "mac": rec.get("mac"),
        "board": rec.get("board"),
        "factory": "ok" if problem is None else "invalid (%s)" % problem,
        "firmware": version.VERSION,
        "runtime": "v%d.%d.%d" % sys.implementation.version[:3],
        "slot": bootinfo.slot,
        "frozen": bootinfo.frozen,
        "data": bootinfo.data,
        "uptime_s": snap["uptime_s"],
        "reset_cause": health.hardware_reset_cause(),
        "restart_reason": health.last_restart_reason(),
        "soft_reset": snap["reset_cause"] == "soft_reset",
        "heap_free": snap["heap_free"],
        "heap_total": snap["heap_free"] + snap["heap_used"],
        "flash": snap["flash"],
        # where readings and alarms go: "journal", or "ram-only (hub not
        # provisioned ...)" (None: the application is not running in this session)
        "records": _records_mode(),
    }


def _records_mode():
    from hemhub.sense import sink

    return sink.current.mode if sink.current else None


def status_json():
    print(json.dumps(status()))


def events_json():
    """The last wired/alarm-class events kept in RAM (hemhub.sense.recent)."""
    from hemhub.sense import recent

    print(json.dumps(recent.snapshot()))


def readings_json():
    """The sensing layer's recent readings, the alarm events of every source (RAM,
    bounded), its counters and the record path's state; printed piece by piece."""
    from hemhub import sense
    from hemhub.sense import recent, sink

    c = sense.current
    w = sys.stdout.write
    w('{"readings": [')
    for i, r in enumerate(sense.recent_readings):
        w((", " if i else "") + json.dumps(r))
    w('], "events": [')
    for i, e in enumerate(recent.snapshot()["events"]):
        w((", " if i else "") + json.dumps(e))
    w('], "counters": %s, "records": %s}\n' % (json.dumps(c.stats() if c else None),
                                               json.dumps(sink.current.state() if sink.current else None)))


def _b64(data):
    import binascii

    return binascii.b2a_base64(data).decode().strip()


def identity_csr_json(replace=False):
    """Make the hub's key pair (it stays in /data) and print the CSR, base64 DER."""
    from hemhub import identity

    hid = identity.hub_id()
    csr = identity.generate_csr(hid, replace=replace)
    print(json.dumps({"hub_id": hid, "csr": _b64(csr)}))


def identity_install_json(cert_b64, chain_b64=""):
    """Install the certificate issued for this hub (base64 DER)."""
    import binascii
    from hemhub import identity

    info = identity.install_certificate(binascii.a2b_base64(cert_b64), identity.hub_id(),
                                        binascii.a2b_base64(chain_b64) if chain_b64 else b"")
    print(json.dumps({"installed": True, "subject": info.subject_cn, "state": identity.state()}))


def journal_json(after=0, limit=16):
    """Signed records held in the journal with seq > after, base64 COSE_Sign1.

    Printed piece by piece: one JSON line, but never built whole in RAM."""
    import sys
    from hemhub.journal import Journal
    from hemhub.recorder import PATH

    j = Journal(PATH)
    w = sys.stdout.write
    w('{"records": [')
    last = after
    n = 0
    for seq, _kind, data in j.iter_from(after + 1):
        w('%s[%d, "%s"]' % (", " if n else "", seq, _b64(data)))
        last = seq
        n += 1
        if n >= limit:
            break
    st = j.stats()
    j.close()
    w('], "last": %d, "newest": %s, "next_seq": %d}\n' % (
        last, "null" if st["newest"] is None else st["newest"], st["next_seq"]))


# -- provisioning (hubctl provision; host/hubctl/provision.py) -----------------------
# Settings provisioning owns in /data/config.json; each run sets all of them
# (null removes one), other settings are kept.
# "wifi" is {"ssid", "psk"}, as the link manager reads it (docs/link.md).
_PROVISION_KEYS = ("site", "broker_host", "broker_port", "wifi", "apn", "provisioned")
TRUST_ANCHOR = "/data/identity/root.der"


def provision_state_json():
    """Where provisioning stands: identity (none | csr | certified), the
    installed certificate's SHA-256, and the certificate the config was written
    for (provisioning writes the config last, so a match means it finished
    installing)."""
    import binascii
    import hashlib
    import os

    from hemhub import config, identity

    st = identity.state()
    fp = None
    if st == "certified":
        with open(identity.DIR + "/cert.der", "rb") as f:
            fp = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
    try:
        hid = identity.hub_id()
    except identity.IdentityError:
        hid = None
    try:
        os.stat(TRUST_ANCHOR)
        anchor = True
    except OSError:
        anchor = False
    cfg = config.load()
    prov = cfg.get("provisioned") or {}
    print(json.dumps({"hub_id": hid, "identity": st, "cert_sha256": fp, "site": cfg.get("site"),
                      "config_cert_sha256": prov.get("cert_sha256"), "trust_anchor": anchor}))


def provision_install_json(settings_json, root_b64):
    """Install the broker's trust anchor (root CA certificate, base64 DER) and
    the provisioning settings (a JSON object of _PROVISION_KEYS), each written
    to a temporary file and renamed, so a power cut leaves the old file or the
    new one. Secrets in the settings (the WiFi psk) are never printed back."""
    import binascii
    import os

    from hemhub import config

    new = json.loads(settings_json)
    for k in new:
        if k not in _PROVISION_KEYS:
            raise ValueError("unknown provisioning setting %s" % k)
    anchor = binascii.a2b_base64(root_b64)
    with open(TRUST_ANCHOR + ".tmp", "wb") as f:
        f.write(anchor)
    os.rename(TRUST_ANCHOR + ".tmp", TRUST_ANCHOR)
    try:
        with open(config.PATH) as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            cfg = {}
    except (OSError, ValueError):
        cfg = {}
    for k in _PROVISION_KEYS:
        v = new.get(k)
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(config.PATH + ".tmp", "w") as f:
        json.dump(cfg, f)
    os.rename(config.PATH + ".tmp", config.PATH)
    print(json.dumps({"installed": sorted(k for k in cfg if k in _PROVISION_KEYS)}))


def wifi_check(ssid, psk, timeout_ms=15000):
    """Can the hub join this network with this key? Scans, then connects and
    waits for an address; leaves the station disconnected. The key is never
    returned. error: "network not found" | "wrong password" | "no connection"."""
    import time

    import network

    w = network.WLAN(network.STA_IF)
    w.active(True)
    w.disconnect()
    seen = [n for n in w.scan() if n[0] == ssid.encode()]
    if not seen:
        return {"ok": False, "ssid": ssid, "error": "network not found"}
    res = {"ok": False, "ssid": ssid, "rssi": max(n[3] for n in seen), "error": "no connection"}
    w.connect(ssid, psk)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
        st = w.status()
        if st == network.STAT_GOT_IP:
            res["ok"] = True
            res["ip"] = w.ifconfig()[0]
            del res["error"]
            break
        if st == network.STAT_WRONG_PASSWORD:
            res["error"] = "wrong password"
            break
        if st == network.STAT_NO_AP_FOUND:
            res["error"] = "network not found"
            break
        if st not in (network.STAT_CONNECTING, network.STAT_IDLE):
            res["error"] = "no connection (status %d)" % st
            break
        time.sleep_ms(50)
    w.disconnect()
    return res


def wifi_check_json(ssid, psk, timeout_ms=15000):
    print(json.dumps(wifi_check(ssid, psk, timeout_ms)))


def link_json():
    """The link manager's state: link wifi|cellular|none, quality, WiFi and modem states."""
    from hemhub.link import manager

    m = manager.current
    print(json.dumps(m.state() if m else {"link": "none", "managed": False}))


def uplink_selftest_json(host=None, port=None, server_name=None, timeout_ms=15000):
    """Connect to the broker with mutual TLS (CONNECT/CONNACK, clean session 0 so
    the hub's persistent session is kept, then DISCONNECT) and print
    {"ok": bool, "error": reason or null, "session_present": bool}.
    Reasons: no-root-ca / identity files missing, server-cert-rejected,
    tls-rejected (the broker refused our certificate), refused: <CONNACK>,
    unreachable, timeout."""
    import asyncio

    from hemhub import config, identity
    from hemhub.uplink import forward
    from hemhub.uplink.mqtt import Client
    from hemhub.uplink.tls import TlsSetupError

    cfg = config.load()
    host = host or cfg.get("broker_host")
    port = int(port or cfg.get("broker_port") or 8883)
    out = {"ok": False, "error": None, "host": host, "port": port, "session_present": None}
    if not host:
        out["error"] = "no broker configured (broker_host): provision the hub"
        print(json.dumps(out))
        return
    try:
        opener, check = forward.open_tls(host, port, server_name or cfg.get("broker_name"))
        c = Client(identity.hub_id(), opener, keepalive=30)
    except (TlsSetupError, identity.IdentityError) as e:
        out["error"] = ("no-root-ca: " if "root" in str(e) else "identity: ") + str(e)
        print(json.dumps(out))
        return

    async def run():
        try:
            _wifi_up(cfg, timeout_ms)
            await asyncio.wait_for_ms(c.connect(), timeout_ms)
            out["ok"] = True
            out["session_present"] = c.session_present
        except Exception as e:  # noqa: BLE001 - every failure is reported by reason
            out["error"] = check.error or forward.describe(e)
        await c.close()

    asyncio.run(run())
    asyncio.new_event_loop()
    print(json.dumps(out))


def _wifi_up(cfg, timeout_ms):
    # The selftest runs with the application stopped (raw REPL): join the
    # configured WiFi itself if the station is not connected (no-op otherwise).
    import time

    w = cfg.get("wifi") or {}
    ssid = w.get("ssid")
    if not ssid:
        return
    import network

    wl = network.WLAN(network.STA_IF)
    wl.active(True)
    if wl.isconnected():
        return
    wl.connect(ssid, w.get("psk"))
    t0 = time.ticks_ms()
    while not wl.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
        time.sleep_ms(50)
