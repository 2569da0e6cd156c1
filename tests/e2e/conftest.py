"""Fixtures for end-to-end tests with a real Mosquitto on 127.0.0.1: the project's
provisioning CA, the generated broker configuration, the fleet service."""

from __future__ import annotations

import shutil

import pytest
from e2e.pki import FleetPKI
from hubctl import home as homedir
from hubctl.broker import MOSQUITTO, Broker, broker_material, free_port
from hubctl.fleet.ingest import InventoryRegistry
from hubctl.fleet.mqtt import BlockingClient
from hubctl.fleet.service import FleetService
from hubctl.fleet.store import SQLiteStore


@pytest.fixture
def pki(tmp_path):
    return FleetPKI(tmp_path / "home")


@pytest.fixture
def broker(pki):
    if not shutil.which(MOSQUITTO) and not __import__("os").path.exists(MOSQUITTO):
        pytest.skip(f"{MOSQUITTO} missing: run tools/setup")
    b = Broker(pki.home, port=free_port(), service_port=free_port(), material=broker_material(pki.home))
    with b:
        yield b


@pytest.fixture
def store(pki):
    s = SQLiteStore(homedir.db_path(pki.home))
    yield s
    s.close()


@pytest.fixture
def fleet(pki, broker, store):
    svc = FleetService(store, InventoryRegistry(homedir.db_path(pki.home), ttl=0), "127.0.0.1",
                       broker.service_port, certfile=pki.service.certfile, keyfile=pki.service.keyfile,
                       cafile=pki.root_file)
    with svc:
        assert svc.wait_connected(10), "the fleet service did not connect to the broker"
        yield svc


def hub_client(pki, broker, client, client_id=None, **kw) -> BlockingClient:
    """A host-side MQTT client on the hub listener with this client's certificate."""
    return BlockingClient("127.0.0.1", broker.port, client_id or client.cn, certfile=client.certfile,
                          keyfile=client.keyfile, cafile=pki.root_file, **kw)


def service_client(pki, broker, client_id="observer", client=None) -> BlockingClient:
    c = client or pki.service
    return BlockingClient("127.0.0.1", broker.service_port, client_id, certfile=c.certfile,
                          keyfile=c.keyfile, cafile=pki.root_file)
