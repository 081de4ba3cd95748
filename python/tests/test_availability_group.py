"""confd_ha.availability_group against a real ha-node: role-change callbacks,
unsubscribe (also from inside a callback), errors; get_node_state when the
library has the availability-group C API."""

from __future__ import annotations

import os
import queue
import socket
import threading
import unittest

import support
from support import EVENT_TIMEOUT, wait_for
from confd_ha import _lib, availability_group as ag, error, ha
from confd_ha.error import Error

R = ag.NodeRole

needs_events = support.skip_unless_library_has(
    "confd_notifications_connect", "confd_read_notification"
)
needs_node_state = support.skip_unless_library_has("cha_node_state_get")
needs_cha_subscribe = support.skip_unless_library_has("cha_subscribe", "cha_unsubscribe")


class Collector:
    def __init__(self):
        self.q: "queue.Queue" = queue.Queue()
        self.threads = set()

    def __call__(self, event, **kwargs):
        self.threads.add(threading.get_ident())
        self.q.put((event, kwargs))

    def next(self, timeout=EVENT_TIMEOUT):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no callback within %.0f s" % timeout) from None


class SubscribeTests:
    """Run once per engine (the library's cha_subscribe, the Python one)."""

    library_engine = True

    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        c = support.Cluster(cls.addClassCleanup, "ag")
        cls.n = c.add("ag1", "127.0.0.1", support.free_port())
        c.wait_ready()

    def setUp(self):
        saved = ag.use_library_subscriptions
        ag.use_library_subscriptions = self.library_engine
        self.addCleanup(setattr, ag, "use_library_subscriptions", saved)
        self.h = self.n.ha()
        self.addCleanup(self.h.close)
        ha.benone(self.h)
        self.subs = []

    def tearDown(self):
        for sid in self.subs:
            try:
                ag.unsubscribe(sid)
            except KeyError:
                pass

    def subscribe(self, event_id, cb, **kw):
        kw.setdefault("port", self.n.ipc_port)
        sid = ag.subscribe(event_id, cb, **kw)
        self.subs.append(sid)
        expected = ag._CSubscription if self.library_engine else ag._PySubscription
        self.assertIsInstance(ag._subs[sid], expected)
        return sid

    def assertStopped(self, sub):
        thread = getattr(sub, "_thread", None)  # the Python engine's
        if thread is not None:
            self.assertFalse(thread.is_alive(), "the subscription thread still runs")
        else:
            self.assertIsNone(sub._handle, "the library subscription was not ended")

    def test_role_changed_none_to_primary(self):
        col = Collector()
        sid = self.subscribe(ag.EventId.NODE_ROLE_CHANGED, col)
        self.assertIsInstance(sid, int)
        ha.beprimary(self.h, "ag1")
        ev, kw = col.next()
        self.assertEqual(ev.event_id, ag.EventId.NODE_ROLE_CHANGED)
        self.assertEqual(ev.new, R.PRIMARY)
        # the role before the first event is known through cha_node_state_get
        if self.library_engine or _lib.has("cha_node_state_get"):
            self.assertEqual(ev.previous, R.NONE)
        else:
            self.assertIn(ev.previous, (R.NONE, None))
        self.assertEqual(kw, {"subscription_id": sid})
        ha.benone(self.h)
        ev, _ = col.next()
        self.assertEqual((ev.previous, ev.new), (R.PRIMARY, R.NONE))
        ha.beprimary(self.h, "ag1")
        ev, _ = col.next()
        self.assertEqual((ev.previous, ev.new), (R.NONE, R.PRIMARY))
        if not self.library_engine:
            self.assertEqual(ev.ha_info, {"type": 5})
        self.assertNotIn(threading.get_ident(), col.threads)

    def test_unix_path_and_env(self):
        col = Collector()
        self.subscribe(ag.EventId.NODE_ROLE_CHANGED, col, port=None, path=self.n.ipc_path)
        keys = ("NCS_IPC_PATH", "NCS_IPC_ADDR", "NCS_IPC_PORT")
        saved = {k: os.environ.pop(k) for k in keys if k in os.environ}

        def restore():
            for k in keys:
                os.environ.pop(k, None)
            os.environ.update(saved)

        self.addCleanup(restore)
        os.environ["NCS_IPC_PORT"] = str(self.n.ipc_port)
        col2 = Collector()
        self.subscribe(ag.EventId.NODE_ROLE_CHANGED, col2, port=None)
        ha.beprimary(self.h, "ag1")
        self.assertEqual(col.next()[0].new, R.PRIMARY)
        self.assertEqual(col2.next()[0].new, R.PRIMARY)

    def test_ha_info_passthrough(self):
        col = Collector()
        self.subscribe(ag.EventId.HA_INFO, col)
        ha.beprimary(self.h, "ag1")
        ev, _ = col.next()
        self.assertIsInstance(ev, ag.HaInfoEvent)
        self.assertEqual((ev.type, ev.data), (5, {"type": 5}))

    def test_unsubscribe_stops_callbacks(self):
        gone, witness = Collector(), Collector()
        sid = self.subscribe(ag.EventId.NODE_ROLE_CHANGED, gone)
        self.subscribe(ag.EventId.NODE_ROLE_CHANGED, witness)
        sub = ag._subs[sid]
        ag.unsubscribe(sid)
        self.assertStopped(sub)
        ha.beprimary(self.h, "ag1")
        witness.next()  # the event was delivered to live subscriptions
        self.assertTrue(gone.q.empty())
        with self.assertRaises(KeyError):
            ag.unsubscribe(sid)

    def test_unsubscribe_while_callback_runs(self):
        entered, release = threading.Event(), threading.Event()
        calls = []

        def slow(event, **kw):
            calls.append(event)
            entered.set()
            release.wait(EVENT_TIMEOUT)

        sid = self.subscribe(ag.EventId.NODE_ROLE_CHANGED, slow)
        ha.beprimary(self.h, "ag1")
        self.assertTrue(entered.wait(EVENT_TIMEOUT), "callback not called")
        done = threading.Event()
        t = threading.Thread(target=lambda: (ag.unsubscribe(sid), done.set()))
        t.start()
        ha.benone(self.h)  # an event queued behind the running callback
        release.set()
        t.join(EVENT_TIMEOUT)
        self.assertTrue(done.is_set(), "unsubscribe did not return")
        n = len(calls)
        self.assertLessEqual(n, 2)
        ha.beprimary(self.h, "ag1")
        self.assertEqual(len(calls), n)

    def test_unsubscribe_from_inside_callback(self):
        calls = []
        box = {}
        returned = threading.Event()

        def once(event, subscription_id, **kw):
            calls.append(event)
            ag.unsubscribe(subscription_id)
            returned.set()

        box["sid"] = self.subscribe(ag.EventId.NODE_ROLE_CHANGED, once)
        sub = ag._subs[box["sid"]]
        witness = Collector()
        self.subscribe(ag.EventId.NODE_ROLE_CHANGED, witness)
        ha.beprimary(self.h, "ag1")
        self.assertTrue(returned.wait(EVENT_TIMEOUT), "unsubscribe inside the callback hung")
        # the library engine reports roles as observed: let the witness see
        # PRIMARY before the next change so that it reports both
        self.assertEqual(witness.next()[0].new, R.PRIMARY)
        if hasattr(sub, "_thread"):  # it ends when the callback has returned
            wait_for(lambda: not sub._thread.is_alive(), 10, "the subscription thread to end")
        self.assertStopped(sub)
        ha.benone(self.h)
        self.assertEqual(witness.next()[0].new, R.NONE)
        self.assertEqual(len(calls), 1)

    def test_callback_exception_is_logged_and_subscription_goes_on(self):
        col = Collector()

        def bad(event, **kw):
            col(event, **kw)
            raise RuntimeError("boom")

        self.subscribe(ag.EventId.NODE_ROLE_CHANGED, bad)
        with self.assertLogs("confd_ha.availability_group", "ERROR") as logs:
            ha.beprimary(self.h, "ag1")
            col.next()
            ha.benone(self.h)
            col.next()
            wait_for(lambda: len(logs.records) >= 2, 10, "two logged callback errors")
        self.assertIn("boom", logs.output[0])

    def test_node_goes_away(self):
        c = support.Cluster(self.addCleanup, "ag-eof")
        n = c.add("ag7", "127.0.0.7", support.free_port("127.0.0.7"), unix=False)
        c.wait_ready()
        sid = self.subscribe(ag.EventId.NODE_ROLE_CHANGED, Collector(), port=n.ipc_port)
        # Both engines: the loss is logged and recorded (the library's engine
        # hears it as a CHA_EVENT_CLOSED event).
        with self.assertLogs("confd_ha.availability_group", "WARNING"):
            n.stop()
            err = wait_for(lambda: ag.subscription_error(sid), 10, "the subscription to end")
        self.assertIsInstance(err, Error)
        self.assertEqual(err.confd_errno, error.ERR_EOF)
        ag.unsubscribe(sid)
        self.assertIsNone(ag._subs.get(sid))

    def test_subscribe_to_absent_node(self):
        with self.assertRaises(Error) as cm:
            ag.subscribe(ag.EventId.NODE_ROLE_CHANGED, Collector(), port=support.free_port())
        self.assertEqual(cm.exception.confd_errno, error.ERR_OS)


