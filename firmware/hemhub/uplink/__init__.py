"""The uplink: one task forwards the journal to the fleet over MQTT/TLS.

    up = uplink.start(cfg, records, link=None)   # records: the sink owning the Recorder
    if up: asyncio.create_task(up.run())

The journal is the Recorder's own instance (never a second Journal on the same
directory): the forwarder reads it through `records.recorder.journal` once the
record task has opened it. Protocol: protocol/uplink.md; design: docs/uplink.md.
"""
current = None


def start(cfg, records, link=None):
    # None when no broker is configured (an unprovisioned hub keeps everything).
    global current
    host = cfg.get("broker_host")
    if not host:
        return None
    from hemhub.uplink.forward import Forwarder

    current = Forwarder(cfg, records, link)
    return current


def notify():
    # A record was committed: look at the journal now (optional; it also polls).
    if current is not None:
        current.kick()
