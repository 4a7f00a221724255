# MQTT 3.1.1 wire formats without any I/O: remaining lengths, PUBLISH sizes, reconnect delays.
# keypin.mqtt and keypin.aio_mqtt import this, not the HTTP parsers of keypin.wire.
# Strict on purpose: a broken or hostile broker gets an error (issue 12.7).
from micropython import const

from keypin import KeypinError

MAXREM = const(268435455)  # the largest MQTT remaining length (4 bytes)


class MQTTError(KeypinError):
    pass


def remlen(n, i, b):
    # one byte b (index i) of an MQTT remaining length added to n -> (n, more bytes follow)
    if i > 3:
        raise MQTTError("malformed remaining length")
    return n | (b & 0x7F) << (7 * i), b & 0x80


def enclen(n):
    # an MQTT remaining length as bytes
    if n > MAXREM:
        raise MQTTError("packet too large")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def publish_sizes(flags, n, tlen, max_topic, max_msg):
    # an incoming PUBLISH of remaining length n whose topic is tlen bytes ->
    # payload size; MQTTError if the packet cannot be right; -1 if it is larger than allowed
    # (the caller skips it without allocating)
    p = n - 2 - tlen - (2 if flags & 6 else 0)
    if (flags & 6) == 6 or p < 0:
        raise MQTTError("malformed PUBLISH")
    if tlen > max_topic or p > max_msg:
        return -1
    return p


def backoff(attempt, base=1, cap=60):
    # reconnect delay in ms, exponential with full jitter: uniform in [d/2, d], d = base * 2**attempt s
    from random import getrandbits
    d = min(cap, base * (1 << min(attempt, 16))) * 1000
    return d // 2 + (getrandbits(16) * (d // 2)) // 65536


def name(topic):
    # a topic for a log line
    try:
        return topic.decode()
    except (UnicodeError, AttributeError):
        return repr(topic)
