#!/usr/bin/python3
"""Closed-loop dispatch load for gohub: C connections each keep W requests in
flight (raw sockets, pre-encoded masked frames, minimal reply parsing so the
client costs little per message). Prints replies/s over the measured window.

  dispatch_load.py PORT [--type ping] [--conns 50] [--window 32] [--seconds 5]

A measurement tool, not a test: it asserts nothing about speed."""
import argparse, base64, os, selectors, socket, struct, time

def frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:80]
    s.setblocking(False)
    return s, buf.split(b"\r\n\r\n", 1)[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--type", default="ping")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--show-errors", action="store_true", help="print error replies")
    a = ap.parse_args()
    req = frame(('{"message_type":"%s","message_id":1,"data":{"key":"k7"}}' % a.type).encode())
    sel = selectors.DefaultSelector()
    state = {}
    for _ in range(a.conns):
        s, rest = connect(a.port)
        state[s] = bytearray(rest)
        sel.register(s, selectors.EVENT_READ)
        s.sendall(req * a.window)
    count = errors = 0
    t0 = time.time(); start = t0 + 1.0; end = start + a.seconds; measured = 0
    while True:
        now = time.time()
        if now >= end:
            break
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                data = s.recv(262144)
            except BlockingIOError:
                continue
            buf = state[s]; buf += data
            i = 0; n = 0
            while len(buf) - i >= 2:
                ln = buf[i + 1] & 0x7F; h = 2
                if ln == 126:
                    if len(buf) - i < 4: break
                    ln = struct.unpack_from("!H", buf, i + 2)[0]; h = 4
                elif ln == 127:
                    if len(buf) - i < 10: break
                    ln = struct.unpack_from("!Q", buf, i + 2)[0]; h = 10
                if len(buf) - i < h + ln: break
                if buf[i] & 0x0F == 1:
                    n += 1
                    if b'"error"' in buf[i + h:i + h + 40]:
                        errors += 1
                        if a.show_errors and errors <= 5:
                            print(bytes(buf[i + h:i + h + ln]).decode(errors="replace"))
                i += h + ln
            del buf[:i]
            if n:
                s.sendall(req * n)
                count += n
                if now >= start: measured += n
    print(f"type={a.type} conns={a.conns} window={a.window} seconds={a.seconds} "
          f"replies_per_s={measured / a.seconds:.0f} errors={errors}")

if __name__ == "__main__":
    main()
