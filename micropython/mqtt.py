# A minimal MQTT 3.1.1 client: CONNECT (username/password, last will, keepalive), PUBLISH QoS
# 0/1 with PUBACK matching, PINGREQ, DISCONNECT, and SUBSCRIBE for the one topic a gateway reads
# (the cloud's confirmations).  A PUBLISH from the broker, QoS 0 or 1, is read into one receive
# buffer that is reused for every message, handed to on_message(topic, payload) and then
# acknowledged.  It can arrive while the client waits for a PUBACK, a SUBACK or a PINGRESP, or
# be picked up by check_msg() when idle.
#
# Plain Python that runs on MicroPython and on CPython (tests drive it against a real Mosquitto).
# Blocking, with a socket timeout, like umqtt.simple; every socket error becomes MQTTError.
import struct

try:
    import socket
except ImportError:  # pragma: no cover - the WebAssembly port has no socket; tests supply a fake
    import usocket as socket  # type: ignore[no-redef]

_CONNECT = 0x10
_CONNACK = 0x20
_PUBLISH = 0x30
_PUBACK = 0x40
_SUBSCRIBE = 0x82  # with the flags bits 0010 the spec requires
_SUBACK = 0x90
_PINGREQ = 0xC0
_PINGRESP = 0xD0
_DISCONNECT = 0xE0

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MQTTError(Exception):
    pass


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack(">H", len(b)) + b


def _remaining_length(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return out


def connect_packet(client_id, keepalive, user=None, password=None, will=None, clean_session=True):
    # will: (topic, message, qos, retain) or None
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will is not None:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(msg)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive) + payload
    return bytes((_CONNECT,)) + _remaining_length(len(body)) + body


def publish_header(topic, msg_len, qos, retain, pid):
    # Fixed header, topic and packet id; the payload follows as its own write, so a large batch
    # is never copied into a second buffer.
    t = _str(topic)
    var = t + (struct.pack(">H", pid) if qos else b"")
    first = _PUBLISH | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + _remaining_length(len(var) + msg_len) + var


