"""A minimal blocking RFC 6455 client for the bench scripts (smoke check and
the callgrind workload): masked text frames, verified handshake, no
dependencies beyond the standard library."""
import base64, hashlib, json, os, socket, struct, time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mask_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # XOR with the 4-byte mask, whole buffer at once
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
    return head + mask + body


class WS:
    def __init__(self, port, host="127.0.0.1", path="/ws", timeout=10.0, src=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(src, 0) if src else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                          b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 101"):
            raise ConnectionError("handshake refused: %r" % lines[0])
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        hdrs = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip()
                for l in lines[1:] if b":" in l}
        if hdrs.get(b"sec-websocket-accept") != accept:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        self.buf = bytearray(self.buf)

    def send_json(self, obj):
        self.sock.sendall(mask_frame(json.dumps(obj, separators=(",", ":")).encode()))

    def send_raw(self, frame: bytes):
        self.sock.sendall(frame)

    def _frame(self):
        """One complete frame from the buffer, or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n = b[1] & 0x7F
        h = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack_from("!H", b, 2)[0]
            h = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack_from("!Q", b, 2)[0]
            h = 10
        if len(b) < h + n:
            return None
        op = b[0] & 0x0F
        payload = bytes(b[h:h + n])
        del b[:h + n]
        return op, payload

    def recv_frame(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            f = self._frame()
            if f is not None:
                op, payload = f
                if op == 0x9:  # ping -> pong
                    self.sock.sendall(mask_frame(payload, 0xA))
                    continue
                return op, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    def recv_json(self, timeout=10.0):
        while True:
            op, payload = self.recv_frame(timeout)
            if op == 0x1:
                return json.loads(payload)
            if op == 0x8:
                raise ConnectionError("close frame %r" % payload[:2])

    def recv_type(self, mtype, timeout=10.0):
        """Next message of the given type, skipping others (presence events)."""
        while True:
            m = self.recv_json(timeout)
            if m.get("message_type") == mtype:
                return m

    def close(self):
        try:
            self.sock.sendall(mask_frame(struct.pack("!H", 1000), 0x8))
        except OSError:
            pass
        self.sock.close()
