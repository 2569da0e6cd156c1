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
        "data": bootinfo.data,
        "uptime_s": snap["uptime_s"],
        "reset_cause": health.hardware_reset_cause(),
        "soft_reset": snap["reset_cause"] == "soft_reset",
        "heap_free": snap["heap_free"],
        "heap_total": snap["heap_free"] + snap["heap_used"],
        "flash": snap["flash"],
    }


def status_json():
    print(json.dumps(status()))


def events_json():
    """The last wired/alarm-class events kept in RAM (hemhub.sense.recent)."""
    from hemhub.sense import recent

    print(json.dumps(recent.snapshot()))


def readings_json():
    """The sensing layer's recent readings and alarm events (RAM, bounded) and counters."""
    from hemhub import sense

    c = sense.current
    print(json.dumps({"readings": sense.recent_readings, "events": sense.recent_events,
                      "counters": c.stats() if c else None}))


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