class MQTTClient:
    def __init__(
        self, client_id, server, port=1883, user=None, password=None, keepalive=60, ssl=None, timeout=10, max_message=4096
    ):
        # ssl: None, or an SSLContext-like object with wrap_socket(sock, server_hostname=...)
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.timeout = timeout
        self.will = None
        self.sock = None
        self._pid = 0
        self._stream = False  # MicroPython SSL sockets only have read/write
        self.on_message = None  # callable(topic: bytes, payload: memoryview) or None
        self.max_message = max_message  # a larger PUBLISH is skipped and handed over as None
        self._rx = None  # receive buffer, grown to the largest message seen (up to max_message)

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, qos, retain)

    # ---- socket edge: foreign errors become MQTTError here ----------------------------------
    def _sock(self):
        if self.sock is None:
            raise MQTTError("not connected")
        return self.sock

    def _send(self, data):
        sock = self._sock()
        try:
            if self._stream:
                sock.write(data)
            else:
                sock.sendall(data)
        except OSError as e:
            raise MQTTError("send failed: %r" % (e,))

    def _recv(self, n):
        sock = self._sock()
        buf = b""
        try:
            while len(buf) < n:
                chunk = sock.read(n - len(buf)) if self._stream else sock.recv(n - len(buf))
                if not chunk:
                    raise MQTTError("connection closed by broker")
                buf += chunk
        except OSError as e:
            raise MQTTError("receive failed: %r" % (e,))
        return buf

    def _recv_into(self, mv):
        # Fill the memoryview `mv` from the socket without a new buffer per read.
        sock = self._sock()
        reader = getattr(sock, "readinto", None) or getattr(sock, "recv_into", None)
        got = 0
        try:
            while got < len(mv):
                if reader is not None:
                    k = reader(mv[got:])
                else:
                    chunk = sock.recv(len(mv) - got)
                    k = len(chunk)
                    mv[got : got + k] = chunk
                if not k:
                    raise MQTTError("connection closed by broker")
                got += k
        except OSError as e:
            raise MQTTError("receive failed: %r" % (e,))

    def _read_packet(self, first=None):
        # (type byte, body) of the next packet from the broker; the body of a PUBLISH is
        # handled (and acknowledged) here and returned as b"".
        if first is None:
            first = self._recv(1)[0]
        n = 0
        shift = 0
        while True:
            b = self._recv(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if first & 0xF0 == _PUBLISH:
            self._publish_in(first, n)
            return first, b""
        return first, self._recv(n) if n else b""

    def _publish_in(self, first, n):
        qos = (first >> 1) & 3
        if qos == 2:
            raise MQTTError("QoS 2 PUBLISH from the broker: we subscribe at QoS 1 only")
        head = self._recv(2)
        tlen = (head[0] << 8) | head[1]
        topic = self._recv(tlen)
        pid = struct.unpack(">H", self._recv(2))[0] if qos else 0
        size = n - 2 - tlen - (2 if qos else 0)
        if size < 0:
            raise MQTTError("bad PUBLISH length")
        payload = None
        if size <= self.max_message:
            if self._rx is None or len(self._rx) < size:
                self._rx = bytearray(max(size, 256))
            payload = memoryview(self._rx)[:size]
            self._recv_into(payload)
        else:
            skip = memoryview(bytearray(256))
            while size:
                k = min(size, 256)
                self._recv_into(skip[:k])
                size -= k
        if self.on_message is not None:
            self.on_message(topic, payload)
        # Acknowledged after it was handled: a reset in between means the broker's copy counts.
        if qos:
            self._send(struct.pack(">BBH", _PUBACK, 2, pid))

    def check_msg(self):
        # Handle what the broker sent while we were idle; returns without waiting when nothing
        # is there.  A dead connection shows on the next blocking call (publish or ping).
        sock = self._sock()
        sock.setblocking(False)
        try:
            b = sock.read(1) if self._stream else sock.recv(1)
        except OSError:
            b = None  # EAGAIN (or the like): nothing to read
        finally:
            if hasattr(sock, "settimeout"):
                sock.settimeout(self.timeout)
            else:
                sock.setblocking(True)
        if b is None:
            return False
        if not b:
            raise MQTTError("connection closed by broker")
        first, body = self._read_packet(b[0])
        if first & 0xF0 not in (_PUBLISH, _PUBACK, _PINGRESP, _SUBACK):
            raise MQTTError("unexpected packet 0x%02x" % first)
        return True

    def subscribe(self, topic, qos=1):
        # SUBSCRIBE to one topic; returns once the SUBACK grants it.
        pid = self._next_pid()
        body = struct.pack(">H", pid) + _str(topic) + bytes((qos,))
        self._send(bytes((_SUBSCRIBE,)) + _remaining_length(len(body)) + body)
        granted = self._wait(_SUBACK, pid)
        if not granted or granted[0] & 0x80:
            raise MQTTError("subscription to %s refused" % topic)
        return granted[0]

    # ---- protocol -------------------------------------------------------------------------------
    def connect(self, clean_session=True):
        self.close()
        sock = None
        try:
            addr = socket.getaddrinfo(self.server, self.port)[0][-1]
            sock = socket.socket()
            sock.settimeout(self.timeout)
            sock.connect(addr)
            if self.ssl is not None:
                sock = self.ssl.wrap_socket(sock, server_hostname=self.server)
        except OSError as e:
            if sock is not None:
                sock.close()
            raise MQTTError("cannot connect to %s:%d: %r" % (self.server, self.port, e))
        self.sock = sock
        self._stream = not hasattr(sock, "sendall") or not hasattr(sock, "recv")
        self._send(connect_packet(self.client_id, self.keepalive, self.user, self.password, self.will, clean_session))
        first, body = self._read_packet()
        if first != _CONNACK or len(body) != 2:
            self.close()
            raise MQTTError("expected CONNACK, got 0x%02x" % first)
        if body[1]:
            self.close()
            raise MQTTError("connection refused: %s" % CONNACK_REASONS.get(body[1], "code %d" % body[1]))
        return bool(body[0] & 1)

    def _next_pid(self):
        self._pid = self._pid % 0xFFFF + 1
        return self._pid

    def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 returns only after the matching PUBACK (so the caller may then drop the data);
        # a stale PUBACK for an earlier packet id is skipped.  Returns the packet id (0 for QoS 0).
        return self.publish_chunks(topic, len(msg), (msg,), retain, qos)

    def publish_chunks(self, topic, length, chunks, retain=False, qos=0):
        # The same, with the payload given as chunks whose lengths add up to `length`: the
        # gateway streams a batch from flash instead of building it in RAM.
        self._sock()
        pid = self._next_pid() if qos else 0
        self._send(publish_header(topic, length, qos, retain, pid))
        sent = 0
        for chunk in chunks:
            self._send(chunk)
            sent += len(chunk)
        if sent != length:
            # The broker now waits for bytes that never come: this connection is unusable.
            self.close()
            raise MQTTError("payload was %d bytes, announced %d" % (sent, length))
        if qos:
            self._wait(_PUBACK, pid)
        return pid

    def ping(self):
        self._send(bytes((_PINGREQ, 0)))
        self._wait(_PINGRESP, None)

    def _wait(self, kind, pid):
        # Read packets until the one awaited; returns what follows its packet id.  A PUBLISH
        # in between is handled on the way.
        while True:
            first, body = self._read_packet()
            if first & 0xF0 == kind:
                if pid is None or (len(body) >= 2 and struct.unpack_from(">H", body)[0] == pid):
                    return body[2:]
            elif first & 0xF0 not in (_PUBACK, _PINGRESP, _SUBACK, _PUBLISH):
                raise MQTTError("unexpected packet 0x%02x" % first)

    def disconnect(self):
        if self.sock is not None:
            try:
                self._send(bytes((_DISCONNECT, 0)))
            except MQTTError:
                pass
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def tls_context(ca_file=None, insecure=False):
    # An SSLContext for the broker connection. Without a CA file the server cannot be verified, and that must be
    # asked for (config broker.insecure), never a silent fallback.
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # real, missing from the stubs
    elif insecure:
        if hasattr(ctx, "check_hostname"):  # CPython only; the ESP32 stubs rightly don't know it
            setattr(ctx, "check_hostname", False)  # noqa: B010
        ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
    else:
        raise ValueError("TLS without a CA file: set broker.ca_file, or broker.insecure = true")
    return ctx
