"""The ``_ncs`` shim and the NSO names of confd_ha (Value, C_*, ERR_*, the
error attributes, EOF, PORT/ADDR, NotificationsData), and an NSO-style HA
script run unchanged against real ha-node processes."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import unittest

import support
import confd_ha
from confd_ha import error, events
from confd_ha.value import (
    C_BINARY, C_BOOL, C_BUF, C_DOUBLE, C_INT32, C_INT64, C_IPV4, C_IPV6, C_NOEXISTS, C_UINT16,
    C_XMLTAG, Value,
)
from confd_ha import _types


def run_python(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=support.PYTHON_DIR)
    for k in ("NCS_IPC_PORT", "NCS_IPC_ADDR", "CONFD_IPC_PORT", "CONFD_IPC_ADDR"):
        env.pop(k, None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


class ValueTest(unittest.TestCase):
    def test_inferred_types(self):
        self.assertEqual(Value("n1").confd_type(), C_BUF)
        self.assertEqual(Value(7).confd_type(), C_INT32)
        self.assertEqual(Value(1 << 40).confd_type(), C_INT64)
        self.assertEqual(Value(True).confd_type(), C_BOOL)
        self.assertEqual(Value(1.5).confd_type(), C_DOUBLE)
        self.assertEqual(Value(ipaddress.IPv4Address("10.0.0.1")).confd_type(), C_IPV4)
        self.assertEqual(Value(None).confd_type(), C_NOEXISTS)
        self.assertEqual(Value(None, C_NOEXISTS).confd_type_str(), "C_NOEXISTS")

    def test_explicit_types_are_checked(self):
        self.assertEqual(Value(7, C_UINT16).as_pyval(), 7)
        with self.assertRaises(ValueError):
            Value(70000, C_UINT16)
        with self.assertRaises(TypeError):
            Value("x", C_INT32)
        with self.assertRaises(ValueError):
            Value("not-an-ip", C_IPV6)
        with self.assertRaisesRegex(TypeError, "C_XMLTAG is not supported"):
            Value(1, C_XMLTAG)

    def test_text_equality_and_hash(self):
        v = Value("n1")
        self.assertEqual(str(v), "n1")
        self.assertEqual(v, "n1")
        self.assertEqual("n1", v)
        self.assertNotEqual(v, "n2")
        self.assertEqual(v, Value("n1", C_BUF))
        self.assertNotEqual(v, Value(b"n1", C_BINARY))
        self.assertEqual(len({v, Value("n1"), "n1"}), 1)
        self.assertEqual(str(Value("::1", C_IPV6)), "::1")
        self.assertEqual(repr(Value(3)), "Value(3, C_INT32)")

    def test_round_trip_through_confd_value_t(self):
        for v in (Value("n1"), Value(b"\x00\xff", C_BINARY), Value(-5), Value(7, C_UINT16),
                  Value(True), Value(2.5), Value("10.1.2.3", C_IPV4), Value("fd00::1", C_IPV6),
                  Value(None, C_NOEXISTS)):
            c, keep = _types.make_value(v)
            self.assertEqual(_types.value_from_c(c), v)
            del keep


class NamesTest(unittest.TestCase):
    def test_top_level_numbers(self):
        self.assertEqual(confd_ha.ERR_HA_BADTOKEN, 28)
        self.assertEqual(confd_ha.ERR_EOF, error.ERR_EOF)
        self.assertEqual(confd_ha.C_NOEXISTS, 1)
        self.assertIs(confd_ha.Value, Value)
        self.assertEqual((confd_ha.OK, confd_ha.ERR, confd_ha.EOF), (0, -1, -2))

    def test_error_attributes_and_text(self):
        e = error.Error(28, "Remote HA node has bad credentials", "token mismatch")
        self.assertEqual((e.confd_errno, e.confd_strerror, e.confd_lasterr),
                         (28, "Remote HA node has bad credentials", "token mismatch"))
        self.assertEqual(str(e), "Remote HA node has bad credentials (28): token mismatch")
        # The 2-tuple error of a real daemon leaves lasterr empty.
        self.assertEqual(str(error.Error(25, "HA connect failed")), "HA connect failed (25): ")

    def test_eof_is_an_error_class(self):
        try:
            raise error.EOF(function="confd_read_notification")
        except error.EOF as e:
            self.assertIsInstance(e, error.Error)
            self.assertEqual(e.confd_errno, error.ERR_EOF)

    def test_notifications_data_as_nso_examples_build_it(self):
        d = events.NotificationsData(1000, 0, None, Value(None, C_NOEXISTS), Value(None, C_NOEXISTS))
        self.assertEqual(d.heartbeat_interval, 1000)
        self.assertEqual(d._to_c().start_time.type, C_NOEXISTS)
        events.NotificationsData(heartbeat_interval=1000)
        with self.assertRaises(NotImplementedError):
            events.NotificationsData(0, 0, "NETCONF", Value(5), None)

    def test_ports_from_the_environment(self):
        code = ("import confd_ha, _ncs; print(confd_ha.PORT, confd_ha.ADDR, _ncs.PORT, _ncs.ADDR)")
        r = run_python(code, {})
        self.assertEqual(r.stdout.split(), ["4565", "127.0.0.1", "4569", "127.0.0.1"], r.stderr)
        r = run_python(code, {"NCS_IPC_PORT": "5000", "NCS_IPC_ADDR": "10.0.0.9",
                              "CONFD_IPC_PORT": "6000", "CONFD_IPC_ADDR": "10.0.0.8"})
        self.assertEqual(r.stdout.split(), ["6000", "10.0.0.8", "5000", "10.0.0.9"], r.stderr)

    def test_shim_module_forms(self):
        code = (
            "import _ncs, _ncs.ha, _ncs.events, _ncs.error\n"
            "from _ncs import ha, events\n"
            "import confd_ha\n"
            "assert ha is confd_ha.ha and events is confd_ha.events and _ncs.ha is ha\n"
            "assert _ncs.error.Error is confd_ha.error.Error\n"
            "assert issubclass(_ncs.error.EOF, _ncs.error.Error)\n"
            "assert _ncs.EOF == -2 and _ncs.ERR_HA_NOTICK == 31 and _ncs.C_BUF == 5\n"
            "assert _ncs.Value('x') == 'x'\n"
            "print('ok')\n"
        )
        r = run_python(code, {})
        self.assertEqual(r.stdout.strip(), "ok", r.stderr)


class NsoScriptTest(unittest.TestCase):
    """tests/nso_style_ha.py, written for NSO's _ncs, against two ha-nodes."""

    def test_runs_unchanged(self):
        support.require_prerequisites()
        port = support.free_port("127.0.0.1", "127.0.0.2")
        c = support.Cluster(self.addCleanup, "nso")
        n1 = c.add("n1", "127.0.0.1", port, unix=False)
        n2 = c.add("n2", "127.0.0.2", port, unix=False)
        c.wait_ready()
        env = dict(os.environ, PYTHONPATH=support.PYTHON_DIR,
                   NCS_IPC_PORT=str(n1.ipc_port), NCS_IPC_ADDR="127.0.0.1")
        script = os.path.join(support.HERE, "nso_style_ha.py")
        r = subprocess.run([sys.executable, script, support.TOKEN, str(n2.ipc_port)], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout.splitlines(), [
            "event: IS_MASTER True",
            "berelay: 17 operation in wrong state | berelay: node is not a secondary",
            "berelay is ERR_BADSTATE: True",
            "event: SLAVE_ARRIVED n2 C_BUF 127.0.0.2",
            "status: (3, [{'nodeid': 'n2', 'address': '127.0.0.2'}])",
            "EOF: 45",
        ])


if __name__ == "__main__":
    unittest.main()
