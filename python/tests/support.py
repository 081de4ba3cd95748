"""Test support: the package from this source tree, real ha-node processes,
and waiting with deadlines (never sleeps as synchronisation).

ha-node is looked for at $HA_NODE_BIN or $HA_NODE, else
<repo>/target/release/ha-node.
If it (or libconfd_ha.so) is missing the tests fail loudly: `make check`
builds both before running them.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Callable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_DIR)
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

import confd_ha  # noqa: E402
from confd_ha import _lib  # noqa: E402

TOKEN = "python-tests-token"
READY_TIMEOUT = 30.0
EVENT_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def ha_node_bin() -> str:
    return (
        os.environ.get("HA_NODE_BIN")
        or os.environ.get("HA_NODE")
        or os.path.join(REPO, "target", "release", "ha-node")
    )


def require_prerequisites() -> None:
    """Raises (fails the calling test class) when ha-node or the library is missing."""
    binary = ha_node_bin()
    if not os.access(binary, os.X_OK):
        raise RuntimeError(
            "ha-node not found at %s: build it (`make` or `cargo build --release -p ha-node`) "
            "or set HA_NODE_BIN" % binary
        )
    err = confd_ha.library_error()
    if err is not None:
        raise RuntimeError("libconfd_ha could not be loaded: %s" % err)


def skip_unless_library_has(*names: str):
    """Skips a test only when the library IS loaded and lacks these functions
    (APIs not landed yet); a missing library still fails loudly."""
    if confd_ha.library_error() is not None:
        return lambda f: f
    missing = [n for n in names if not _lib.has(n)]
    return unittest.skipUnless(
        not missing,
        "libconfd_ha (%s) lacks %s: that API has not landed yet"
        % (_lib.library().path, ", ".join(missing)),
    )


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Polls ``pred`` until it returns a true value (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # keep polling; report the last failure
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                "timed out after %.0f s waiting for %s%s"
                % (timeout, what, " (last error: %r)" % last_exc if last_exc else "")
            )
        time.sleep(interval)  # polling interval, not synchronisation


def free_port(*hosts: str) -> int:
    """A TCP port currently free on every one of ``hosts``."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(200):
        s = socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET, socket.SOCK_STREAM)
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts[1:]:
            fam = socket.AF_INET6 if ":" in h else socket.AF_INET
            t = socket.socket(fam, socket.SOCK_STREAM)
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no free port on %s" % (hosts,))


def ipv6_loopback_available() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


class Node:
    """One ha-node process on loopback."""

    def __init__(
        self,
        name: str,
        ha_ip: str,
        ha_port: int,
        workdir: str,
        ipc_host: str = "127.0.0.1",
        unix: bool = True,
        tick: str = "200ms",
    ) -> None:
        self.name = name
        self.ha_ip = ha_ip
        self.ha_port = ha_port
        self.ipc_host = ipc_host
        self.ipc_port = free_port(ipc_host)
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.ipc_path = os.path.join(self.dir, "ipc.sock") if unix else None
        self.tick = tick
        self.log_path = os.path.join(self.dir, "ha-node.log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def ipc_family(self) -> int:
        return socket.AF_INET6 if ":" in self.ipc_host else socket.AF_INET

    def argv(self) -> List[str]:
        host = "[%s]" % self.ipc_host if ":" in self.ipc_host else self.ipc_host
        a = [
            ha_node_bin(),
            "--ipc-addr", "%s:%d" % (host, self.ipc_port),
            "--ha-addr", "%s:%d" % (self.ha_ip, self.ha_port),
            "--data-dir", os.path.join(self.dir, "data"),
            "--tick-timeout", self.tick,
        ]
        if self.ipc_path:
            a += ["--ipc-path", self.ipc_path]
        return a

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                "ha-node %s exited with %s before it was ready; its log:\n%s"
                % (self.name, self.proc.returncode, self.log_tail())
            )
        s = socket.socket(self.ipc_family, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((self.ipc_host, self.ipc_port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._accepts():
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    "ha-node %s not accepting on %s:%d after %.0f s; its log:\n%s"
                    % (self.name, self.ipc_host, self.ipc_port, READY_TIMEOUT, self.log_tail())
                )
            time.sleep(0.02)
        if self.ipc_path:
            wait_for(lambda: os.path.exists(self.ipc_path), READY_TIMEOUT, "the Unix IPC socket")

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p is not None:
            p.wait()
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    # ---- clients ---------------------------------------------------------

    def tcp_socket(self) -> socket.socket:
        return socket.socket(self.ipc_family, socket.SOCK_STREAM)

    def ha(self, token: str = TOKEN) -> socket.socket:
        """An HA control socket connected over TCP with ``token``."""
        from confd_ha import ha

        s = self.tcp_socket()
        try:
            ha.connect(s, token, ip=self.ipc_host, port=self.ipc_port)
        except BaseException:
            s.close()
            raise
        return s

    def events(self, mask: int) -> socket.socket:
        from confd_ha import events

        s = self.tcp_socket()
        try:
            events.notifications_connect(s, mask, ip=self.ipc_host, port=self.ipc_port)
        except BaseException:
            s.close()
            raise
        return s


class Cluster:
    """Starts nodes for a test (class); registers their stop (and the temp
    dir's removal) as cleanups before anything can fail."""

    def __init__(self, add_cleanup: Callable, prefix: str) -> None:
        """``add_cleanup``: ``cls.addClassCleanup`` or ``self.addCleanup``."""
        self.add_cleanup = add_cleanup
        self.dir = tempfile.mkdtemp(prefix="confd_ha-py-%s-" % prefix)
        add_cleanup(shutil.rmtree, self.dir, True)
        self.nodes: List[Node] = []

    def add(self, name: str, ha_ip: str, ha_port: int, **kw) -> Node:
        n = Node(name, ha_ip, ha_port, self.dir, **kw)
        self.add_cleanup(n.stop)
        n.start()
        self.nodes.append(n)
        return n

    def wait_ready(self) -> None:
        for n in self.nodes:
            n.wait_ready()


def read_event(sock: socket.socket, timeout: float = EVENT_TIMEOUT) -> dict:
    """The next notification, failing (not hanging) if none comes in time."""
    from confd_ha import events

    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        raise AssertionError("no notification within %.0f s" % timeout)
    n = events.read_notification(sock)
    # Every dict carries NSO's '_notif' entry; the tests compare the rest.
    notif = n.pop("_notif")
    if not isinstance(notif, events.Notification) or notif.type != n["type"]:
        raise AssertionError("bad '_notif' entry %r in %r" % (notif, n))
    return n


def read_ha_event(sock: socket.socket, ha_type: int, timeout: float = EVENT_TIMEOUT) -> dict:
    """Reads notifications until an HA_INFO of ``ha_type``; returns its 'hnot'."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no HA_INFO type %d within %.0f s; saw %r" % (ha_type, timeout, seen))
        n = read_event(sock, left)
        h = n.get("hnot")
        if h is not None and h["type"] == ha_type:
            return h
        seen.append(n)
