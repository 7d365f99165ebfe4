"""Helpers for the gohub integration tests: starting the daemon, a raw HTTP
client, a raw WebSocket client that can build any frame by hand, and /proc
readers. Every blocking read has a deadline; nothing here can hang."""

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "gohub.yaml"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error:")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1


class Timeout(Exception):
    pass


# --------------------------------------------------------------------------
# binaries and environment


def release_bin():
    p = os.environ.get("GOHUB_BIN") or str(REPO / "build" / "release" / "gohub")
    return p


def asan_bin():
    p = os.environ.get("GOHUB_ASAN_BIN")
    if not p or not os.path.isfile(p) or not os.access(p, os.X_OK):
        return None
    return p


def clean_env():
    """The test process environment without any GOHUB_* variable (GOHUB_BIN
    and GOHUB_ASAN_BIN must not reach the daemon as config overrides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GOHUB_")}


ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


_handed_out = set()


def free_port():
    """A loopback port free now, never one this process handed out before:
    the kernel may pick the same port twice in a row, and a test that gives
    one port to METRICS_PORT and then starts a daemon (which picks its own)
    must not get two equal ports."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


# --------------------------------------------------------------------------
# /proc


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def wait_for(pred, timeout, interval=0.05):
    """Polls pred() until it returns a truthy value or timeout passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# the daemon


def start_refused(binary, env, timeout=10.0):
    """Starts gohub (-c CONFIG, env on top of clean_env) expecting it to
    refuse to start. Returns (exit code, output); the code is None when it
    was still running after timeout s (then it is killed)."""
    e = clean_env()
    e.update(env)
    p = subprocess.Popen([str(binary), "-c", str(CONFIG)], cwd=str(REPO), env=e,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out.decode(errors="replace")


class Daemon:
    """One gohub process. env: extra GOHUB_* (or other) variables on top of
    the test defaults (a value of None removes a default). args: command-line arguments (default -c CONFIG)."""

    def __init__(self, binary, logdir, env=None, args=None, asan=False):
        self.binary = str(binary)
        self.logdir = Path(logdir)
        self.extra_env = dict(env or {})
        self.args = list(args) if args is not None else ["-c", str(CONFIG)]
        self.asan = asan
        self.proc = None
        self.port = None
        self.rc = None
        self.log_path = None
        self._logf = None
        self._outf = None
        self.exit_checked = False  # a test that checks the exit itself sets this

    @property
    def pid(self):
        return self.proc.pid

    def env(self):
        env = clean_env()
        env.update(
            GOHUB_SERVER_ADDR=f"127.0.0.1:{self.port}",
            GOHUB_SERVER_WORKERS="2",
            GOHUB_LOG_LEVEL="debug",
            # tests pipeline thousands of messages; test_ratelimit.py sets its own
            GOHUB_LIMITS_MESSAGES_PER_SECOND="0",
        )
        if self.asan:
            env.update(ASAN_ENV)
        env.update(self.extra_env)
        for k in [k for k, v in env.items() if v is None]:  # None removes a default
            del env[k]
        return env

    def start(self, health_timeout=10.0):
        if not os.path.isfile(self.binary):
            raise AssertionError(f"gohub binary not found: {self.binary}")
        last = ""
        for attempt in range(3):  # a picked port can be taken in between
            self.port = free_port()
            self.log_path = self.logdir / f"gohub-{self.port}-{attempt}.stderr.log"
            self._logf = open(self.log_path, "wb")
            self._outf = open(self.logdir / f"gohub-{self.port}-{attempt}.stdout.log", "wb")
            self.proc = subprocess.Popen(
                [self.binary] + self.args,
                cwd=str(REPO),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=self._outf,
                stderr=self._logf,
            )
            deadline = time.monotonic() + health_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    r = http_get(self.port, "/health", timeout=1.0)
                    # 503 "degraded": serving, with a configured bus down
                    if r is not None and (r.status == 200 or (
                            r.status == 503 and r.json().get("bus") == "down")):
                        return self
                except (OSError, Timeout, ValueError):
                    pass
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
                self._close_files()
                raise AssertionError(
                    f"gohub did not answer GET /health 200 within {health_timeout}s; "
                    f"log:\n{self.log_text()[-4000:]}")
            self.rc = self.proc.returncode
            self._close_files()
            last = self.log_text()
            if "in use" not in last.lower():
                break
        raise AssertionError(f"gohub exited at start with code {self.rc}; log:\n{last[-4000:]}")

    def _close_files(self):
        for f in (self._logf, self._outf):
            if f:
                f.close()
        self._logf = self._outf = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            self.rc = self.proc.wait(timeout)
            return self.rc
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to timeout, return the exit code. If it is still
        running, SIGKILL it and raise."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._close_files()
                raise AssertionError(f"gohub still running {timeout}s after SIGTERM; SIGKILLed")
        self.rc = self.proc.returncode
        self._close_files()
        return self.rc

    def log_text(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def log_records(self):
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def sanitizer_reports(self):
        text = self.log_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    def fd_count(self):
        return fd_count(self.proc.pid)

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def health(self):
        r = http_get(self.port, "/health", timeout=3.0)
        assert r is not None and r.status == 200, f"/health: {r}"
        return r.json()

    def stable_fd_count(self, settle=0.3, timeout=3.0):
        """fd count once it stopped changing for `settle` seconds."""
        deadline = time.monotonic() + timeout
        last = self.fd_count()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.fd_count()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
        return last

    def finish_and_check(self, timeout=15.0):
        """Stops the daemon and returns a list of problems (empty = fine)."""
        problems = []
        try:
            rc = self.stop(timeout)
        except AssertionError as e:
            return [str(e)]
        if not self.exit_checked and rc != 0:
            problems.append(f"gohub exited with {rc} after SIGTERM (want 0); log tail:\n"
                            f"{self.log_text()[-3000:]}")
        if self.asan:
            found = self.sanitizer_reports()
            if found:
                problems.append(f"sanitizer reports {found} in log:\n{self.log_text()[-6000:]}")
        return problems


@contextlib.contextmanager
def running_daemon(binary, logdir, env=None, args=None, asan=False):
    d = Daemon(binary, logdir, env=env, args=args, asan=asan).start()
    try:
        yield d
    finally:
        problems = d.finish_and_check()
        if problems:
            raise AssertionError("\n".join(problems))


def is_asan_build(binary):
    """True when binary is an ASan build (which neither an LD_PRELOAD
    allocator nor valgrind can run beside)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


