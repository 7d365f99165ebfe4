"""Fixtures for the gohub integration tests.

GOHUB_BIN (default build/release/gohub) is the daemon under test;
GOHUB_ASAN_BIN, if set, is an ASan+UBSan build used by test_smoke.py."""

import os
import shutil
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from gohub_helpers import (  # noqa: E402
    BUSES, BusServer, Daemon, asan_bin, release_bin, running_daemon,
)

TEST_TIME_LIMIT = 60  # seconds; no test may take longer


@pytest.fixture(autouse=True)
def _time_limit():
    """Fails (instead of hanging) any test that runs over the limit."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIME_LIMIT} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def gohub_bin():
    p = release_bin()
    if not os.path.isfile(p):
        pytest.fail(f"GOHUB_BIN {p} does not exist (build it with make)")
    return p


@pytest.fixture(scope="session")
def gohub_asan_bin():
    return asan_bin()


@pytest.fixture
def start_daemon(gohub_bin, tmp_path):
    """Factory: start_daemon(env={...}, args=[...], binary=None, asan=False)
    starts a daemon for this test. At teardown each one still running gets
    SIGTERM and must exit 0 within 15 s (unless the test set
    d.exit_checked), with no sanitizer report for ASan builds."""
    started = []

    def _start(env=None, args=None, binary=None, asan=False):
        d = Daemon(binary or gohub_bin, tmp_path, env=env, args=args, asan=asan)
        started.append(d)
        return d.start()

    yield _start
    problems = []
    for d in started:
        problems += d.finish_and_check()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def daemon(gohub_bin, tmp_path_factory):
    """A daemon with the test defaults only, shared by a module."""
    with running_daemon(gohub_bin, tmp_path_factory.mktemp("gohub")) as d:
        yield d


@pytest.fixture
def hubs():
    """Factory: hubs(port, n=1) connects n JSON protocol clients (a list
    when n > 1); all are closed at teardown."""
    from gohub_helpers import Hub
    made = []

    def _connect(port, n=1, name=""):
        out = []
        for i in range(n):
            h = Hub(port, name=f"{name}{i}" if n > 1 else (name or f"c{len(made)}"))
            made.append(h)
            out.append(h)
        return out if n > 1 else out[0]

    yield _connect
    for h in made:
        h.close()


@pytest.fixture
def lua_copy(tmp_path):
    """A copy of the repo's lua/ directory in tmp_path (a Path)."""
    from gohub_helpers import copy_lua
    return copy_lua(tmp_path / "lua")


@pytest.fixture(params=BUSES)
def bus(request, tmp_path):
    """A real redis-server, then a real nats-server, on a free loopback
    port (stopped by PID at teardown)."""
    if shutil.which(f"{request.param}-server") is None:
        pytest.fail(f"{request.param}-server is not installed (scripts/setup.sh installs it)")
    b = BusServer(request.param, tmp_path).start()
    yield b
    b.kill()
