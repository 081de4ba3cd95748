"""Unit tests that need neither ha-node nor the library: struct layouts,
constants, address and value conversion, the exception class, how the
library is found, endpoint discovery, role derivation."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
import textwrap
import unittest
from unittest import mock

import support  # noqa: F401  (puts the source tree first on sys.path)
from confd_ha import _lib, _types, availability_group as ag, error, events, ha
from confd_ha.error import Error


class LayoutTest(unittest.TestCase):
    """The ctypes twins must match ConfD's layouts (spec section C, x86-64)."""

    def test_sizes(self):
        self.assertEqual(ctypes.sizeof(_types.ConfdValue), 40)
        self.assertEqual(ctypes.sizeof(_types.HaNode), 320)
        self.assertEqual(ctypes.sizeof(_types.HaStatus), 81616)
        self.assertEqual(ctypes.sizeof(_types.HaNotification), 328)
        self.assertEqual(ctypes.sizeof(_types.NotificationsData), 112)

    def test_offsets(self):
        V, N, S = _types.ConfdValue, _types.HaNode, _types.HaStatus
        self.assertEqual(V.type.offset, 0)
        self.assertEqual(V.val.offset, 8)
        # C_BUF: size at 8, ptr at 16 of the value
        self.assertEqual(V.val.offset + _types.ConfdBuf.size.offset, 8)
        self.assertEqual(V.val.offset + _types.ConfdBuf.ptr.offset, 16)
        self.assertEqual(N.nodeid.offset, 0)
        self.assertEqual(N.af.offset, 40)
        self.assertEqual(N.addr.offset, 48)
        self.assertEqual(N.buf.offset, 64)
        self.assertEqual(N.addr_buf.offset, 192)
        self.assertEqual(S.state.offset, 0)
        self.assertEqual(S.nodes.offset, 8)
        self.assertEqual(S.num_nodes.offset, 81608)
        self.assertEqual(_types.HaNotification.data.offset, 8)
        self.assertEqual(_types.NotificationHead.hnot.offset, 8)
        D = _types.NotificationsData
        self.assertEqual(
            [D.heartbeat_interval.offset, D.health_check_interval.offset, D.stream_name.offset,
             D.start_time.offset, D.stop_time.offset, D.xpath_filter.offset, D.usid.offset,
             D.verbosity.offset],
            [0, 4, 8, 16, 56, 96, 104, 108],
        )
        self.assertEqual(ctypes.alignment(_types.NotificationStorage), 8)

    def test_cha_layouts(self):
        P, S, E = _types.ChaPeer, _types.ChaNodeState, _types.ChaEvent
        self.assertEqual(ctypes.sizeof(P), 264)
        self.assertEqual((P.address.offset, P.last_tick_ms.offset), (128, 256))
        self.assertEqual(ctypes.sizeof(S), 67992)
        self.assertEqual(
            [S.has_primary.offset, S.node_id.offset, S.primary.offset, S.num_secondaries.offset,
             S.secondaries.offset, S.seq.offset, S.txid.offset],
            [4, 8, 136, 400, 408, 67728, 67736],
        )
        self.assertEqual(ctypes.sizeof(E), 296)
        self.assertEqual((E.ha_info_value.offset, E.ha_info_node.offset), (16, 24))


class IntRangeTest(unittest.TestCase):
    """Every integer value type, and enum values, are range-checked: a value
    that does not fit raises instead of being truncated by the C field."""

    def test_every_int_vtype(self):
        from confd_ha import data

        for vtype, (lo, hi) in data._INT_RANGES.items():
            for ok in (lo, hi, 0 if lo <= 0 else lo):
                val, _ = data._to_c(ok, vtype)
                self.assertEqual(val.type, vtype)
            for bad in (lo - 1, hi + 1, 2**200):
                with self.assertRaises(ValueError, msg="%d as %d" % (bad, vtype)):
                    data._to_c(bad, vtype)
        with self.assertRaises(ValueError):
            data._to_c(2**40, data.C_ENUM_VALUE)
        with self.assertRaises(TypeError):
            data._to_c("3", data.C_ENUM_VALUE)
        with self.assertRaises(TypeError):
            data._to_c(True, data.C_INT32)