# --------------------------------------------------------------------------
# cluster buses

BUSES = ["redis", "nats"]

# cluster timings short enough for tests
FAST = {"GOHUB_CLUSTER_HEARTBEAT_INTERVAL": "300ms", "GOHUB_CLUSTER_NODE_TIMEOUT": "2s",
        "GOHUB_CLUSTER_RECONNECT_MAX_BACKOFF": "500ms"}


class BusServer:
    """redis-server or nats-server on a free loopback port."""

    def __init__(self, kind, tmp):
        self.kind, self.tmp, self.port, self.proc = kind, tmp, free_port(), None

    def command(self):
        if self.kind == "redis":
            return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                    "--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        return ["nats-server", "-a", "127.0.0.1", "-p", str(self.port)]

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_for(self._ready, 10), f"{self.command()[0]} did not start"
        return self

    def _ready(self):
        """Listening (subclasses may ask more)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def env(self):
        if self.kind == "redis":
            return {"GOHUB_CLUSTER_BUS_TYPE": "redis",
                    "GOHUB_CLUSTER_REDIS_ADDRS": f"127.0.0.1:{self.port}"}
        return {"GOHUB_CLUSTER_BUS_TYPE": "nats",
                "GOHUB_CLUSTER_NATS_URLS": f"nats://127.0.0.1:{self.port}"}


# --------------------------------------------------------------------------
# a buffered socket with deadlines


class Conn:
    def __init__(self, port, timeout=5.0, rcvbuf=None, sndbuf=None, host="127.0.0.1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.settimeout(timeout)
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data, timeout=10.0):
        """sendall; returns False if the peer closed/reset (EPIPE,
        ECONNRESET) or the send could not finish within timeout."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return False
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                return False
            raise

    def _fill(self, deadline):
        """Reads once. Returns number of bytes; 0 at EOF/RST. Raises Timeout."""
        if self.eof:
            return 0
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise Timeout()
        except ConnectionResetError:
            self.eof = self.reset = True
            return 0
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                self.eof = self.reset = True
                return 0
            raise
        if not data:
            self.eof = True
            return 0
        self.buf += data
        return len(data)

    def read_until(self, delim, timeout):
        """Bytes up to and including delim; None on EOF before it."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[: i + len(delim)])
                del self.buf[: i + len(delim)]
                return out
            if self._fill(deadline) == 0:
                return None

    def read_exact(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if self._fill(deadline) == 0:
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_all(self, timeout):
        """Everything until EOF; raises Timeout if EOF does not come."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def wait_closed(self, timeout):
        """True if the peer closes (EOF or RST) within timeout; keeps data."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except Timeout:
            return False

    def is_open_after(self, wait):
        """True if the connection is still open `wait` seconds from now."""
        return not self.wait_closed(wait)


# --------------------------------------------------------------------------
# HTTP


class HttpResponse:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body
        self.closed = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return (f"<HTTP {self.status} {self.reason!r} headers={self.headers} "
                f"body={self.body[:300]!r} closed={self.closed}>")


def _parse_head(head):
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise ValueError(f"bad status line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return m.group(1), int(m.group(2)), m.group(3) or "", headers


def read_response(conn, timeout=5.0, head_only=False):
    """Reads one response; None if the connection closed before a response
    head arrived."""
    deadline = time.monotonic() + timeout
    head = conn.read_until(b"\r\n\r\n", timeout)
    if head is None:
        if conn.buf:
            raise ValueError(f"incomplete response head before EOF: {bytes(conn.buf[:200])!r}")
        return None
    version, status, reason, headers = _parse_head(head[:-4])
    r = HttpResponse(version, status, reason, headers, b"")
    if head_only or status == 101 or 100 <= status < 200 or status in (204, 304):
        return r
    cl = r.header("content-length")
    te = (r.header("transfer-encoding") or "").lower()
    left = lambda: max(0.01, deadline - time.monotonic())
    if cl is not None:
        r.body = conn.read_exact(int(cl), left())
    elif "chunked" in te:
        body = b""
        while True:
            line = conn.read_until(b"\r\n", left())
            if line is None:
                raise EOFError("EOF in chunked body")
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                conn.read_until(b"\r\n", left())
                break
            body += conn.read_exact(n, left())
            conn.read_exact(2, left())
        r.body = body
    else:
        r.body = conn.read_all(left())
    return r


def request(port, raw, timeout=5.0, head_only=False, close_wait=3.0, rcvbuf=None):
    """Sends raw bytes on a new connection, reads one response, then waits up
    to close_wait for the server to close; resp.closed tells. Returns None
    (after checking close) if the server closed without any response."""
    with Conn(port, timeout=timeout, rcvbuf=rcvbuf) as c:
        c.send(raw)
        try:
            r = read_response(c, timeout, head_only=head_only)
        except ConnectionResetError:
            r = None
        closed = c.wait_closed(close_wait) if close_wait else None
        if r is None:
            return None
        r.closed = closed
        return r


def http_get(port, path, timeout=3.0, extra=""):
    raw = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
           f"Connection: close\r\n\r\n").encode()
    with Conn(port, timeout=timeout) as c:
        c.send(raw)
        return read_response(c, timeout)


def assert_error_body(resp, code=None):
    """Error bodies: {"error":{"code":"<word>","message":"<text>"}}."""
    ct = (resp.header("content-type") or "").lower()
    assert ct.startswith("application/json"), f"error Content-Type {ct!r}: {resp}"
    try:
        j = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp}")
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), f"error body shape: {j}"
    e = j["error"]
    assert isinstance(e.get("code"), str) and re.fullmatch(r"[a-z0-9_]+", e["code"]), \
        f"error.code must be a word: {j}"
    assert isinstance(e.get("message"), str) and e["message"], f"error.message: {j}"
    if code is not None:
        assert e["code"] == code, f"error.code {e['code']!r}, want {code!r}"
    return e


# --------------------------------------------------------------------------
# /metrics: the Prometheus text exposition, parsed

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def _labels(s):
    out, i = {}, 0
    while i < len(s):
        m = _LABEL.match(s, i)
        assert m, f"bad label list {s!r} at {i}"
        out[m.group(1)] = _unescape(m.group(2))
        i = m.end()
    return out


class Scrape:
    """One parsed exposition: samples by (name, labels) and families."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                self.types[name] = typ
                continue
            if line.startswith("#") or not line:
                continue
            m = _SAMPLE.match(line)
            assert m, f"unparsable sample line {line!r}"
            key = (m.group(1), tuple(sorted(_labels(m.group(2) or "").items())))
            assert key not in self.samples, f"series twice: {line!r}"
            self.samples[key] = float(m.group(3))

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            have = sorted(str(dict(k[1])) for k in self.samples if k[0] == name)
            raise AssertionError(f"no sample {name}{labels}; {name} has {have}")
        return self.samples[key]

    def series(self, name):
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}

    def by(self, name, label):
        """{label value: sample} of a family with one label."""
        return {dict(k)[label]: v for k, v in self.series(name).items()}

    def family_of(self, metric):
        """The family a sample or query name belongs to (histogram parts
        map to their histogram), or None."""
        if metric in self.types:
            return metric
        for suffix in ("_bucket", "_sum", "_count"):
            base = metric[: -len(suffix)]
            if metric.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None


