"""The fleet service and its client verbs (`hubctl fleet serve|readings|quarantine|status|export`).

    store.py    Store interface, SQLiteStore (HOME/fleet.db)
    ingest.py   verification, quarantine, idempotent storage, ack ranges (no network)
    verify.py   where records are verified: in-process or in worker processes
    mqtt.py     the host MQTT client (paho-mqtt with mutual TLS)
    service.py  the long-running service: broker subscription -> Ingestor -> acks
    fhir.py     FHIR R4 export (Personal Health Device IG style)
    cli.py      the verbs
"""


def register(sub) -> None:
    from .cli import register as _register

    _register(sub)
