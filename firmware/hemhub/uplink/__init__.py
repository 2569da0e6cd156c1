"""The uplink: one task forwards the journal to the fleet over MQTT/TLS.

    up = uplink.start(cfg, records, link=None)   # records: the sink owning the Recorder
    if up: asyncio.create_task(up.run())

The journal is the Recorder's own instance (never a second Journal on the same
directory): the forwarder reads it through `records.recorder.journal` once the
record task has opened it. Protocol: protocol/uplink.md; design: docs/uplink.md.
"""
current = None
_tls = None  # (SSLContext, date check) made by prepare(), before the heap fragments


def prepare(cfg):
    # The uplink's long-lived blocks (the ~3 KiB SSLContext: mbedTLS config,
    # entropy, certificates; the MQTT client's 2 KiB receive buffer) are made
    # first thing at start-up, or a fragmented heap has no hole that big
    # (docs/decisions/0004-heap-on-a-64-bit-interpreter.md).
    global _tls, current
    if not cfg.get("broker_host") or current is not None:
        return
    from hemhub.uplink import tls
    from hemhub.uplink.forward import Forwarder

    current = Forwarder(cfg, None)
    try:
        _tls = tls.context(tls.DIR)
        current._make_client()
    except Exception:  # noqa: BLE001, S110 - the forwarder retries and says why
        pass


def start(cfg, records, link=None):
    # None when no broker is configured (an unprovisioned hub keeps everything).
    global current
    host = cfg.get("broker_host")
    if not host:
        return None
    if current is None:
        prepare(cfg)
    current.records = records
    current.link = link
    return current

