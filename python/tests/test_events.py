"""confd_ha.events against real ha-node processes. Skipped (with the reason)
only while the library lacks the notification functions."""

from __future__ import annotations

import socket
import time
import unittest

import support
from support import read_event, read_ha_event
from confd_ha import error, events, ha
from confd_ha.error import Error
from confd_ha.value import C_BUF, Value

needs_events = support.skip_unless_library_has(
    "confd_notifications_connect", "confd_read_notification", "confd_sync_ha_notification"
)


@needs_events
class EventsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.require_prerequisites()
        cls.ha_port = support.free_port("127.0.0.1", "127.0.0.2")
        c = support.Cluster(cls.addClassCleanup, "events")
        cls.n1 = c.add("n1", "127.0.0.1", cls.ha_port)
        cls.n2 = c.add("n2", "127.0.0.2", cls.ha_port)
        c.wait_ready()

    def setUp(self):
        self.h1 = self.n1.ha()
        self.addCleanup(self.h1.close)
        self.h2 = self.n2.ha()
        self.addCleanup(self.h2.close)
        ha.benone(self.h2)
        ha.benone(self.h1)

    def ev(self, node, mask=events.NOTIF_HA_INFO):
        s = node.events(mask)
        self.addCleanup(s.close)
        return s

    def test_is_primary_and_is_none(self):
        e = self.ev(self.n1)
        ha.beprimary(self.h1, "n1")
        self.assertEqual(read_event(e), {"type": events.NOTIF_HA_INFO,
                                         "hnot": {"type": events.HA_INFO_IS_PRIMARY}})
        ha.benone(self.h1)
        self.assertEqual(read_ha_event(e, events.HA_INFO_IS_NONE), {"type": events.HA_INFO_IS_NONE})

    def test_unix_notification_socket(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        events.notifications_connect(s, events.NOTIF_HA_INFO, path=self.n1.ipc_path)
        ha.beprimary(self.h1, "n1")
        read_ha_event(s, events.HA_INFO_IS_PRIMARY)

    def test_besecondary_result_ok_arrived_initialized(self):
        e1 = self.ev(self.n1)
        e2 = self.ev(self.n2)
        ha.beprimary(self.h1, "n1")
        read_ha_event(e1, events.HA_INFO_IS_PRIMARY)
        ha.besecondary(self.h2, "n2", "n1", "127.0.0.1", 0)
        h = read_ha_event(e2, events.HA_INFO_BESECONDARY_RESULT)
        self.assertEqual(h, {"type": 7, "besecondary_result": 0, "beslave_result": 0})
        arrived = read_ha_event(e1, events.HA_INFO_SECONDARY_ARRIVED)
        node = arrived["secondary_arrived"]
        self.assertEqual(node, {"nodeid": "n2", "af": socket.AF_INET, "ip4": "127.0.0.2"})
        self.assertEqual(arrived["slave_arrived"], node)

    def test_secondary_initialized(self):
        e2 = self.ev(self.n2)
        ha.beprimary(self.h1, "n1")
        ha.besecondary(self.h2, "n2", "n1", "127.0.0.1", 1)
        h = read_ha_event(e2, events.HA_INFO_SECONDARY_INITIALIZED)
        self.assertIn(h["cdb_initialized_by_copy"], (0, 1))

    def test_besecondary_result_wrong_token(self):
        e2 = self.ev(self.n2)
        ha.beprimary(self.h1, "n1")
        bad = self.n2.ha("wrong-token")
        self.addCleanup(bad.close)
        ha.besecondary(bad, "n2", "n1", "127.0.0.1", 0)
        h = read_ha_event(e2, events.HA_INFO_BESECONDARY_RESULT)
        self.assertEqual(h["besecondary_result"], error.ERR_HA_BADTOKEN)

    def test_secondary_died_when_a_secondary_leaves(self):
        e1 = self.ev(self.n1)
        ha.beprimary(self.h1, "n1")
        ha.besecondary(self.h2, "n2", "n1", "127.0.0.1", 1)
        read_ha_event(e1, events.HA_INFO_SECONDARY_ARRIVED)
        ha.benone(self.h2)
        died = read_ha_event(e1, events.HA_INFO_SECONDARY_DIED)
        self.assertEqual(died["secondary_died"]["nodeid"], "n2")
        self.assertEqual(died["secondary_died"]["nodeid"], Value("n2"))
        self.assertEqual(died["secondary_died"]["nodeid"].confd_type(), C_BUF)
        self.assertEqual(died["slave_died"], died["secondary_died"])

    def test_secondary_dead_emits_nothing_for_that_node(self):
        # As ConfD 6.6: the HA framework declared it dead, so no event for it.
        e1 = self.ev(self.n1)
        ha.beprimary(self.h1, "n1")
        ha.besecondary(self.h2, "n2", "n1", "127.0.0.1", 1)
        read_ha_event(e1, events.HA_INFO_SECONDARY_ARRIVED)
        ha.secondary_dead(self.h1, "n2")
        ha.benone(self.h1)
        self.assertEqual(read_event(e1), {"type": events.NOTIF_HA_INFO,
                                          "hnot": {"type": events.HA_INFO_IS_NONE}})

    def test_sync_ha_notification(self):
        e = self.ev(self.n1, events.NOTIF_HA_INFO | events.NOTIF_HA_INFO_SYNC)
        ha.beprimary(self.h1, "n1")
        read_ha_event(e, events.HA_INFO_IS_PRIMARY)
        self.assertIsNone(events.sync_ha_notification(e))
        ha.benone(self.h1)  # would wait for an ack forever without the one above
        read_ha_event(e, events.HA_INFO_IS_NONE)
        events.sync_ha_notification(e)

    def test_heartbeat_with_connect2(self):
        s = self.n1.tcp_socket()
        self.addCleanup(s.close)
        data = events.NotificationsData(heartbeat_interval=1000)
        events.notifications_connect2(s, events.NOTIF_HEARTBEAT, data,
                                      ip="127.0.0.1", port=self.n1.ipc_port)
        self.assertEqual(read_event(s), {"type": events.NOTIF_HEARTBEAT})

    def test_connect_refused(self):
        s = socket.socket()
        self.addCleanup(s.close)
        with self.assertRaises(Error) as cm:
            events.notifications_connect(s, events.NOTIF_HA_INFO, ip="127.0.0.1",
                                         port=support.free_port())
        self.assertEqual(cm.exception.confd_errno, error.ERR_OS)

    def test_read_on_unconnected_socket(self):
        s = socket.socket()
        self.addCleanup(s.close)
        with self.assertRaises(Error) as cm:
            events.read_notification(s)
        self.assertEqual(cm.exception.confd_errno, error.ERR_OS)
        self.assertTrue(cm.exception.lasterr)

    def test_empty_mask_is_refused(self):
        s = self.n1.tcp_socket()
        self.addCleanup(s.close)
        with self.assertRaises(Error) as cm:
            events.notifications_connect(s, 0, ip="127.0.0.1", port=self.n1.ipc_port)
        self.assertEqual(cm.exception.confd_errno, error.ERR_PROTOUSAGE)
        self.assertIn("mask", cm.exception.lasterr)

    def test_argument_errors(self):
        s = socket.socket()
        self.addCleanup(s.close)
        with self.assertRaisesRegex(ValueError, "needs ip and port"):
            events.notifications_connect(s, events.NOTIF_HA_INFO)
        with self.assertRaises(TypeError):
            events.notifications_connect2(s, events.NOTIF_HEARTBEAT, {"heartbeat_interval": 1})
        with self.assertRaises(NotImplementedError):
            events.NotificationsData(start_time=1)


@needs_events
class EventsEofTest(unittest.TestCase):
    def test_read_eof_when_node_stops(self):
        support.require_prerequisites()
        c = support.Cluster(self.addCleanup, "events-eof")
        n = c.add("n6", "127.0.0.6", support.free_port("127.0.0.6"), unix=False)
        c.wait_ready()
        s = n.events(events.NOTIF_HA_INFO)
        self.addCleanup(s.close)
        n.stop()
        with self.assertRaises(Error) as cm:
            read_event(s)
        self.assertEqual(cm.exception.confd_errno, error.ERR_EOF)
        self.assertEqual(cm.exception.function, "confd_read_notification")

    def test_sync_after_node_stops(self):
        support.require_prerequisites()
        c = support.Cluster(self.addCleanup, "sync-eof")
        n = c.add("n8", "127.0.0.8", support.free_port("127.0.0.8"), unix=False)
        c.wait_ready()
        s = n.events(events.NOTIF_HA_INFO | events.NOTIF_HA_INFO_SYNC)
        self.addCleanup(s.close)
        n.stop()
        # the first write may still be accepted by the kernel; a later one fails
        deadline = time.monotonic() + 10
        with self.assertRaises(Error) as cm:
            while time.monotonic() < deadline:
                events.sync_ha_notification(s)
        self.assertEqual(cm.exception.confd_errno, error.ERR_EOF)
        self.assertEqual(cm.exception.function, "confd_sync_ha_notification")


class EventsAvailabilityTest(unittest.TestCase):
    def test_available_matches_library(self):
        support.require_prerequisites()
        from confd_ha import _lib

        self.assertEqual(events.available(), all(_lib.has(n) for n in _lib.EVENTS_FUNCTIONS))
        if not events.available():
            with socket.socket() as s, \
                    self.assertRaisesRegex(NotImplementedError, "confd_notifications_connect"):
                events.notifications_connect(s, 64, ip="127.0.0.1", port=1)


if __name__ == "__main__":
    unittest.main()