def scrape_text(port):
    r = http_get(port, "/metrics", timeout=5.0)
    assert r is not None and r.status == 200, f"GET /metrics: {r}"
    ct = (r.header("content-type") or "").replace(" ", "").lower()
    assert ct.startswith("text/plain;version=0.0.4"), f"Content-Type {ct!r}"
    return r.body.decode("utf-8")


def scrape(port):
    return Scrape(scrape_text(port))


# --------------------------------------------------------------------------
# WebSocket frames


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def mask_payload(key, data):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None, form=None, mask_key=None):
    """Builds one frame. rsv: 3-bit value (RSV1=4). length: the declared
    payload length (default len(payload)). form: '7', '16' or '64' to force a
    length encoding (non-minimal ones included)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    if form is None:
        form = "7" if n < 126 else ("16" if n < 65536 else "64")
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    m = 0x80 if mask else 0
    if form == "7":
        hdr = bytes([b0, m | n])
    elif form == "16":
        hdr = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return hdr + key + mask_payload(key, payload)
    return hdr + payload


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = fin, rsv, opcode, masked, payload

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        extra = f" code={self.close_code}" if self.opcode == OP_CLOSE else ""
        return f"<Frame op={self.opcode:#x} fin={self.fin} rsv={self.rsv}{extra} len={len(self.payload)} {p!r}>"


def parse_one(data):
    """Parses one server frame at the start of data; returns (Frame, consumed)
    or None if data holds no complete frame."""
    if len(data) < 2:
        return None
    b0, b1 = data[0], data[1]
    n = b1 & 0x7F
    j = 2
    if n == 126:
        if len(data) < 4:
            return None
        n = struct.unpack("!H", data[2:4])[0]
        j = 4
    elif n == 127:
        if len(data) < 10:
            return None
        n = struct.unpack("!Q", data[2:10])[0]
        j = 10
    key = None
    if b1 & 0x80:
        if len(data) < j + 4:
            return None
        key = bytes(data[j:j + 4])
        j += 4
    if len(data) - j < n:
        return None
    payload = bytes(data[j:j + n])
    if key:
        payload = mask_payload(key, payload)
    return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, bool(b1 & 0x80), payload), j + n


def parse_frames(data):
    """Parses server frames from bytes; returns (frames, leftover)."""
    frames = []
    i = 0
    while True:
        r = parse_one(memoryview(data)[i:])
        if r is None:
            break
        frames.append(r[0])
        i += r[1]
    return frames, bytes(data[i:])


def ws_request(port, key=None, path="/ws", method="GET", version="HTTP/1.1",
               drop=(), set_headers=None, add=None, body=b""):
    """Builds a handshake request. drop: header names to leave out;
    set_headers: {name: value} replacing defaults; add: [(name, value)]
    appended (duplicates allowed)."""
    key = key or ws_key()
    hdrs = [
        ("Host", f"127.0.0.1:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    dropl = {d.lower() for d in drop}
    setl = {k.lower(): (k, v) for k, v in (set_headers or {}).items()}
    out = []
    for k, v in hdrs:
        if k.lower() in dropl:
            continue
        if k.lower() in setl:
            k, v = setl.pop(k.lower())
        out.append((k, v))
    out.extend(setl.values())
    out.extend(add or [])
    text = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out) + "\r\n"
    return text.encode("latin-1") + body


class CloseResult:
    def __init__(self, frame, others, eof):
        self.frame = frame      # the close Frame, or None if TCP ended without one
        self.others = others    # frames seen before it
        self.eof = eof

    @property
    def code(self):
        return self.frame.close_code if self.frame else None

    @property
    def data_frames(self):
        return [f for f in self.others if f.opcode in (OP_TEXT, OP_BINARY, OP_CONT)]

    def __repr__(self):
        return f"<Close frame={self.frame} before={self.others} eof={self.eof}>"


class RawWS:
    """A raw WebSocket client on a Conn."""

    def __init__(self, conn, resp, key):
        self.conn = conn
        self.resp = resp
        self.key = key

    @classmethod
    def connect(cls, port, rcvbuf=None, extra=b"", timeout=5.0, **req_kw):
        key = req_kw.pop("key", None) or ws_key()
        conn = Conn(port, timeout=timeout, rcvbuf=rcvbuf)
        try:
            conn.send(ws_request(port, key=key, **req_kw) + extra)
            resp = read_response(conn, timeout)
            assert resp is not None, "connection closed instead of a handshake response"
            assert resp.status == 101, f"handshake: {resp}"
            assert resp.header("sec-websocket-accept") == ws_accept(key), f"bad accept: {resp}"
        except BaseException:
            conn.close()
            raise
        return cls(conn, resp, key)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data, timeout=10.0):
        return self.conn.send(data, timeout)

    def send_frame(self, opcode, payload=b"", **kw):
        return self.conn.send(frame(opcode, payload, **kw))

    def send_text(self, text, **kw):
        return self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)

    def send_close(self, code=None, reason=b""):
        return self.send_frame(OP_CLOSE, close_payload(code, reason))

    def recv_frame(self, timeout=3.0):
        """Next server frame. Raises EOFError at EOF, Timeout."""
        deadline = time.monotonic() + timeout
        while True:
            r = parse_one(self.conn.buf)
            if r is not None:
                del self.conn.buf[: r[1]]
                return r[0]
            if self.conn._fill(deadline) == 0:
                raise EOFError(f"EOF (reset={self.conn.reset}) with {len(self.conn.buf)} unparsed bytes")

    def recv_data(self, timeout=3.0, skip_control=True):
        """Next data frame, skipping pings/pongs if skip_control; a skipped
        ping is answered, as every client must (RFC 6455 5.5.2), so a test
        that runs past the server's first ping is not closed for it."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if skip_control and f.opcode in (OP_PING, OP_PONG):
                if f.opcode == OP_PING:
                    self.send_frame(OP_PONG, f.payload)
                continue
            return f

    def expect_close(self, timeout=3.0):
        """Reads until a close frame or EOF. Raises Timeout if neither comes."""
        deadline = time.monotonic() + timeout
        others = []
        while True:
            try:
                f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except EOFError:
                return CloseResult(None, others, True)
            if f.opcode == OP_CLOSE:
                return CloseResult(f, others, False)
            others.append(f)

    def wait_eof(self, timeout):
        return self.conn.wait_closed(timeout)

    def close_handshake(self, timeout=3.0):
        """Client-initiated normal close; returns the server's close frame."""
        self.send_close(1000)
        r = self.expect_close(timeout)
        self.wait_eof(timeout)
        self.close()
        return r