class ConstantsTest(unittest.TestCase):
    def test_states(self):
        self.assertEqual(
            (ha.STATE_NONE, ha.STATE_SECONDARY, ha.STATE_PRIMARY, ha.STATE_SECONDARY_RELAY),
            (1, 2, 3, 4),
        )
        self.assertEqual((ha.STATE_SLAVE, ha.STATE_MASTER, ha.STATE_SLAVE_RELAY), (2, 3, 4))

    def test_deprecated_aliases(self):
        self.assertIs(ha.bemaster, ha.beprimary)
        self.assertIs(ha.beslave, ha.besecondary)
        self.assertIs(ha.slave_dead, ha.secondary_dead)

    def test_notification_constants(self):
        self.assertEqual(events.NOTIF_HA_INFO, 64)
        self.assertEqual(events.NOTIF_HA_INFO_SYNC, 1048576)
        self.assertEqual(events.NOTIF_HEARTBEAT, 8192)
        self.assertEqual(events.NOTIF_HEALTH_CHECK, 262144)
        self.assertEqual(events.NOTIF_COMPACTION, 1073741824)
        self.assertEqual(events.NOTIF_SYSTEM_GOING_DOWN, 2147483648)
        self.assertEqual(
            [events.HA_INFO_NOPRIMARY, events.HA_INFO_SECONDARY_DIED,
             events.HA_INFO_SECONDARY_ARRIVED, events.HA_INFO_SECONDARY_INITIALIZED,
             events.HA_INFO_IS_PRIMARY, events.HA_INFO_IS_NONE,
             events.HA_INFO_BESECONDARY_RESULT],
            list(range(1, 8)),
        )
        self.assertEqual(events.HA_INFO_NOMASTER, 1)
        self.assertEqual(events.HA_INFO_IS_MASTER, 5)
        self.assertEqual(events.HA_INFO_BESLAVE_RESULT, 7)

    def test_error_numbers(self):
        # every number of spec B.4, 1..73, has exactly one ERR_ name
        names = {k: v for k, v in vars(error).items() if k.startswith("ERR_") and isinstance(v, int)}
        self.assertEqual(sorted(names.values()), list(range(1, 74)))
        self.assertEqual(error.ERR_BADSTATE, 17)
        self.assertEqual(error.ERR_OS, 24)
        self.assertEqual(error.ERR_HA_CONNECT, 25)
        self.assertEqual(error.ERR_HA_CLOSED, 26)
        self.assertEqual(error.ERR_HA_BADTOKEN, 28)
        self.assertEqual(error.ERR_HA_BADNAME, 29)
        self.assertEqual(error.ERR_HA_BIND, 30)
        self.assertEqual(error.ERR_HA_NOTICK, 31)
        self.assertEqual(error.ERR_LIB_NOT_INITIALIZED, 34)
        self.assertEqual(error.ERR_EOF, 45)
        self.assertEqual(error.ERR_HA_BADVSN, 52)
        self.assertEqual(error.ERR_CONNECTION_REFUSED, 56)
        self.assertEqual(error.ERR_HA_BADCONFIG, 69)
        self.assertEqual(error.ERR_CHECKSUM_MISMATCH, 73)
        import confd_ha

        self.assertEqual((error.OK, error.ERR, confd_ha.EOF), (0, -1, -2))
        self.assertTrue(issubclass(error.EOF, Error))

    def test_top_level(self):
        import confd_ha

        self.assertIs(confd_ha.Error, Error)
        self.assertEqual(confd_ha.CONFD_PORT, 4565)
        self.assertEqual(confd_ha.NCS_PORT, 4569)


class ErrorClassTest(unittest.TestCase):
    def test_attributes_and_text(self):
        e = Error(28, "Remote HA node has bad credentials", "token mismatch", "confd_ha_besecondary")
        self.assertEqual(e.confd_errno, 28)
        self.assertEqual(e.strerror, "Remote HA node has bad credentials")
        self.assertEqual(e.lasterr, "token mismatch")
        self.assertEqual(e.errno_name, "ERR_HA_BADTOKEN")
        # NSO's attribute names and text.
        self.assertEqual(e.confd_strerror, "Remote HA node has bad credentials")
        self.assertEqual(e.confd_lasterr, "token mismatch")
        self.assertEqual(str(e), "Remote HA node has bad credentials (28): token mismatch")
        self.assertIn("confd_ha_besecondary", repr(e))
        self.assertIn("ERR_HA_BADTOKEN", repr(e))
        self.assertIsInstance(e, Exception)

    def test_defaults(self):
        e = Error(9999)
        self.assertEqual(e.strerror, "Unknown error")
        self.assertEqual(e.lasterr, "")
        self.assertIsNone(e.errno_name)
        self.assertEqual(str(e), "Unknown error (9999): ")


