"""pytest fixtures for the Python client tests: a real emad daemon per test.

Environment:
    EMAD_BIN       the daemon binary (default: <top>/emad, the in-tree build)
    EMAD_LIBRARY   libemad.so for the emad package (default: its own search)
    PYTHONPATH     must reach client/python (tests/test_python.sh sets it)

Each test that asks for ``daemon`` gets its own emad on 127.0.0.1 with a
free port and a temporary --state-dir; it is killed at teardown. Every test
is bounded in time: a hung test dumps its stack and exits the run after
EMAD_TEST_TIMEOUT seconds (default 300). EMAD_TEST_TIMEOUT_SCALE (default 1)
multiplies that and every other time bound of the tests (slow machines,
sanitizers): use ``scaled(seconds)``.
"""

import faulthandler
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "client", "python"))  # harmless if PYTHONPATH has it

import emad  # noqa: E402

EMAD_BIN = os.environ.get("EMAD_BIN") or os.path.join(TOP, "emad")
TIMEOUT_SCALE = float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE", "1") or 1)
TEST_TIMEOUT = float(os.environ.get("EMAD_TEST_TIMEOUT", "300")) * TIMEOUT_SCALE


def scaled(seconds):
    """A time bound of the tests, times EMAD_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A running emad: ``url``, ``port``, ``state_dir``, ``log`` path, ``proc``."""

    def __init__(self, tmp_path, extra_args=()):
        os.makedirs(str(tmp_path), exist_ok=True)
        self.state_dir = str(tmp_path / "state")
        self.log = str(tmp_path / "emad.log")
        self.extra_args = list(extra_args)
        self.proc = None
        for _ in range(3):  # another process may take the port between probe and bind
            self.port = free_port()
            self.url = "tcp://127.0.0.1:%d" % self.port
            if self._start():
                return
        raise RuntimeError("emad did not start; log:\n" + self.log_tail())

    def _start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [EMAD_BIN, "--listen", self.url, "--state-dir", self.state_dir,
                 "--log-level", "debug"] + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if self._wait_listening(scaled(60.0)):
            return True
        self.stop()
        return False

    def kill(self):
        """SIGKILL: no final snapshot."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(scaled(60))
            self.proc = None

    def restart(self):
        """Start again on the same port and state directory (after stop() or kill())."""
        deadline = time.monotonic() + scaled(30)
        while not self._start():  # the port may linger for a moment
            if time.monotonic() > deadline:
                raise RuntimeError("emad did not restart; log:\n" + self.log_tail())
            time.sleep(0.2)

    def _wait_listening(self, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.01)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL after a minute (scaled); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(60))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(scaled(60))
        status, self.proc = self.proc.returncode, None
        return status


@pytest.fixture(autouse=True)
def _time_limit():
    """Abort the whole run with stack traces if one test hangs."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def daemon(tmp_path):
    """A private emad daemon for one test."""
    if not os.access(EMAD_BIN, os.X_OK):
        pytest.fail("emad binary %s not found (set EMAD_BIN)" % EMAD_BIN)
    d = Daemon(tmp_path)
    yield d
    alive = d.alive()
    d.stop()
    assert alive, "emad died during the test; log:\n" + d.log_tail()


@pytest.fixture
def client(daemon):
    """An emad.Client connected to the test's daemon (closed at teardown)."""
    c = emad.Client(daemon.url, timeout=scaled(300), connect_timeout=scaled(60))
    yield c
    c.close()


def lib_has(name):
    """True if the loaded libemad exports emad_<name>."""
    from emad._lib import lib

    return lib().has(name)


def needs(*names):
    """Skip marker for tests of libemad functions that may not be in the loaded library."""
    missing = [n for n in names if not lib_has(n)]
    return pytest.mark.skipif(bool(missing), reason="libemad lacks emad_%s" % ", emad_".join(
        missing))
