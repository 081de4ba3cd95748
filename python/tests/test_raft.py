"""HA Raft mode through the Python bindings: create-cluster and status
(``data.raft``), a commit on the leader, a linearizable read, a follower's
refusal naming the leader, the availability-group roles, and a failover
after the leader is killed (real ha-node processes)."""

from __future__ import annotations

import json
import os
import socket
import unittest

import support
from support import wait_for

from confd_ha import availability_group as ag
from confd_ha import data, error
from confd_ha.error import Error

FAILOVER_TIMEOUT = 40.0


class RaftNode(support.Node):
    """A node in ``mode = "raft"`` (its config file next to its data)."""

    def argv(self):
        token = os.path.join(self.dir, "token")
        with open(token, "w") as f:
            f.write("python-raft-token-0123456789\n")
        cfg = os.path.join(self.dir, "raft.toml")
        with open(cfg, "w") as f:
            f.write(
                'mode = "raft"\n[raft]\ncluster-name = "py"\n'
                'node-address = "%s:%d"\nelection-timeout = "1s"\n'
                'heartbeat-interval = "100ms"\nstorage-timeout = "20s"\n'
                'token-file = "%s"\n' % (self.ha_ip, self.ha_port, token)
            )
        return super().argv() + ["--config", cfg]

    @property
    def addr(self) -> str:
        return "%s:%d" % (self.ha_ip, self.ha_port)


@support.skip_unless_library_has("cha_raft", "cha_get_linearizable")
class RaftTest(unittest.TestCase):
    def setUp(self):
        support.require_prerequisites()
        port = support.free_port("127.0.0.1", "127.0.0.2", "127.0.0.3")
        c = support.Cluster(self.addCleanup, "raft")
        self.nodes = []
        for i in (1, 2, 3):
            n = RaftNode("r%d" % i, "127.0.0.%d" % i, port, c.dir)
            self.addCleanup(n.stop)
            n.start()
            self.nodes.append(n)
        for n in self.nodes:
            n.wait_ready()

    def sock(self, node):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        data.connect(s, ip=node.ipc_host, port=node.ipc_port)
        return s

    def status(self, node):
        return json.loads(data.raft(self.sock(node), "status", "json"))

    def test_cluster_roles_and_failover(self):
        a, b, c = self.nodes
        self.assertEqual(self.status(a)["role"], "stalled")
        out = data.raft(self.sock(a), "create-cluster", b.addr, c.addr)
        self.assertIn(c.addr, out)
        st = self.status(a)
        self.assertEqual(st["role"], "leader")
        self.assertEqual(sorted(st["members"]), sorted([a.addr, b.addr, c.addr]))
        for k in ("leader", "term", "connected_nodes", "current_index", "applied_index", "followers"):
            self.assertIn(k, st)
        with data.Transaction() as t:
            t.set("/py/a", "1")
            t.commit(self.sock(a))
        self.assertEqual(data.get_linearizable(self.sock(a), "/py/a"), "1")
        wait_for(lambda: data.get(self.sock(b), "/py/a") == "1", 30, "replication")
        with self.assertRaises(Error) as cm:
            with data.Transaction() as t:
                t.set("/py/b", "2")
                t.commit(self.sock(b))
        self.assertEqual(cm.exception.confd_errno, error.ERR_NOT_WRITABLE)
        self.assertIn(a.addr, str(cm.exception))
        with self.assertRaises(Error) as cm:
            data.raft(self.sock(b), "handover")
        self.assertEqual(cm.exception.confd_errno, error.ERR_BADSTATE)
        # The availability-group view.
        self.assertEqual(
            ag.get_node_state(address=a.ipc_host, port=a.ipc_port).node_role, ag.NodeRole.PRIMARY
        )
        sb = ag.get_node_state(address=b.ipc_host, port=b.ipc_port)
        self.assertEqual(sb.node_role, ag.NodeRole.SECONDARY)
        self.assertEqual(sb.primary.node_id, a.addr)
        self.assertIsNotNone(sb.primary.last_heartbeat_time)
        # kill -9 of the leader: another node becomes PRIMARY.
        a.proc.kill()
        a.proc.wait()

        def new_primary():
            for n in (b, c):
                st = ag.get_node_state(address=n.ipc_host, port=n.ipc_port)
                if st.node_role == ag.NodeRole.PRIMARY:
                    return n
            return None

        leader = wait_for(new_primary, FAILOVER_TIMEOUT, "a new leader")
        with data.Transaction() as t:
            t.set("/py/c", "3")
            t.commit(self.sock(leader))


if __name__ == "__main__":
    unittest.main()