def assert_fails_with(ws, codes, allow_tcp_close=False, timeout=3.0, allow_data=False, reply=True):
    """The server must send a close frame with a code in codes (or, if
    allow_tcp_close, end TCP without one), send no data frame before, and
    end the TCP connection."""
    try:
        r = ws.expect_close(timeout)
    except Timeout:
        raise AssertionError(f"no close frame and no TCP close within {timeout}s "
                             f"(want close {codes})")
    if r.frame is None:
        assert allow_tcp_close, f"TCP closed without a close frame (want close {codes}); {r}"
    else:
        assert r.code in codes, f"close code {r.code} reason {r.frame.close_reason!r}, want {codes}"
    if not allow_data:
        assert not r.data_frames, f"unexpected data frames before close: {r.data_frames}"
    if r.frame is not None:
        if reply:
            ws.send_close(r.code if r.code not in (None, 1005, 1006, 1015) else 1000)
        assert ws.wait_eof(2.5), "server did not close TCP after the close frame"
    ws.close()
    return r


def bulk_send(conn, data, timeout=20.0, chunk=65536):
    """Sends data while also reading whatever the server sends (so a server
    close frame is not lost). Stops at EOF/RST/EPIPE. Returns bytes sent."""
    s = conn.sock
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + timeout
    mv = memoryview(data)
    try:
        while sent < len(data) and time.monotonic() < deadline and not conn.eof:
            r, w, _ = select.select([s], [s], [], 0.2)
            if r:
                try:
                    d = s.recv(262144)
                    if not d:
                        conn.eof = True
                        break
                    conn.buf += d
                except (ConnectionResetError, BrokenPipeError):
                    conn.eof = conn.reset = True
                    break
                except BlockingIOError:
                    pass
            if w:
                try:
                    sent += s.send(mv[sent:sent + chunk])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
    finally:
        s.setblocking(True)
    return sent


