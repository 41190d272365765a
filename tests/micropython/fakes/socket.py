# Fake of the `socket` module for the WebAssembly port (which has none).  A socket "connects" to
# BROKER, a tiny in-process MQTT 3.1.1 peer that records every byte the client sends and answers
# CONNECT, PUBLISH (QoS 1), SUBSCRIBE and PINGREQ.  Tests read BROKER.sent / BROKER.published and
# can make it refuse connections, stay silent after n publishes, or drop the connection.  It also
# plays the cloud receiver: with auto_confirm it confirms every batch right after its PUBACK (as
# the canonical confirmation), and deliver() sends any message to the subscribers of a topic.
import json

AF_INET = 2
SOCK_STREAM = 1


class Broker:
    def __init__(self):
        self.reset()

    def reset(self):
        self.sent = bytearray()  # every byte any client wrote, in order
        self.connects = []  # CONNECT packet bodies
        self.published = []  # (topic, payload, qos, retain) for every PUBLISH received
        self.connack_code = 0
        self.refuse_tcp = 0  # number of connect() calls to fail with ECONNREFUSED
        self.silent_after = None  # stop answering after this many PUBLISH packets
        self.sockets = []
        self.subscriptions = []  # (socket, topic filter, qos) of every SUBSCRIBE
        self.pubacks_in = []  # packet ids of the PUBACKs the client sent for our PUBLISHes
        self.auto_confirm = True
        self.confirmed = []  # batch seqs auto-confirmed
        self._pid = 0

    def deliver(self, topic, payload, qos=1):
        # Publish to every open socket subscribed to exactly `topic`; returns how many got it.
        n = 0
        t = topic.encode()
        for sock, flt, _q in self.subscriptions:
            if flt != topic or sock.closed or sock.peer_closed:
                continue
            self._pid = self._pid % 0xFFFF + 1
            var = bytes((len(t) >> 8, len(t) & 0xFF)) + t + (bytes((self._pid >> 8, self._pid & 0xFF)) if qos else b"")
            body = var + payload
            rl = bytearray()
            k = len(body)
            while True:
                b = k & 0x7F
                k >>= 7
                rl.append(b | 0x80 if k else b)
                if not k:
                    break
            sock.inbox.extend(bytes((0x30 | (qos << 1),)) + rl + body)
            n += 1
        return n

    def handle(self, sock, first, body):
        kind = first & 0xF0
        if kind == 0x10:
            self.connects.append(bytes(body))
            sock.inbox.extend(bytes((0x20, 2, 0, self.connack_code)))
        elif kind == 0x30:
            qos = (first >> 1) & 3
            n = (body[0] << 8) | body[1]
            topic = bytes(body[2 : 2 + n]).decode()
            at = 2 + n
            pid = None
            if qos:
                pid = body[at : at + 2]
                at += 2
            self.published.append((topic, bytes(body[at:]), qos, bool(first & 1)))
            if self.silent_after is not None and len(self.published) > self.silent_after:
                return
            if qos == 1:
                sock.inbox.extend(b"\x40\x02" + bytes(pid))
            if self.auto_confirm and topic.endswith("/batch"):
                msg = json.loads(bytes(body[at:]))
                self.confirmed.append(msg["seq"])
                confirm = json.dumps({"v": 1, "gateway": msg["gateway"], "seqs": [[msg["seq"], msg["seq"]]]})
                confirm = confirm.replace(" ", "")  # the canonical compact form
                self.deliver(topic[: -len("batch")] + "confirm", confirm.encode())
        elif kind == 0x80:  # SUBSCRIBE: one topic per packet is all the gateway sends
            pid = body[0:2]
            n = (body[2] << 8) | body[3]
            topic = bytes(body[4 : 4 + n]).decode()
            qos = body[4 + n]
            self.subscriptions.append((sock, topic, qos))
            sock.inbox.extend(b"\x90\x03" + bytes(pid) + bytes((qos,)))
        elif kind == 0x40:
            self.pubacks_in.append((body[0] << 8) | body[1])
        elif kind == 0xC0:
            sock.inbox.extend(b"\xd0\x00")
        elif kind == 0xE0:
            sock.peer_closed = True


BROKER = Broker()


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self.inbox = bytearray()  # bytes the broker sent, not read yet
        self._pending = bytearray()  # bytes from the client, not parsed yet
        self.closed = False
        self.peer_closed = False
        self.timeout = None
        self.addr = None
        BROKER.sockets.append(self)

    def settimeout(self, t):
        self.timeout = t

    def setblocking(self, flag):
        self.timeout = None if flag else 0

    def connect(self, addr):
        if BROKER.refuse_tcp > 0:
            BROKER.refuse_tcp -= 1
            raise OSError(111)  # ECONNREFUSED
        self.addr = addr

    def sendall(self, data):
        if self.closed or self.peer_closed:
            raise OSError(32)  # EPIPE
        BROKER.sent.extend(data)
        self._pending.extend(data)
        self._parse()

    def write(self, data):
        self.sendall(data)
        return len(data)

    def _parse(self):
        buf = self._pending
        while len(buf) >= 2:
            n = 0
            shift = 0
            i = 1
            while True:
                if i >= len(buf):
                    return
                b = buf[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            if len(buf) < i + n:
                return
            first = buf[0]
            body = bytes(buf[i : i + n])
            self._pending = buf = buf[i + n :]
            BROKER.handle(self, first, body)

    def recv(self, n):
        if self.closed:
            raise OSError(9)  # EBADF
        if not self.inbox:
            if self.peer_closed:
                return b""
            if self.timeout == 0:
                raise OSError(11)  # EAGAIN: non-blocking, nothing there
            raise OSError(110)  # ETIMEDOUT: a real socket with a timeout would wait, then fail
        out = bytes(self.inbox[:n])
        self.inbox = self.inbox[n:]
        return out

    def read(self, n):
        return self.recv(n)

    def readinto(self, buf):
        data = self.recv(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self):
        self.closed = True
