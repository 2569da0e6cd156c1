"""The hub's configuration, kept in /data/config.json (written by provisioning).

Only known keys are read; a missing or unreadable file gives the defaults, so a
fresh hub boots and reports itself as unprovisioned.
"""
import json

PATH = "/data/config.json"

DEFAULTS = {
    # How often the health task persists its snapshot to /data (flash wear:
    # one small littlefs commit per interval).
    "health_persist_s": 600,
}


def load(path=PATH):
    cfg = dict(DEFAULTS)
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return cfg
    if isinstance(stored, dict):
        for k, v in stored.items():
            cfg[k] = v
    return cfg