class ConversionTest(unittest.TestCase):
    def test_str_node_id_is_c_buf(self):
        v, keep = _types.make_value("n1")
        self.assertEqual(v.type, _types.C_BUF)
        self.assertEqual(v.val.buf.size, 2)
        self.assertEqual(ctypes.string_at(v.val.buf.ptr, 2), b"n1")
        self.assertEqual(_types.value_to_str(v), "n1")
        del keep

    def test_bytes_and_unicode_node_ids(self):
        v, keep = _types.make_value(b"\xffraw")
        self.assertEqual(ctypes.string_at(v.val.buf.ptr, 4), b"\xffraw")
        self.assertEqual(_types.encode_text(_types.value_to_str(v)), b"\xffraw")
        v2, keep2 = _types.make_value("nöd")
        self.assertEqual(v2.val.buf.size, len("nöd".encode()))
        self.assertEqual(_types.value_to_str(v2), "nöd")

    def test_bad_node_id_type(self):
        with self.assertRaisesRegex(TypeError, "mynodeid must be str, bytes or Value, not int"):
            _types.make_value(7, "mynodeid")

    def test_parse_ip(self):
        self.assertEqual(_types.parse_ip("10.0.0.2"), (socket.AF_INET, bytes([10, 0, 0, 2])))
        fam, b = _types.parse_ip("::1")
        self.assertEqual((fam, b), (socket.AF_INET6, bytes(15) + b"\x01"))
        for bad in ("", "10.0.0", "host.example", "1.2.3.4.5", None, 17):
            with self.assertRaisesRegex(ValueError, r"^Invalid primary_ip address\.$"):
                _types.parse_ip(bad)

    def test_node_dict_and_address(self):
        n = _types.HaNode()
        keep = ctypes.create_string_buffer(b"n2")
        n.nodeid.type = _types.C_BUF
        n.nodeid.val.buf.size = 2
        n.nodeid.val.buf.ptr = ctypes.cast(keep, ctypes.c_void_p)
        n.af = socket.AF_INET
        n.addr.ip4[:] = [10, 0, 0, 2]
        self.assertEqual(_types.node_dict(n), {"nodeid": "n2", "af": 2, "ip4": "10.0.0.2"})
        n.af = socket.AF_INET6
        n.addr.ip6[:] = list(socket.inet_pton(socket.AF_INET6, "fe80::2"))
        self.assertEqual(_types.node_dict(n)["ip6"], "fe80::2")
        n.af = 0
        n.addr.str = None
        self.assertEqual(_types.node_dict(n), {"nodeid": "n2", "af": 0, "str": None})
        n.addr_buf = b"host-a"
        n.addr.str = ctypes.addressof(n) + _types.HaNode.addr_buf.offset
        self.assertEqual(_types.node_address(n), "host-a")

    def test_other_value_types(self):
        v = _types.ConfdValue()
        v.type = _types.C_INT32
        v.val.i32 = -5
        self.assertEqual(_types.value_to_str(v), "-5")
        v.type = _types.C_IPV4
        v.val.ip[:] = [1, 2, 3, 4]
        self.assertEqual(_types.value_to_str(v), "1.2.3.4")
        v.type = 99
        self.assertIn("type 99", _types.value_to_str(v))

    def test_sockaddr_in(self):
        buf, size = _types.sockaddr(socket.AF_INET, "127.0.0.1", 4565)
        self.assertEqual(size, 16)
        raw = buf.raw[:size]
        self.assertEqual(struct.unpack("=H", raw[:2])[0], socket.AF_INET)
        self.assertEqual(raw[2:4], b"\x11\xd5")
        self.assertEqual(raw[4:8], b"\x7f\x00\x00\x01")

    def test_sockaddr_in6(self):
        buf, size = _types.sockaddr(socket.AF_INET6, "::1", 4569)
        self.assertEqual(size, 28)
        raw = buf.raw[:size]
        self.assertEqual(struct.unpack("=H", raw[:2])[0], socket.AF_INET6)
        self.assertEqual(raw[2:4], b"\x11\xd9")
        self.assertEqual(raw[8:24], socket.inet_pton(socket.AF_INET6, "::1"))

    def test_sockaddr_un(self):
        buf, size = _types.sockaddr(socket.AF_UNIX, path="/tmp/x.sock")
        self.assertEqual(size, 2 + len("/tmp/x.sock") + 1)
        self.assertEqual(buf.raw[2:size], b"/tmp/x.sock\0")

    def test_sockaddr_errors(self):
        with self.assertRaisesRegex(ValueError, "needs ip and port"):
            _types.sockaddr(socket.AF_INET, None, 4565)
        with self.assertRaisesRegex(ValueError, "needs a path"):
            _types.sockaddr(socket.AF_UNIX)
        with self.assertRaisesRegex(ValueError, "out of range"):
            _types.sockaddr(socket.AF_INET, "127.0.0.1", 70000)
        with self.assertRaisesRegex(ValueError, "at most 107"):
            _types.sockaddr(socket.AF_UNIX, path="/" + "x" * 200)
        with self.assertRaisesRegex(ValueError, "unsupported socket family"):
            _types.sockaddr(12345, "1.2.3.4", 1)

    def test_signed_mask(self):
        self.assertEqual(_types.signed32(64), 64)
        self.assertEqual(_types.signed32(events.NOTIF_SYSTEM_GOING_DOWN), -(1 << 31))
        with self.assertRaises(ValueError):
            _types.signed32(1 << 33)

    def test_socket_checks(self):
        s = socket.socket()
        s.settimeout(1.0)
        with self.assertRaisesRegex(ValueError, "settimeout"):
            _types.require_blocking(s)
        s.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            _types.fileno(s)
        with self.assertRaises(TypeError):
            _types.fileno("not a socket")
        with self.assertRaisesRegex(ValueError, "NUL"):
            _types.c_string("a\0b", "token")


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != _lib.ENV_LIBRARY}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=support.PYTHON_DIR, env=full_env, capture_output=True, text=True, timeout=60,
    )


