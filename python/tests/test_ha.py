"""confd_ha.ha against real ha-node processes: every function, positive and
negative, and the exception's attributes."""

from __future__ import annotations

import socket
import unittest

import support
from support import TOKEN, wait_for
from confd_ha import error, events, ha
from confd_ha.error import Error


class HaTest(unittest.TestCase):
    """Three nodes on 127.0.0.1/.2/.3 sharing one HA port."""

    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        cls.ha_port = support.free_port("127.0.0.1", "127.0.0.2", "127.0.0.3")
        c = support.Cluster(cls.addClassCleanup, "ha")
        cls.n1 = c.add("n1", "127.0.0.1", cls.ha_port)
        cls.n2 = c.add("n2", "127.0.0.2", cls.ha_port)
        cls.n3 = c.add("n3", "127.0.0.3", cls.ha_port)
        c.wait_ready()

    def setUp(self):
        # every test starts from three nodes in NONE, with our token
        self.socks = {}
        for n in (self.n2, self.n3, self.n1):
            s = self.conn(n)
            ha.benone(s)
        for n in (self.n1, self.n2, self.n3):
            wait_for(lambda n=n: ha.status(self.socks[n.name])[0] == ha.STATE_NONE, 10,
                     "%s to be NONE" % n.name)

    def tearDown(self):
        for s in self.socks.values():
            s.close()

    def conn(self, node, token=TOKEN):
        old = self.socks.pop(node.name, None)
        if old is not None:
            old.close()
        s = node.ha(token)
        self.socks[node.name] = s
        return s

    def assertHaError(self, cm, errno):
        e = cm.exception
        self.assertIsInstance(e, Error)
        self.assertEqual(e.confd_errno, errno, "%r" % e)
        return e

    # ---- connect ----------------------------------------------------------

    def test_connect_tcp_v4(self):
        s = self.conn(self.n1)
        self.assertEqual(ha.status(s), (ha.STATE_NONE, []))

    def test_connect_unix(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        ha.connect(s, TOKEN, pstr=self.n1.ipc_path)
        self.assertEqual(ha.status(s), (ha.STATE_NONE, []))
        # a Unix HA connection replaced the TCP one; keep it as the test's
        self.socks.pop("n1").close()

    def test_connect_bytes_token(self):
        s = self.n1.tcp_socket()
        self.addCleanup(s.close)
        ha.connect(s, TOKEN.encode(), ip="127.0.0.1", port=self.n1.ipc_port)
        self.assertEqual(ha.status(s)[0], ha.STATE_NONE)

    def test_connect_refused(self):
        s = socket.socket()
        self.addCleanup(s.close)
        port = support.free_port()
        with self.assertRaises(Error) as cm:
            ha.connect(s, TOKEN, ip="127.0.0.1", port=port)
        e = self.assertHaError(cm, error.ERR_OS)
        self.assertEqual(e.strerror, "system call failed")
        self.assertTrue(e.lasterr, "lasterr should say what failed")

    def test_connect_empty_token(self):
        s = self.n1.tcp_socket()
        self.addCleanup(s.close)
        with self.assertRaises(Error) as cm:
            ha.connect(s, "", ip="127.0.0.1", port=self.n1.ipc_port)
        e = self.assertHaError(cm, error.ERR_PROTOUSAGE)
        self.assertIn("token is empty", e.lasterr)

    def test_connect_argument_errors(self):
        s = socket.socket()
        self.addCleanup(s.close)
        with self.assertRaisesRegex(ValueError, "needs ip and port"):
            ha.connect(s, TOKEN)
        with self.assertRaisesRegex(ValueError, "NUL"):
            ha.connect(s, "to\0ken", ip="127.0.0.1", port=self.n1.ipc_port)
        with self.assertRaises(TypeError):
            ha.connect(s, 42, ip="127.0.0.1", port=self.n1.ipc_port)
        u = socket.socket(socket.AF_UNIX)
        self.addCleanup(u.close)
        with self.assertRaisesRegex(ValueError, "needs a path"):
            ha.connect(u, TOKEN, ip="127.0.0.1", port=1)
        t = socket.socket()
        t.settimeout(5)
        self.addCleanup(t.close)
        with self.assertRaisesRegex(ValueError, "settimeout"):
            ha.connect(t, TOKEN, ip="127.0.0.1", port=self.n1.ipc_port)

    def test_second_connect_replaces_first(self):
        a = self.n1.ha()
        self.addCleanup(a.close)
        # connect returns once the token is sent; a round trip makes sure the
        # node has taken `a` as its HA connection before `b` arrives
        self.assertEqual(ha.status(a)[0], ha.STATE_NONE)
        b = self.n1.ha()
        self.addCleanup(b.close)
        self.assertEqual(ha.status(b)[0], ha.STATE_NONE)
        with self.assertRaises(Error) as cm:
            ha.status(a)
        self.assertHaError(cm, error.ERR_EOF)

    # ---- beprimary / benone / status ----------------------------------------

    def test_beprimary_and_status(self):
        s = self.socks["n1"]
        self.assertIsNone(ha.beprimary(s, "n1"))
        self.assertEqual(ha.status(s), (ha.STATE_PRIMARY, []))
        ha.benone(s)
        self.assertEqual(ha.status(s), (ha.STATE_NONE, []))

    def test_beprimary_bytes_id_and_alias(self):
        s = self.socks["n1"]
        ha.bemaster(s, b"n1")
        self.assertEqual(ha.status(s)[0], ha.STATE_MASTER)

    def test_beprimary_bad_id_type(self):
        with self.assertRaisesRegex(TypeError, "mynodeid must be str, bytes or Value"):
            ha.beprimary(self.socks["n1"], 1)

    def test_beprimary_ha_bind(self):
        # something else holds n3's HA address
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        bport = support.free_port("127.0.0.4")
        blocker.bind(("127.0.0.4", bport))
        blocker.listen(1)
        c = support.Cluster(self.addCleanup, "bind")
        n4 = c.add("n4", "127.0.0.4", bport)
        c.wait_ready()
        s = n4.ha()
        self.addCleanup(s.close)
        with self.assertRaises(Error) as cm:
            ha.beprimary(s, "n4")
        e = self.assertHaError(cm, error.ERR_HA_BIND)
        self.assertEqual(e.strerror, "failed to bind HA socket")
        self.assertIn(str(bport), e.lasterr)
        self.assertEqual(ha.status(s)[0], ha.STATE_NONE)

    # ---- besecondary ------------------------------------------------------

    def make_primary(self):
        ha.beprimary(self.socks["n1"], "n1")

    def test_besecondary_sync(self):
        self.make_primary()
        s2 = self.socks["n2"]
        self.assertIsNone(ha.besecondary(s2, "n2", "n1", "127.0.0.1", 1))
        self.assertEqual(ha.status(s2), (ha.STATE_SECONDARY, [{"nodeid": "n1", "address": "127.0.0.1"}]))
        s1 = self.socks["n1"]
        st, nodes = wait_for(lambda: (lambda r: r if r[1] else None)(ha.status(s1)),
                             10, "n2 listed on the primary")
        self.assertEqual(st, ha.STATE_PRIMARY)
        # the secondary connects from its own HA address
        self.assertEqual(nodes, [{"nodeid": "n2", "address": "127.0.0.2"}])

    def test_besecondary_async(self):
        self.make_primary()
        s2 = self.socks["n2"]
        self.assertIsNone(ha.beslave(s2, "n2", "n1", "127.0.0.1", 0))
        # nothing was read: the socket stays usable for the next call
        wait_for(lambda: ha.status(s2)[0] == ha.STATE_SECONDARY, 10, "n2 to become secondary")

    def test_besecondary_wrong_token(self):
        self.make_primary()
        s2 = self.conn(self.n2, token="not-the-token")
        with self.assertRaises(Error) as cm:
            ha.besecondary(s2, "n2", "n1", "127.0.0.1", 1)
        e = self.assertHaError(cm, error.ERR_HA_BADTOKEN)
        self.assertEqual(e.strerror, "Remote HA node has bad credentials")
        self.assertTrue(e.lasterr)
        self.assertEqual(e.function, "confd_ha_besecondary")
        self.assertIn("(28)", str(e))
        self.assertEqual(ha.status(s2)[0], ha.STATE_NONE)
        self.assertEqual(ha.status(self.socks["n1"]), (ha.STATE_PRIMARY, []))

    def test_besecondary_wrong_primary_name(self):
        self.make_primary()
        with self.assertRaises(Error) as cm:
            ha.besecondary(self.socks["n2"], "n2", "not-n1", "127.0.0.1", 1)
        self.assertHaError(cm, error.ERR_HA_BADNAME)

    def test_besecondary_nobody_listening(self):
        with self.assertRaises(Error) as cm:
            ha.besecondary(self.socks["n2"], "n2", "n1", "127.0.0.1", 1)
        e = self.assertHaError(cm, error.ERR_HA_CONNECT)
        self.assertEqual(e.strerror, "Failed to connect to remote HA node")

    def test_besecondary_invalid_ip(self):
        for bad in ("not-an-ip", "", "300.1.1.1"):
            with self.assertRaisesRegex(ValueError, r"^Invalid primary_ip address\.$"):
                ha.besecondary(self.socks["n2"], "n2", "n1", bad, 1)
        with self.assertRaises(ValueError):
            ha.besecondary(self.socks["n2"], "n2", "n1", "127.0.0.1", "yes")

    # ---- berelay ----------------------------------------------------------

    def test_berelay_on_none_is_badstate(self):
        with self.assertRaises(Error) as cm:
            ha.berelay(self.socks["n2"])
        e = self.assertHaError(cm, error.ERR_BADSTATE)
        self.assertEqual(e.strerror, "operation in wrong state")
        self.assertTrue(e.lasterr)

    def test_berelay_and_relay_status(self):
        self.make_primary()
        s2, s3 = self.socks["n2"], self.socks["n3"]
        ha.besecondary(s2, "n2", "n1", "127.0.0.1", 1)
        ha.berelay(s2)
        self.assertEqual(ha.status(s2), (ha.STATE_SECONDARY_RELAY, [{"nodeid": "n1", "address": "127.0.0.1"}]))
        ha.besecondary(s3, "n3", "n2", "127.0.0.2", 1)
        self.assertEqual(ha.status(s3), (ha.STATE_SECONDARY, [{"nodeid": "n2", "address": "127.0.0.2"}]))
        st, nodes = wait_for(lambda: (lambda r: r if len(r[1]) == 2 else None)(ha.status(s2)),
                             10, "the relay to list n1 and n3")
        self.assertEqual(st, ha.STATE_SLAVE_RELAY)
        self.assertEqual([n["nodeid"] for n in nodes], ["n1", "n3"])

    # ---- secondary_dead ---------------------------------------------------

    def test_secondary_dead(self):
        self.make_primary()
        ha.besecondary(self.socks["n2"], "n2", "n1", "127.0.0.1", 1)
        s1 = self.socks["n1"]
        wait_for(lambda: ha.status(s1)[1], 10, "n2 on the primary")
        self.assertIsNone(ha.secondary_dead(s1, "n2"))
        wait_for(lambda: ha.status(s1) == (ha.STATE_PRIMARY, []), 10, "n2 dropped by the primary")

    def test_secondary_dead_unknown_and_alias(self):
        self.make_primary()
        ha.secondary_dead(self.socks["n1"], "nobody")  # ConfD: ok, logged
        ha.slave_dead(self.socks["n1"], b"nobody")
        with self.assertRaises(TypeError):
            ha.secondary_dead(self.socks["n1"], None)

    # ---- EOF --------------------------------------------------------------

    def test_eof_when_node_goes_away(self):
        c = support.Cluster(self.addCleanup, "eof")
        n5 = c.add("n5", "127.0.0.5", support.free_port("127.0.0.5"), unix=False)
        c.wait_ready()
        s = n5.ha()
        self.addCleanup(s.close)
        self.assertEqual(ha.status(s)[0], ha.STATE_NONE)
        n5.stop()
        with self.assertRaises(Error) as cm:
            ha.status(s)
        e = self.assertHaError(cm, error.ERR_EOF)
        self.assertEqual(e.strerror, "Lost connection to ConfD")


class LibraryTest(unittest.TestCase):
    def test_loaded_and_versions_agree(self):
        import confd_ha

        support.require_prerequisites()
        self.assertIsNone(confd_ha.library_error())
        self.assertTrue(confd_ha.library_path())
        with open(support.os.path.join(support.PYTHON_DIR, "pyproject.toml")) as f:
            pyproject = f.read()
        self.assertIn('version = "%s"' % confd_ha.__version__, pyproject)
        v = confd_ha.lib_version()
        if v is not None:
            self.assertEqual(v, confd_ha.__version__, "library and Python package versions differ")


@unittest.skipUnless(support.ipv6_loopback_available(), "this machine has no IPv6 loopback (::1)")
class HaIpv6Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        c = support.Cluster(cls.addClassCleanup, "v6")
        cls.n = c.add("v6", "127.0.0.1", support.free_port(), ipc_host="::1", unix=False)
        c.wait_ready()

    def test_connect_tcp_v6(self):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        ha.connect(s, TOKEN, ip="::1", port=self.n.ipc_port)
        self.assertEqual(ha.status(s), (ha.STATE_NONE, []))
        ha.beprimary(s, "v6")
        self.assertEqual(ha.status(s), (ha.STATE_PRIMARY, []))
        ha.benone(s)


# keep the events module imported so a missing symbol shows up in one place
assert events.NOTIF_HA_INFO == 64

if __name__ == "__main__":
    unittest.main()