# --------------------------------------------------------------------------
# control client (ping_latency, for a JSON round trip, is further below)


def health_latency(port, timeout=3.0):
    t0 = time.monotonic()
    r = http_get(port, "/health", timeout)
    dt = time.monotonic() - t0
    assert r is not None and r.status == 200, f"/health during fault: {r}"
    return dt


def module_daemon(env=None):
    """A module-scoped daemon fixture with extra env:
    `daemon = module_daemon({"GOHUB_X": "y"})` in a test module."""
    import pytest

    @pytest.fixture(scope="module")
    def _fixture(gohub_bin, tmp_path_factory):
        with running_daemon(gohub_bin, tmp_path_factory.mktemp("gohub"), env=env) as d:
            yield d
    return _fixture


# --------------------------------------------------------------------------
# the JSON protocol on /ws (the Lua dispatch layer): a synchronous client
# with deadlines, envelope checks and a raw-JSON field extractor

_AUTO = object()


class ServerClosed(AssertionError):
    pass


class Msg(dict):
    """One server message: the decoded JSON object; .raw is the frame text."""
    raw = ""


def now_ms():
    return int(time.time() * 1000)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_envelope(m, request_id=None, push=False):
    """Server->client envelope: message_id int, message_type str, data,
    timestamp (ms int near now); request_id an int if present. request_id:
    the value it must carry (None: not checked). push: a server-originated
    message: non-zero message_id and no request_id."""
    assert isinstance(m, dict), f"not an object: {m!r}"
    assert is_int(m.get("message_id")), f"message_id not an int: {m.raw if hasattr(m, 'raw') else m}"
    assert isinstance(m.get("message_type"), str), f"message_type: {m}"
    assert "data" in m, f"no data: {m}"
    ts = m.get("timestamp")
    assert is_int(ts), f"timestamp not an int: {m}"
    assert abs(ts - now_ms()) < 60000, f"timestamp {ts} is not ms since the epoch (now {now_ms()})"
    if "request_id" in m:
        assert is_int(m["request_id"]), f"request_id not an int: {m}"
    if request_id is not None:
        assert m.get("request_id") == request_id, f"request_id {m.get('request_id')!r}, want {request_id}: {m}"
    if push:
        assert m["message_id"] != 0, f"push without a server-assigned message_id: {m}"
        assert "request_id" not in m, f"push carries a request_id: {m}"
    return m


def check_error(m, code, request_id=0):
    """An error envelope: message_type "error", data {code, message,
    request_id}, top-level request_id."""
    check_envelope(m)
    assert m["message_type"] == "error", f"want error {code}, got {m.raw if hasattr(m, 'raw') else m}"
    d = m["data"]
    assert isinstance(d, dict), f"error data not an object: {m}"
    codes = code if isinstance(code, (tuple, list, set)) else (code,)
    assert d.get("code") in codes, f"error code {d.get('code')!r}, want {code}: {m}"
    assert isinstance(d.get("message"), str) and d["message"], f"error message: {m}"
    assert d.get("request_id") == request_id, f"data.request_id {d.get('request_id')!r}, want {request_id}: {m}"
    assert m.get("request_id") == request_id, f"top-level request_id {m.get('request_id')!r}, want {request_id}: {m}"
    return m