@needs_events
@needs_cha_subscribe
class SubscribeLibraryEngineTest(SubscribeTests, unittest.TestCase):
    library_engine = True


@needs_events
class SubscribePythonEngineTest(SubscribeTests, unittest.TestCase):
    library_engine = False


class NodeStateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        c = support.Cluster(cls.addClassCleanup, "ns")
        cls.ha_port = support.free_port("127.0.0.1", "127.0.0.2")
        cls.n1 = c.add("ns1", "127.0.0.1", cls.ha_port)
        cls.n2 = c.add("ns2", "127.0.0.2", cls.ha_port)
        c.wait_ready()

    def test_without_the_c_api(self):
        if _lib.has("cha_node_state_get"):
            self.skipTest("the library has cha_node_state_get; see test_node_state")
        with self.assertRaisesRegex(NotImplementedError, "cha_node_state_get"):
            ag.get_node_state(port=self.n1.ipc_port)

    @needs_node_state
    def test_node_state(self):
        h1, h2 = self.n1.ha(), self.n2.ha()
        self.addCleanup(h1.close)
        self.addCleanup(h2.close)
        ha.benone(h2)
        ha.benone(h1)
        st = ag.get_node_state(port=self.n1.ipc_port)
        self.assertEqual(st.node_role, R.NONE)
        self.assertIsNone(st.primary)
        ha.beprimary(h1, "ns1")
        ha.besecondary(h2, "ns2", "ns1", "127.0.0.1", 1)
        p = ag.get_node_state(port=self.n1.ipc_port)
        self.assertEqual((p.node_role, p.node_id), (R.PRIMARY, "ns1"))
        wait_for(lambda: ag.get_node_state(port=self.n1.ipc_port).secondaries, 10, "a secondary")
        s = ag.get_node_state(port=self.n2.ipc_port)
        self.assertEqual((s.node_role, s.node_id), (R.SECONDARY, "ns2"))
        self.assertEqual((s.primary.node_id, s.primary.address), ("ns1", "127.0.0.1"))
        self.assertEqual(s.last_txid, p.last_txid)
        wait_for(lambda: ag.get_node_state(port=self.n2.ipc_port).last_heartbeat_time, 10,
                 "a heartbeat time on the secondary")
        # Health (cha_node_health_get): the secondary as the primary sees it, in sync
        # once its copy is acknowledged; the secondary's last transaction time.
        if _lib.has("cha_node_health_get"):
            def in_sync():
                st = ag.get_node_state(port=self.n1.ipc_port)
                sec = st.secondaries[0] if st.secondaries else None
                return st if sec is not None and sec.state == "in-sync" else None
            p = wait_for(in_sync, 10, "the secondary in sync")
            sec = p.secondaries[0]
            self.assertEqual((sec.node_id, sec.acked_seq, sec.lag_txns, sec.lag_ms, sec.catch_ups),
                             ("ns2", p.last_seq, 0, 0, 0))
            self.assertGreaterEqual(sec.full_copies, 0)
            self.assertIsNone(p.last_txn_time)
            s = ag.get_node_state(port=self.n2.ipc_port)
            self.assertIsNone(s.primary.acked_seq)
            self.assertIsNotNone(s.last_txn_time)
        ha.benone(h2)
        ha.benone(h1)

    def join(self):
        h1, h2 = self.n1.ha(), self.n2.ha()
        self.addCleanup(h1.close)
        self.addCleanup(h2.close)
        ha.benone(h2)
        ha.benone(h1)
        self.addCleanup(ha.benone, h1)
        self.addCleanup(ha.benone, h2)
        return h1, h2

    @needs_events
    def test_secondary_arrived_same_shape_from_both_engines(self):
        h1, h2 = self.join()
        ha.beprimary(h1, "ns1")
        cols = []
        for engine in ([True] if _lib.has("cha_subscribe") else []) + [False]:
            saved = ag.use_library_subscriptions
            ag.use_library_subscriptions = engine
            try:
                col = Collector()
                sid = ag.subscribe(ag.EventId.HA_INFO, col, port=self.n1.ipc_port)
                self.addCleanup(ag.unsubscribe, sid)
                cols.append(col)
            finally:
                ag.use_library_subscriptions = saved
        ha.besecondary(h2, "ns2", "ns1", "127.0.0.1", 1)
        node = {"nodeid": "ns2", "af": socket.AF_INET, "ip4": "127.0.0.2"}
        for col in cols:
            while True:
                ev, _ = col.next()
                if ev.type == 3:
                    break
            self.assertEqual(ev.data, {"type": 3, "secondary_arrived": node, "slave_arrived": node})

    @needs_events
    @needs_cha_subscribe
    def test_relay_role_seen_by_library_engine(self):
        h1, h2 = self.join()
        col = Collector()
        sid = ag.subscribe(ag.EventId.NODE_ROLE_CHANGED, col, port=self.n2.ipc_port)
        self.addCleanup(ag.unsubscribe, sid)
        ha.beprimary(h1, "ns1")
        ha.besecondary(h2, "ns2", "ns1", "127.0.0.1", 1)
        ev, _ = col.next()
        self.assertEqual((ev.previous, ev.new), (R.NONE, R.SECONDARY))
        ha.berelay(h2)
        ev, _ = col.next()
        self.assertEqual((ev.previous, ev.new), (R.SECONDARY, R.RELAY))
        self.assertEqual(ag.get_node_state(port=self.n2.ipc_port).node_role, R.RELAY)

    @needs_node_state
    def test_absent_node(self):
        with self.assertRaises(Error) as cm:
            ag.get_node_state(port=support.free_port())
        self.assertEqual(cm.exception.confd_errno, error.ERR_OS)
        self.assertEqual(cm.exception.function, "cha_node_state_get")


if __name__ == "__main__":
    unittest.main()
