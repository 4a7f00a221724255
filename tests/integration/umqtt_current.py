# Stand-in for micropython-lib's current umqtt.simple (>= 1.4, not on PyPI): the real PyPI
# 1.3.4 client with the current connect contract, where a truthy `ssl` object is used as
# ssl.wrap_socket(sock, server_hostname=server) and there is no ssl_params.
import socket
import struct

from umqtt.simple import MQTTClient as _Old
from umqtt.simple import MQTTException


class MQTTClient(_Old):
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        _Old.__init__(self, client_id, server, port or (8883 if ssl else 1883), user, password, keepalive, ssl)
        del self.ssl_params

    def connect(self, clean_session=True):
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
        if self.ssl:
            self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
        body = bytearray(b"\x00\x04MQTT\x04\x00\x00\x00")
        body[7] = clean_session << 1
        body[8], body[9] = self.keepalive >> 8, self.keepalive & 0xFF
        pay = struct.pack("!H", len(self.client_id)) + self.client_id
        if self.user:
            body[7] |= 0xC0
            pay += struct.pack("!H", len(self.user)) + self.user
            pay += struct.pack("!H", len(self.pswd)) + self.pswd
        n = len(body) + len(pay)
        assert n < 128
        self.sock.write(bytes([0x10, n]) + body + pay)
        resp = self.sock.read(4)
        assert resp[0] == 0x20 and resp[1] == 0x02
        if resp[3] != 0:
            raise MQTTException(resp[3])
        return resp[2] & 1