def _skip_ws(s, i):
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def raw_members(text, start=0):
    """The members of the JSON object starting at text[start] (after
    whitespace): a dict key -> (raw value text, decoded value)."""
    dec = json.JSONDecoder()
    i = _skip_ws(text, start)
    assert text[i] == "{", f"not an object at {i}: {text[i:i + 40]!r}"
    i = _skip_ws(text, i + 1)
    out = {}
    if text[i] == "}":
        return out
    while True:
        assert text[i] == '"', f"bad key at {i}: {text[i:i + 40]!r}"
        key, i = json.decoder.scanstring(text, i + 1)
        i = _skip_ws(text, i)
        assert text[i] == ":"
        i = _skip_ws(text, i + 1)
        val, end = dec.raw_decode(text, i)
        out[key] = (text[i:end], val)
        i = _skip_ws(text, end)
        if text[i] == "}":
            return out
        assert text[i] == ","
        i = _skip_ws(text, i + 1)


def raw_data_field(msg_text, key):
    """The raw JSON text of data[key] in a server frame's text."""
    top = raw_members(msg_text)
    assert "data" in top, f"no data in {msg_text!r}"
    members = raw_members(top["data"][0])
    assert key in members, f"no data.{key} in {msg_text!r}"
    return members[key][0]


class Hub:
    """A /ws client speaking the JSON protocol. Messages that arrive while
    waiting for something else are kept in .pending for later expects."""

    def __init__(self, port, timeout=5.0, name="", **connect_kw):
        self.port = port
        self.name = name
        self.ws = RawWS.connect(port, timeout=timeout, **connect_kw)
        self.pending = []
        self.next_id = 1
        self.client_id = None
        self.user_id = None
        self.close_frame = None

    def __repr__(self):
        return f"<Hub {self.name} {self.client_id}>"

    # ---- sending
    def send_raw(self, text):
        assert self.ws.send_text(text), f"{self}: send failed"

    def envelope(self, message_type, data=None, mid=_AUTO, **extra):
        obj = {"message_type": message_type}
        if data is not None:
            obj["data"] = data
        if mid is _AUTO:
            mid = self.next_id
            self.next_id += 1
        if mid is not None:
            obj["message_id"] = mid
        obj.update(extra)
        return obj, (mid if is_int(mid) else 0)

    def send(self, message_type, data=None, mid=_AUTO, **extra):
        """Sends one request; mid: _AUTO (next id), None (no message_id
        field) or any value. Returns the message_id sent (0 if none)."""
        obj, mid = self.envelope(message_type, data, mid, **extra)
        self.send_raw(json.dumps(obj))
        return mid

    # ---- receiving
    def _read(self, timeout):
        if self.close_frame is not None:
            raise ServerClosed(f"{self}: connection closed earlier ({self.close_frame})")
        try:
            f = self.ws.recv_data(timeout)
        except EOFError as e:
            self.close_frame = "EOF"
            raise ServerClosed(f"{self}: server ended the connection: {e}")
        if f.opcode == OP_CLOSE:
            self.close_frame = f
            raise ServerClosed(f"{self}: server sent close {f.close_code} {f.close_reason!r}")
        assert f.opcode == OP_TEXT and f.fin, f"{self}: unexpected frame {f}"
        text = f.payload.decode("utf-8")
        try:
            obj = json.loads(text)
        except ValueError:
            raise AssertionError(f"{self}: server sent non-JSON text {text[:300]!r}")
        assert isinstance(obj, dict), f"{self}: server message not an object: {text[:300]!r}"
        m = Msg(obj)
        m.raw = text
        return m

    def recv(self, timeout=3.0):
        if self.pending:
            return self.pending.pop(0)
        try:
            return self._read(timeout)
        except Timeout:
            raise AssertionError(f"{self}: no message within {timeout}s")

    def expect(self, pred, timeout=3.0, what="a message"):
        """The first message (pending ones first) for which pred is true;
        others stay pending. AssertionError after timeout."""
        for i, m in enumerate(self.pending):
            if pred(m):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self._read(left)
            except Timeout:
                break
            if pred(m):
                return m
            self.pending.append(m)
        summary = [p.raw[:200] for p in self.pending[-8:]]
        raise AssertionError(f"{self}: no {what} within {timeout}s; pending (last 8): {summary}")

    def expect_type(self, message_type, timeout=3.0, pred=None):
        return self.expect(lambda m: m.get("message_type") == message_type and (pred is None or pred(m)),
                           timeout, what=f"{message_type!r} message")

    def reply(self, mid, timeout=3.0):
        assert mid, "reply() needs a non-zero message_id"
        return self.expect(lambda m: m.get("request_id") == mid, timeout, what=f"reply to {mid}")

    def call(self, message_type, data=None, timeout=3.0, **extra):
        """Sends with the next message_id and returns its reply (checked
        envelope, request_id)."""
        mid = self.send(message_type, data, **extra)
        r = self.reply(mid, timeout)
        check_envelope(r, request_id=mid)
        return r

    def call_ok(self, message_type, data=None, reply_type=None, timeout=3.0):
        r = self.call(message_type, data, timeout)
        assert r["message_type"] != "error", f"{self}: {message_type} {data} failed: {r.raw}"
        if reply_type:
            assert r["message_type"] == reply_type, f"{self}: {message_type}: want {reply_type}, got {r.raw}"
        return r

    def call_err(self, message_type, data, code, timeout=3.0):
        mid = self.send(message_type, data)
        r = self.reply(mid, timeout)
        return check_error(r, code, mid)

    def quiet(self, pred=lambda m: True, wait=0.3, what="message"):
        """Asserts that no message matching pred arrives (or is pending)
        within wait seconds; other messages stay pending."""
        for m in self.pending:
            assert not pred(m), f"{self}: unexpected {what}: {m.raw}"
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                m = self._read(left)
            except Timeout:
                return
            assert not pred(m), f"{self}: unexpected {what}: {m.raw}"
            self.pending.append(m)

    def no_more_replies(self, mid, wait=0.3):
        """Nothing else answers request mid within wait seconds."""
        self.quiet(lambda m: m.get("request_id") == mid
                   or (m.get("message_type") == "error"
                       and isinstance(m.get("data"), dict) and m["data"].get("request_id") == mid),
                   wait, what=f"second reply to {mid}")

    def drain(self, wait=0.2):
        """Everything that arrives within wait seconds (pending included)."""
        out = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self._read(left))
            except Timeout:
                return out

    def ping(self, timeout=3.0):
        r = self.call("ping", {"ts": now_ms()}, timeout)
        assert r["message_type"] == "pong", f"{self}: ping answered with {r.raw}"
        return r

    def whoami(self):
        """Learns this connection's client_id/user_id: joins a fresh room
        alone, reads room_members, leaves."""
        if self.client_id:
            return self.client_id
        room = "whoami-" + os.urandom(6).hex()
        self.call_ok("join_room", {"room_id": room}, "room_joined")
        r = self.call_ok("room_members", {"room_id": room}, "room_members")
        members = r["data"]["members"]
        assert len(members) == 1, f"fresh room {room} has members {members}"
        self.client_id = members[0]["client_id"]
        self.user_id = members[0]["user_id"]
        self.call_ok("leave_room", {"room_id": room}, "room_left")
        return self.client_id

    def close(self):
        try:
            if self.close_frame is None:
                self.ws.send_close(1000)
        except OSError:
            pass
        self.ws.close()

    def abort(self):
        """Closes TCP without a close frame."""
        self.ws.close()