class LibraryFindingTest(unittest.TestCase):
    def test_env_var_is_the_only_candidate(self):
        with mock.patch.dict(os.environ, {_lib.ENV_LIBRARY: "/nonexistent/libconfd_ha.so"}):
            self.assertEqual(_lib.candidates(), [("$CONFD_HA_LIBRARY", "/nonexistent/libconfd_ha.so")])

    def test_source_tree_candidate(self):
        built = os.path.join(support.REPO, "target", "release", "libconfd_ha.so")
        with mock.patch.dict(os.environ):
            os.environ.pop(_lib.ENV_LIBRARY, None)
            paths = [p for _, p in _lib.candidates()]
        if os.path.exists(built):
            self.assertIn(built, paths)
        self.assertEqual(paths[-1], "libconfd_ha.so")

    def test_wrong_env_path_is_loud_but_import_works(self):
        r = _run_python(
            """
            import confd_ha, socket
            print("ERR", confd_ha.library_error())
            try:
                confd_ha.ha.benone(socket.socket())
            except confd_ha.LibraryError as e:
                print("RAISED", e)
            """,
            {_lib.ENV_LIBRARY: "/nonexistent/libconfd_ha.so"},
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ERR CONFD_HA_LIBRARY=/nonexistent/libconfd_ha.so: no such file", r.stdout)
        self.assertIn("RAISED CONFD_HA_LIBRARY=/nonexistent/libconfd_ha.so: no such file", r.stdout)

    def test_library_without_the_api_is_rejected(self):
        libc = "libc.so.6"
        import ctypes.util

        path = ctypes.util.find_library("c")
        if path is None or not os.path.isabs(path):
            # find_library gives a soname; resolve a real file for the env var
            for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"):
                if os.path.exists(os.path.join(d, libc)):
                    path = os.path.join(d, libc)
                    break
        if path is None or not os.path.exists(path):
            self.skipTest("no libc file to stand in for a wrong library")
        r = _run_python("import confd_ha; print('ERR', confd_ha.library_error())",
                        {_lib.ENV_LIBRARY: path})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("is not a usable libconfd_ha: it lacks", r.stdout)
        self.assertIn("confd_ha_connect", r.stdout)


class EndpointTest(unittest.TestCase):
    KEYS = ("NCS_IPC_PATH", "NCS_IPC_ADDR", "NCS_IPC_PORT", "CONFD_IPC_ADDR", "CONFD_IPC_PORT")

    def setUp(self):
        self.saved = {k: os.environ.pop(k) for k in self.KEYS if k in os.environ}

    def tearDown(self):
        for k in self.KEYS:
            os.environ.pop(k, None)
        os.environ.update(self.saved)

    def test_default_is_confd(self):
        ep = ag.local_endpoint()
        self.assertEqual((ep.family, ep.ip, ep.port, ep.path), (socket.AF_INET, "127.0.0.1", 4565, None))

    def test_ncs_ipc_path_wins(self):
        os.environ.update(NCS_IPC_PATH="/tmp/nso/nso-ipc", NCS_IPC_PORT="5000", CONFD_IPC_PORT="6000")
        ep = ag.local_endpoint()
        self.assertEqual((ep.family, ep.path), (socket.AF_UNIX, "/tmp/nso/nso-ipc"))

    def test_ncs_addr_port(self):
        os.environ.update(NCS_IPC_ADDR="::1", CONFD_IPC_PORT="6000")
        ep = ag.local_endpoint()
        self.assertEqual((ep.family, ep.ip, ep.port), (socket.AF_INET6, "::1", 4569))
        os.environ["NCS_IPC_PORT"] = "5000"
        self.assertEqual(ag.local_endpoint().port, 5000)

    def test_confd_port(self):
        os.environ["CONFD_IPC_PORT"] = "6000"
        ep = ag.local_endpoint()
        self.assertEqual((ep.ip, ep.port), ("127.0.0.1", 6000))

    def test_explicit_arguments_win(self):
        os.environ["NCS_IPC_PATH"] = "/tmp/nso/nso-ipc"
        self.assertEqual(ag.local_endpoint(port=7000).port, 7000)
        self.assertEqual(ag.local_endpoint(address="127.0.0.2").ip, "127.0.0.2")
        self.assertEqual(ag.local_endpoint(address="127.0.0.2").port, 4565)
        self.assertEqual(ag.local_endpoint(path="/x/y").path, "/x/y")
        with self.assertRaises(ValueError):
            ag.local_endpoint(port="http")


class RoleTest(unittest.TestCase):
    def test_roles_from_events(self):
        R = ag.NodeRole
        cases = [
            ({"type": events.HA_INFO_IS_PRIMARY}, R.PRIMARY),
            ({"type": events.HA_INFO_IS_NONE}, R.NONE),
            ({"type": events.HA_INFO_NOPRIMARY, "noprimary": 26}, R.NONE),
            ({"type": events.HA_INFO_SECONDARY_INITIALIZED, "cdb_initialized_by_copy": 1}, R.SECONDARY),
            ({"type": events.HA_INFO_BESECONDARY_RESULT, "besecondary_result": 0}, R.SECONDARY),
            ({"type": events.HA_INFO_BESECONDARY_RESULT, "besecondary_result": 28}, R.NONE),
            ({"type": events.HA_INFO_SECONDARY_ARRIVED}, None),
            ({"type": events.HA_INFO_SECONDARY_DIED}, None),
        ]
        for hnot, role in cases:
            self.assertEqual(ag.role_after(hnot), role, hnot)

    def test_enums(self):
        self.assertEqual(ag.NodeRole.PRIMARY.value, "primary")
        self.assertEqual(str(ag.NodeRole.PRIMARY), "primary")
        self.assertEqual(f"{ag.NodeRole.RELAY}", "relay")
        self.assertEqual(ag.NodeRole.NONE, "none")
        self.assertEqual(ag.NodeRole("secondary"), ag.NodeRole.SECONDARY)
        self.assertEqual(ag.NodeRole.from_state(4), ag.NodeRole.RELAY)
        self.assertEqual(ag.EventId("node_role_changed"), ag.EventId.NODE_ROLE_CHANGED)

    def test_subscribe_argument_errors(self):
        with self.assertRaises(ValueError):
            ag.subscribe("no-such-event", lambda e, **k: None)
        with self.assertRaises(TypeError):
            ag.subscribe(ag.EventId.NODE_ROLE_CHANGED, "not callable")
        with self.assertRaises(KeyError):
            ag.unsubscribe(123456789)


if __name__ == "__main__":
    unittest.main()
