"""The host's MQTT 3.1.1 client: paho-mqtt with mutual TLS, set up one way for the
fleet service, the tests and the benchmarks.

Why paho-mqtt (pinned in pyproject.toml) and not the firmware's codec: the fleet
service is the *other* end of the hub's from-scratch client, so an independent,
widely used implementation is the better counterpart (an interop bug cannot hide
in a codec both ends share), and paho brings what a long-running service needs and
the hub's client deliberately leaves out: a network thread, automatic reconnect
with backoff, an unbounded outgoing queue that survives reconnects, persistent
sessions. The hub-side codec is checked against the protocol vectors instead.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho

from ..errors import TransportError


def make_client(client_id: str, *, certfile: Path, keyfile: Path, cafile: Path,
                clean_session: bool = False) -> paho.Client:
    """A paho client with mutual TLS (TLS 1.2+, server verified against cafile, name checked)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                    protocol=paho.MQTTv311)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=str(cafile))
    ctx.load_cert_chain(str(certfile), str(keyfile))
    c.tls_set_context(ctx)
    c.reconnect_delay_set(min_delay=1, max_delay=4)
    c.max_inflight_messages_set(64)
    c.max_queued_messages_set(0)
    return c


def parse_broker(text: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        from ..errors import UsageError

        raise UsageError(f"Broker address {text!r} is not HOST:PORT.", hint="For example 127.0.0.1:8884.")
    return host, int(port)


class BlockingClient:
    """A small synchronous wrapper for tests and benchmarks: connect (or fail with the
    reason), subscribe, publish QoS 1 and wait for the PUBACK, collect messages."""

    def __init__(self, host: str, port: int, client_id: str, *, certfile, keyfile, cafile,
                 clean_session: bool = True):
        self.host, self.port = host, port
        self.client = make_client(client_id, certfile=certfile, keyfile=keyfile, cafile=cafile,
                                  clean_session=clean_session)
        self.messages: list[tuple[str, bytes]] = []
        self._cv = threading.Condition()
        self.connected = threading.Event()
        self.connect_rc = None
        self.disconnected = threading.Event()
        self.suback: list | None = None
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *_a: self.disconnected.set()
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connect_rc = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cv.notify_all()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self._cv:
            self.suback = [int(r.value) for r in rcs]
            self._cv.notify_all()

    def connect(self, timeout: float = 5.0) -> BlockingClient:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {e}") from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise TransportError(f"no CONNACK from {self.host}:{self.port} (rc {self.connect_rc})")
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        with self._cv:
            self.suback = None
            self.client.subscribe(topic, qos)
            if not self._cv.wait_for(lambda: self.suback is not None, timeout):
                raise TransportError(f"no SUBACK for {topic}")
            return self.suback

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                timeout: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: predicate(self.messages), timeout)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()