def hub_frames(objs):
    """Bytes of masked text frames for a list of JSON objects or strings."""
    return b"".join(frame(OP_TEXT, (o if isinstance(o, str) else json.dumps(o)).encode())
                    for o in objs)


def http_post(port, path, body=b"", timeout=10.0, headers=None):
    if isinstance(body, str):
        body = body.encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
           f"Connection: close\r\n\r\n").encode() + body
    with Conn(port, timeout=timeout) as c:
        c.send(raw)
        return read_response(c, timeout)


def reload_lua(port, timeout=10.0):
    """POST /api/reload; returns the response."""
    r = http_post(port, "/api/reload", timeout=timeout)
    assert r is not None, "POST /api/reload: connection closed without a response"
    return r


def copy_lua(dest):
    """Copies the repo's lua/ directory to dest (a new directory); returns
    dest as a Path."""
    import shutil
    dest = Path(dest)
    shutil.copytree(REPO / "lua", dest)
    return dest


def write_lua(lua_dir, rel, text):
    p = Path(lua_dir) / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def simple_handler(reply_type, data_lua):
    """A handler module answering reply_type with the Lua expression data_lua."""
    return ("local M = {}\n"
            "function M.handle(client, data, msg)\n"
            f"  return {json.dumps(reply_type)}, {data_lua}\n"
            "end\n"
            "return M\n")


# --------------------------------------------------------------------------
# JSON round trips on a raw WebSocket. /ws used to echo every text message;
# it now speaks the JSON protocol, so the tests that relied on the echo use a
# `ping` round trip instead: the pong carries request_id = the ping's
# message_id and echoes data.ts, and the ping handler ignores other data
# fields, so data.pad can size a message exactly or carry any Unicode text.
# Where a test checked the bytes of a message themselves, RoomEcho sends the
# same bytes as a room_message whose content another member gets back byte
# for byte.


def _dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def ping_json(mid, ts=None, pad=None, size=None):
    """UTF-8 bytes of a ping request. mid: its message_id (None: no such
    field); ts: data.ts, echoed by the pong; pad: a string put unescaped in
    data.pad; size: fill data.pad with "x" so the message is exactly size
    bytes."""
    obj = {"message_type": "ping"}
    if mid is not None:
        obj["message_id"] = mid
    data = {}
    if ts is not None:
        data["ts"] = ts
    if pad is not None or size is not None:
        data["pad"] = pad or ""
    obj["data"] = data
    b = _dumps(obj)
    if size is not None:
        fill = size - len(b)
        assert fill >= 0, f"a ping cannot be {size} bytes (at least {len(b)})"
        data["pad"] = (pad or "") + "x" * fill
        b = _dumps(obj)
        assert len(b) == size, (len(b), size)
    return b


