"""Tests of the Python-side logic with the C calls replaced by fakes: how
read_notification shapes ConfD's struct into NSO's dict, and the
subscription thread (ordering, unsubscribe guarantees) driven through a
socketpair. The same paths run against ha-node in test_events.py and
test_availability_group.py when the library has the notification API."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import threading
import unittest
from unittest import mock

import support  # noqa: F401
from confd_ha import _types, availability_group as ag, error, events
from confd_ha.error import Error


class _FakeLib:
    """Stands in for confd_ha._lib inside confd_ha.events."""

    def __init__(self, fill):
        self.fill = fill
        self.freed = 0

    def fn(self, name):
        if name == "confd_read_notification":
            return lambda fd, ptr: self.fill(ctypes.cast(ptr, ctypes.POINTER(_types.NotificationStorage)).contents)
        if name == "confd_free_notification":
            def free(ptr):
                self.freed += 1
            return free
        raise AssertionError(name)

    def library(self):
        return self

    def has(self, name):
        return name == "confd_free_notification"


def _set_node(node, nodeid: bytes, af, addr):
    n = len(nodeid)
    node.buf = nodeid
    node.nodeid.type = _types.C_BUF
    node.nodeid.val.buf.size = n
    node.nodeid.val.buf.ptr = ctypes.addressof(node) + _types.HaNode.buf.offset
    node.af = af
    if af == socket.AF_INET:
        node.addr.ip4[:] = list(socket.inet_pton(af, addr))
    elif af == socket.AF_INET6:
        node.addr.ip6[:] = list(socket.inet_pton(af, addr))
    else:
        node.addr_buf = addr.encode()
        node.addr.str = ctypes.addressof(node) + _types.HaNode.addr_buf.offset


class ReadNotificationShapeTest(unittest.TestCase):
    def read(self, fill):
        fake = _FakeLib(fill)
        with mock.patch.object(events, "_lib", fake):
            n = events.read_notification(0)
        self.assertEqual(fake.freed, 1, "confd_free_notification not called")
        notif = n.pop("_notif")
        self.assertEqual((notif.type, notif.hnot), (n["type"], n.get("hnot")))
        return n

    def test_each_ha_type(self):
        def ha_event(t, setter=None):
            def fill(st):
                head = _types.NotificationHead.from_buffer(st)
                head.type = events.NOTIF_HA_INFO
                head.hnot.type = t
                if setter:
                    setter(head.hnot.data)
            return fill

        self.assertEqual(self.read(ha_event(1, lambda d: setattr(d, "noprimary", 31))),
                         {"type": 64, "hnot": {"type": 1, "noprimary": 31, "nomaster": 31}})
        n = self.read(ha_event(2, lambda d: _set_node(d.secondary_died, b"n2", socket.AF_INET, "10.0.0.2")))
        node = {"nodeid": "n2", "af": socket.AF_INET, "ip4": "10.0.0.2"}
        self.assertEqual(n["hnot"], {"type": 2, "secondary_died": node, "slave_died": node})
        n = self.read(ha_event(3, lambda d: _set_node(d.secondary_arrived, b"n3", socket.AF_INET6, "fd00::3")))
        node = {"nodeid": "n3", "af": socket.AF_INET6, "ip6": "fd00::3"}
        self.assertEqual(n["hnot"], {"type": 3, "secondary_arrived": node, "slave_arrived": node})
        n = self.read(ha_event(3, lambda d: _set_node(d.secondary_arrived, b"n4", 0, "host-4")))
        self.assertEqual(n["hnot"]["secondary_arrived"], {"nodeid": "n4", "af": 0, "str": "host-4"})
        self.assertEqual(self.read(ha_event(4, lambda d: setattr(d, "cdb_initialized_by_copy", 1)))["hnot"],
                         {"type": 4, "cdb_initialized_by_copy": 1})
        self.assertEqual(self.read(ha_event(5))["hnot"], {"type": 5})
        self.assertEqual(self.read(ha_event(6))["hnot"], {"type": 6})
        self.assertEqual(self.read(ha_event(7, lambda d: setattr(d, "besecondary_result", 28)))["hnot"],
                         {"type": 7, "besecondary_result": 28, "beslave_result": 28})

    def test_other_types(self):
        def heartbeat(st):
            _types.NotificationHead.from_buffer(st).type = events.NOTIF_HEARTBEAT
        self.assertEqual(self.read(heartbeat), {"type": events.NOTIF_HEARTBEAT})

        def going_down(st):
            _types.NotificationHead.from_buffer(st).type = -(1 << 31)
        self.assertEqual(self.read(going_down), {"type": events.NOTIF_SYSTEM_GOING_DOWN})


class ChaConversionTest(unittest.TestCase):
    """cha_event / cha_node_state -> the Python objects, without a library."""

    def test_ha_info_events(self):
        ev = _types.ChaEvent()
        ev.type = 2
        ev.ha_info_type = 3
        ev.ha_info_node.id = b"n2"
        ev.ha_info_node.address = b"::1"
        node = {"nodeid": "n2", "af": socket.AF_INET6, "ip6": "::1"}
        self.assertEqual(ag._hnot_from_cha(ev),
                         {"type": 3, "secondary_arrived": node, "slave_arrived": node})
        ev.ha_info_type = 2
        ev.ha_info_node.address = b"host-b"
        node = {"nodeid": "n2", "af": 0, "str": "host-b"}
        self.assertEqual(ag._hnot_from_cha(ev), {"type": 2, "secondary_died": node, "slave_died": node})
        ev.ha_info_type, ev.ha_info_value = 1, 31
        self.assertEqual(ag._hnot_from_cha(ev), {"type": 1, "noprimary": 31, "nomaster": 31})
        ev.ha_info_type, ev.ha_info_value = 7, 28
        self.assertEqual(ag._hnot_from_cha(ev), {"type": 7, "besecondary_result": 28, "beslave_result": 28})
        ev.ha_info_type, ev.ha_info_value = 4, 1
        self.assertEqual(ag._hnot_from_cha(ev), {"type": 4, "cdb_initialized_by_copy": 1})
        ev.ha_info_type = 5
        self.assertEqual(ag._hnot_from_cha(ev), {"type": 5})

    def test_node_state(self):
        st = _types.ChaNodeState()
        st.role = 2
        st.has_primary = 1
        st.node_id = b"n2"
        st.primary.id = b"n1"
        st.primary.address = b"127.0.0.1"
        st.primary.last_tick_ms = 1_700_000_000_123
        st.seq = 42
        st.txid = b"n1-42"
        ns = ag._node_state(st)
        self.assertEqual(ns.node_role, ag.NodeRole.SECONDARY)
        self.assertEqual(ns.node_id, "n2")
        self.assertEqual((ns.primary.node_id, ns.primary.address), ("n1", "127.0.0.1"))
        self.assertEqual(ns.last_heartbeat_time.timestamp(), 1_700_000_000.123)
        self.assertEqual((ns.last_seq, ns.last_txid, ns.secondaries), (42, "n1-42", ()))
        st = _types.ChaNodeState()
        st.role = 3
        st.node_id = b"n1"
        st.num_secondaries = 2
        for i, tick in enumerate((1000, -1)):
            st.secondaries[i].id = b"s%d" % i
            st.secondaries[i].address = b"10.0.0.%d" % i
            st.secondaries[i].last_tick_ms = tick
        ns = ag._node_state(st)
        self.assertIsNone(ns.primary)
        self.assertEqual([p.node_id for p in ns.secondaries], ["s0", "s1"])
        self.assertIsNone(ns.secondaries[1].last_heartbeat_time)
        self.assertEqual(ns.last_heartbeat_time.timestamp(), 1.0)
        st = _types.ChaNodeState()
        st.role = 1
        self.assertEqual((ag._node_state(st).node_id, ag._node_state(st).last_heartbeat_time), (None, None))


class FakeEventStream:
    """notifications_connect / read_notification over a socketpair: the test
    writes one JSON 'hnot' per line; EOF -> Error(ERR_EOF), as the library."""

    def __init__(self):
        self.preload = []
        self.peers = []
        self.lock = threading.Lock()
        self.files = {}

    def connect(self, sock, mask, ip=None, port=None, path=None):
        a, b = socket.socketpair()
        # put our end of the pair under the caller's socket fd
        os.dup2(a.fileno(), sock.fileno())
        a.close()
        with self.lock:
            self.peers.append(b)
        for hnot in self.preload:  # events that arrive before subscribe() returns
            b.sendall((json.dumps(hnot) + "\n").encode())

    def read(self, sock):
        buf = self.files.setdefault(id(sock), bytearray())
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise Error(error.ERR_EOF, "Lost connection to ConfD", "", "confd_read_notification")
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        return {"type": events.NOTIF_HA_INFO, "hnot": json.loads(line)}

    def send(self, hnot, peer=None):
        data = (json.dumps(hnot) + "\n").encode()
        for p in ([peer] if peer is not None else self.peers):
            try:
                p.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # that subscription already closed its end


class SubscriptionLogicTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeEventStream()
        patches = [
            mock.patch.object(ag.events, "notifications_connect", self.fake.connect),
            mock.patch.object(ag.events, "read_notification", self.fake.read),
            mock.patch.object(ag._lib, "has", lambda name: False),
        ]
        for p in patches:
            p.start()
            self.addCleanup(p.stop)
        self.addCleanup(lambda: [p.close() for p in self.fake.peers])
        self.subs = []

    def tearDown(self):
        for sid in self.subs:
            try:
                ag.unsubscribe(sid)
            except KeyError:
                pass

    def subscribe(self, cb, event_id=ag.EventId.NODE_ROLE_CHANGED):
        sid = ag.subscribe(event_id, cb, port=1)
        self.subs.append(sid)
        return sid

    def test_order_and_role_sequence(self):
        got = []
        done = threading.Event()

        def cb(ev, **kw):
            got.append((ev.previous, ev.new))
            if len(got) == 4:
                done.set()

        self.subscribe(cb)
        for h in ({"type": 5}, {"type": 3}, {"type": 6}, {"type": 7, "besecondary_result": 0},
                  {"type": 4, "cdb_initialized_by_copy": 0}, {"type": 1, "noprimary": 26}):
            self.fake.send(h)
        self.assertTrue(done.wait(10))
        R = ag.NodeRole
        self.assertEqual(got, [(None, R.PRIMARY), (R.PRIMARY, R.NONE), (R.NONE, R.SECONDARY),
                               (R.SECONDARY, R.NONE)])

    def test_unsubscribe_joins_a_running_callback(self):
        entered, release = threading.Event(), threading.Event()
        calls = []

        def cb(ev, **kw):
            calls.append(ev)
            entered.set()
            release.wait(10)

        sid = self.subscribe(cb)
        sub = ag._subs[sid]
        self.fake.send({"type": 5})
        self.fake.send({"type": 6})  # queued behind the running callback
        self.assertTrue(entered.wait(10))
        returned = threading.Event()
        t = threading.Thread(target=lambda: (ag.unsubscribe(sid), returned.set()))
        t.start()
        # unsubscribe must wait for the running callback
        self.assertFalse(returned.wait(0.2))
        release.set()
        t.join(10)
        self.assertTrue(returned.is_set())
        self.assertFalse(sub._thread.is_alive())
        self.assertEqual(len(calls), 1, "a callback ran after unsubscribe was called")

    def test_unsubscribe_inside_callback(self):
        calls = []

        def cb(ev, subscription_id, **kw):
            calls.append(ev)
            ag.unsubscribe(subscription_id)

        sid = self.subscribe(cb)
        sub = ag._subs[sid]
        self.fake.send({"type": 5})
        self.fake.send({"type": 6})
        support.wait_for(lambda: not sub._thread.is_alive(), 10, "the thread to end")
        self.assertEqual(len(calls), 1)
        self.assertIsNone(sub._sock, "the thread should close its socket")

    def test_unsubscribe_in_a_callback_before_subscribe_returns(self):
        self.fake.preload = [{"type": 5}, {"type": 6}]
        calls, errors = [], []
        done = threading.Event()

        def cb(ev, subscription_id, **kw):
            calls.append(ev)
            try:
                ag.unsubscribe(subscription_id)
            except Exception as e:  # pragma: no cover - the failure being tested
                errors.append(e)
            done.set()

        sid = self.subscribe(cb)
        self.assertTrue(done.wait(10))
        self.assertEqual(errors, [])
        self.assertNotIn(sid, ag._subs)
        self.assertEqual(len(calls), 1)

    def test_eof_ends_subscription(self):
        sid = self.subscribe(lambda ev, **kw: None)
        sub = ag._subs[sid]
        with self.assertLogs("confd_ha.availability_group", "WARNING"):
            self.fake.peers[-1].close()
            support.wait_for(lambda: not sub._thread.is_alive(), 10, "the thread to end")
        self.assertEqual(ag.subscription_error(sid).confd_errno, error.ERR_EOF)

    def test_ha_info_passthrough(self):
        got = []
        ev_done = threading.Event()

        def cb(ev, **kw):
            got.append(ev)
            ev_done.set()

        self.subscribe(cb, ag.EventId.HA_INFO)
        self.fake.send({"type": 3, "secondary_arrived": {"nodeid": "n2", "af": 2, "ip4": "1.2.3.4"}})
        self.assertTrue(ev_done.wait(10))
        self.assertEqual(got[0].type, 3)
        self.assertEqual(got[0].data["secondary_arrived"]["nodeid"], "n2")


if __name__ == "__main__":
    unittest.main()
