"""confd_ha.data against real ha-node processes: reads, transactions, every
value kind, and the errors of a secondary, a missing path and a bad path."""

from __future__ import annotations

import ipaddress
import socket
import unittest

import support
from support import wait_for

from confd_ha import data, error, ha
from confd_ha.error import Error


@support.skip_unless_library_has("cha_data_connect", "cha_txn_commit")
class DataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        port = support.free_port("127.0.0.1", "127.0.0.2")
        c = support.Cluster(cls.addClassCleanup, "data")
        cls.p = c.add("p", "127.0.0.1", port)
        cls.s = c.add("s", "127.0.0.2", port)
        c.wait_ready()
        cls.hp = cls.p.ha()
        ha.beprimary(cls.hp, "p")
        cls.addClassCleanup(cls.hp.close)

    def data_sock(self, node):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        data.connect(s, ip=node.ipc_host, port=node.ipc_port)
        return s

    def test_every_value_kind_round_trips(self):
        d = self.data_sock(self.p)
        values = {
            "/v/str": "router-1",
            "/v/bool": True,
            "/v/int": -(2**40),
            "/v/float": 2.5,
            "/v/ip4": ipaddress.IPv4Address("10.0.0.1"),
            "/v/ip6": ipaddress.IPv6Address("2001:db8::1"),
        }
        with data.Transaction() as t:
            for path, v in values.items():
                t.set(path, v)
            t.set("/v/port", 8080, vtype=data.C_UINT16)
            t.set("/v/blob", b"\x00\xff", vtype=data.C_BINARY)
            txid = t.commit(d)
        self.assertEqual(data.txid(d), txid)
        for path, v in values.items():
            self.assertEqual(data.get(d, path), v, path)
        self.assertEqual(data.get(d, "/v/port"), 8080)
        self.assertEqual(data.get(d, "/v/blob"), b"\x00\xff")
        self.assertEqual(data.list_children(d, "/v")[:3], ["blob", "bool", "float"])
        self.assertTrue(data.exists(d, "/v"))
        self.assertFalse(data.exists(d, "/nope"))

    def test_delete_and_errors(self):
        d = self.data_sock(self.p)
        with data.Transaction() as t:
            t.set("/del/a/b", "x").set("/del/c", "y")
            t.commit(d)
        with data.Transaction() as t:
            t.delete("/del/a")
            t.commit(d)
        self.assertEqual(data.list_children(d, "/del"), ["c"])
        with self.assertRaises(Error) as cm:
            data.get(d, "/del/a/b")
        self.assertEqual(cm.exception.confd_errno, error.ERR_NOEXISTS)
        with self.assertRaises(Error) as cm:
            data.get(d, "no-slash")
        self.assertEqual(cm.exception.confd_errno, error.ERR_BADPATH)
        with self.assertRaises(ValueError):
            data.Transaction().set("/x", 300, vtype=data.C_UINT8)
        with self.assertRaises(TypeError):
            data.Transaction().set("/x", object())
        with self.assertRaises(TypeError):
            data.Transaction().set("/x", "text", vtype=data.C_BOOL)

    def test_secondary_reads_and_refuses_writes(self):
        hs = self.s.ha()
        self.addCleanup(hs.close)
        ha.besecondary(hs, "s", "p", "127.0.0.1", 1)
        self.addCleanup(ha.benone, hs)
        dp, ds = self.data_sock(self.p), self.data_sock(self.s)
        with data.Transaction() as t:
            t.set("/repl/x", "on both")
            txid = t.commit(dp)
        # Sync replication: readable on the secondary when the commit returns.
        self.assertEqual(data.get(ds, "/repl/x"), "on both")
        self.assertEqual(data.txid(ds), txid)
        t = data.Transaction().set("/repl/x", "rogue")
        with self.assertRaises(Error) as cm:
            t.commit(ds)
        e = cm.exception
        self.assertEqual(e.confd_errno, error.ERR_NOT_WRITABLE)
        self.assertIn("secondary", e.lasterr)
        # The failed transaction keeps its operations: it can go to the primary.
        t.commit(dp)
        wait_for(lambda: data.get(ds, "/repl/x") == "rogue", 10, "the retried commit")
        t.close()


if __name__ == "__main__":
    unittest.main()