def check_pong(payload, mid, ts=None):
    """payload (bytes or str): one server text message. It must be the pong
    answering ping mid: request_id = mid (no request_id when mid is 0 or
    None), data.ts = ts (null when the ping had none), integer server_ts
    and rtt. Returns the Msg."""
    text = bytes(payload).decode("utf-8") if isinstance(payload, (bytes, bytearray, memoryview)) \
        else payload
    try:
        obj = json.loads(text)
    except ValueError:
        raise AssertionError(f"want the pong to {mid}, got non-JSON text {text[:300]!r}")
    assert isinstance(obj, dict), f"want the pong to {mid}, got {text[:300]!r}"
    m = Msg(obj)
    m.raw = text
    assert m.get("message_type") == "pong", f"want the pong to {mid}, got {text[:300]}"
    check_envelope(m, request_id=mid if mid else None)
    if not mid:
        assert "request_id" not in m, f"pong to a ping without message_id has a request_id: {text}"
    d = m["data"]
    assert isinstance(d, dict), f"pong data: {text}"
    assert d.get("ts") == ts and "ts" in d and type(d["ts"]) is type(ts), \
        f"pong data.ts {d.get('ts')!r}, want {ts!r}: {text}"
    assert is_int(d.get("server_ts")), f"pong data.server_ts: {text}"
    assert is_int(d.get("rtt")), f"pong data.rtt: {text}"
    return m


def recv_pong(ws, mid, ts=None, timeout=3.0):
    """The next data frame on RawWS ws must be the pong answering ping mid
    (WebSocket pings and pongs in between are skipped)."""
    f = ws.recv_data(timeout)
    assert f.opcode == OP_TEXT and f.fin, f"want the pong to {mid}, got {f}"
    return check_pong(f.payload, mid, ts)


def ping_roundtrip(ws, mid, ts=_AUTO, pad=None, size=None, timeout=3.0):
    """Sends ping mid on RawWS ws (ts: default a fresh now_ms()) and
    returns its pong, which must be the next data frame."""
    if ts is _AUTO:
        ts = now_ms()
    assert ws.send_text(ping_json(mid, ts=ts, pad=pad, size=size)), "send failed"
    return recv_pong(ws, mid, ts, timeout)


def ping_latency(port, mid=1, timeout=3.0):
    """Seconds for a fresh connection: handshake, ping, pong."""
    t0 = time.monotonic()
    with RawWS.connect(port, timeout=timeout) as ws:
        ping_roundtrip(ws, mid, timeout=timeout)
        dt = time.monotonic() - t0
        ws.send_close(1000)
    return dt


class RoomEcho:
    """Two members of a fresh room: what .sender sends as a room_message
    reaches .receiver with data.content byte for byte. It proves that a
    message's bytes arrived intact, as the old echo did."""

    def __init__(self, port, room=None):
        self.room = room or "echo-" + os.urandom(6).hex()
        self.receiver = Hub(port, name="receiver")
        self.sender = None
        try:
            self.receiver.call_ok("join_room", {"room_id": self.room}, "room_joined")
            self.sender = Hub(port, name="sender")
            self.sender.call_ok("join_room", {"room_id": self.room}, "room_joined")
            self.receiver.expect_type("member_joined")
        except BaseException:
            self.close()
            raise

    def message(self, mid, text="", size=None):
        """(bytes of a room_message request whose content is the JSON string
        text, unescaped, padded with "x" to exactly size bytes if size;
        the raw JSON text of that content)."""
        def build(t):
            content = json.dumps(t, ensure_ascii=False)
            head = {"message_type": "room_message", "message_id": mid}
            raw = (_dumps(head)[:-1] + b',"data":{"room_id":' + _dumps(self.room)
                   + b',"content":' + content.encode("utf-8") + b"}}")
            return raw, content
        raw, content = build(text)
        if size is not None:
            fill = size - len(raw)
            assert fill >= 0, f"a room_message cannot be {size} bytes (at least {len(raw)})"
            raw, content = build(text + "x" * fill)
            assert len(raw) == size, (len(raw), size)
        return raw, content

    def check(self, mid, content, timeout=5.0):
        """The sender gets its ack; the receiver gets the room_message with
        data.content exactly content (raw JSON text)."""
        ack = self.sender.reply(mid, timeout)
        check_envelope(ack, request_id=mid)
        assert ack["message_type"] == "ack", f"room_message {mid} answered with {ack.raw[:300]}"
        m = self.receiver.expect_type("room_message", timeout)
        got = raw_data_field(m.raw, "content")
        assert got == content, (f"content changed on the way: {len(got)} chars "
                                f"{got[:80]!r}... vs {len(content)} chars {content[:80]!r}...")
        return m

    def close(self):
        for h in (self.sender, self.receiver):
            if h is not None:
                h.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
