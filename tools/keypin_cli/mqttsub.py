"""The MQTT subscriber behind ``keypin reports``: paho-mqtt (MQTT 3.1.1, TLS, user/password),
with paho's own reconnect; messages come out as (topic, payload, retained) until a count or a
deadline. paho's network thread feeds a queue; every wait here is bounded."""
from __future__ import annotations

import os
import queue
import ssl
import time
from collections.abc import Iterator

import paho.mqtt.client as paho

from .errors import CommandError
from .util import tls_error_text

KEEPALIVE = 60
RECONNECT_MAX = 30  # s between reconnect attempts at most (paho backs off from 1 s)


class Subscriber:
    def __init__(self, host: str, port: int, *, user: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, timeout: float = 10.0, on_event=None):
        self.where = f"{host}:{port}"
        self.events: queue.Queue = queue.Queue()
        self.topic: str | None = None
        self.on_event = on_event  # callable(str): connection lost / back, for the user
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"keypin-reports-{os.getpid()}",
                        clean_session=True, protocol=paho.MQTTv311)
        c.connect_timeout = timeout
        c.reconnect_delay_set(1, RECONNECT_MAX)
        if user is not None:
            c.username_pw_set(user, password)
        if tls is not None:
            c.tls_set_context(tls)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        try:
            c.connect(host, port, keepalive=KEEPALIVE)
        except ssl.SSLError as e:
            raise CommandError(f"TLS with {self.where} failed: {tls_error_text(e)}") from None
        except (TimeoutError, OSError) as e:
            raise CommandError(f"cannot connect to {self.where}: {getattr(e, 'strerror', None) or e or 'timed out'}") \
                from None
        c.loop_start()
        self.connected = False
        kind, val = self._wait(("connack",), timeout)
        if kind is None:
            self.close()
            raise CommandError(f"{self.where} is not an MQTT broker (no CONNACK within {timeout:g} s)")
        if val is not None:
            self.close()
            raise CommandError(f"{self.where} refused the connection: {val}")
        self.connected = True

    # paho's thread -> the queue
    def _on_connect(self, client, userdata, flags, rc, props=None):
        fail = str(rc).lower() if rc.is_failure else None
        self.events.put(("connack", fail))
        if fail is None and self.topic is not None:  # a reconnect: subscribe again
            client.subscribe(self.topic, 0)

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        self.events.put(("lost", str(rc)))

    def _on_subscribe(self, client, userdata, mid, rcs, props=None):
        self.events.put(("suback", any(r.is_failure for r in rcs)))

    def _on_message(self, client, userdata, msg):
        self.events.put(("msg", (msg.topic, bytes(msg.payload), bool(msg.retain))))

    def _wait(self, kinds, timeout: float | None):
        """The next event of one of ``kinds`` (others are passed to ``_other``); (None, None) at the deadline."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None, None
            try:
                kind, val = self.events.get(timeout=min(left, 1.0) if left is not None else 1.0)
            except queue.Empty:
                continue
            if kind in kinds:
                return kind, val
            self._other(kind, val)

    def _other(self, kind, val) -> None:
        if kind == "lost" and self.connected:
            self.connected = False
            if self.on_event:
                self.on_event(f"connection to {self.where} lost ({val}); reconnecting")
        elif kind == "connack" and val is None and not self.connected:
            self.connected = True
            if self.on_event:
                self.on_event(f"reconnected to {self.where}")

    def subscribe(self, topic: str, timeout: float = 10.0) -> None:
        self.topic = topic
        self.client.subscribe(topic, 0)
        kind, refused = self._wait(("suback",), timeout)
        if kind is None:
            raise CommandError(f"{self.where} did not confirm the subscription to {topic} within {timeout:g} s")
        if refused:
            raise CommandError(f"the broker refused the subscription to {topic}")

    def messages(self, count: int = 0, timeout: float = 0) -> Iterator[tuple[str, bytes, bool]]:
        """(topic, payload, retained) until count messages (0: no limit) or timeout s (0: none)."""
        end = time.monotonic() + timeout if timeout else None
        seen = 0
        while not count or seen < count:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return
            kind, val = self._wait(("msg",), left)
            if kind is None:
                return
            seen += 1
            yield val

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
