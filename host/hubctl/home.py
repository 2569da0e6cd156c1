"""Where hubctl keeps the state a bench or a fleet service owns.

One directory, the *home*, chosen by `--home DIR`, else `$HEMHUB_HOME`, else
`~/.local/share/hemhub`:

    HOME/ca/               the provisioning CA (root + device-issuing CA), keys 0600
    HOME/fleet.db          SQLite: inventory (hubs, certificates, provisioning steps),
                           readings, quarantine, audit log; shared by provisioning
                           and the fleet service
    HOME/labels/           hub labels (SVG/PNG) written by provisioning
    HOME/broker/           generated Mosquitto configuration, certificates and ACLs

Tests and the demo pass their own directory, so nothing touches the user's home.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "HEMHUB_HOME"


def home(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".local" / "share" / "hemhub"


def ca_dir(h: Path) -> Path:
    return h / "ca"


def db_path(h: Path) -> Path:
    return h / "fleet.db"


def labels_dir(h: Path) -> Path:
    return h / "labels"


def broker_dir(h: Path) -> Path:
    return h / "broker"
