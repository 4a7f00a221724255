# keypin.mqtt's oversized-message path, imported at the first PUBLISH larger than its topic's
# limit (issue 12.7): the rest of the packet is drained in small pieces into one reused buffer
# (nothing the size of the message is allocated), counted in `dropped`, logged, acknowledged.
from micropython import const

_PIECE = const(256)


def drop(c, topic, n, op, pid, left):
    # c: the keypin.mqtt.Client; left: the bytes of the packet not read yet
    from keypin.mqwire import name as _name
    s = c.c.sock
    if c._buf is None:
        c._buf = bytearray(_PIECE)  # kept on the client: the next oversized message reuses it
    b = c._buf
    mv = memoryview(b)
    while left > 0:
        k = s.readinto(mv[:min(left, len(b))])
        if not k:
            raise OSError(-1, "mqtt: connection closed inside a packet")
        left -= k
    c.dropped += 1
    c.log("mqtt: %d-byte message on %s dropped (limit %d)" % (n, _name(topic), c.limits.get(topic, c.max_msg)))
    c._ack(op, pid)
