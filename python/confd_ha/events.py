"""HA event notifications: the HA parts of NSO's ``_ncs.events`` (spec F.2)
over ``confd_notifications_connect`` / ``confd_read_notification`` /
``confd_sync_ha_notification`` of libconfd_ha.

::

    import socket
    from confd_ha import events

    s = socket.socket()
    events.notifications_connect(s, events.NOTIF_HA_INFO, ip="127.0.0.1", port=4565)
    n = events.read_notification(s)     # blocks until the next event
    # {'type': 64, 'hnot': {'type': events.HA_INFO_IS_PRIMARY}}

``read_notification`` returns a dict shaped like NSO's: ``'type'`` is the
notification flag; for NOTIF_HA_INFO, ``'hnot'`` holds ``'type'`` (an
HA_INFO_* number) and, by type, ``'noprimary'`` (+ ``'nomaster'``),
``'secondary_died'`` / ``'secondary_arrived'`` (+ ``'slave_died'`` /
``'slave_arrived'``), ``'cdb_initialized_by_copy'``, ``'besecondary_result'``
(+ ``'beslave_result'``). Node dicts have ``'nodeid'`` (a
:class:`confd_ha.value.Value`, as NSO gives it; a C_BUF node id also
compares equal to its ``str``), ``'af'`` and ``'ip4'`` / ``'ip6'`` / ``'str'``.
Every dict also has ``'_notif'``, as NSO's: an opaque :class:`Notification`
(the flag and the HA data) for code that passes it on.

A socket subscribed with NOTIF_HA_INFO_SYNC must call ``sync_ha_notification``
after each HA event: the node holds HA processing until it does.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional

from . import _lib, _types
from .value import C_NOEXISTS, Value

# enum confd_notification_type
NOTIF_AUDIT = 1 << 0
NOTIF_DAEMON = 1 << 1
NOTIF_SYSLOG = NOTIF_DAEMON
NOTIF_TAKEOVER_SYSLOG = 1 << 2
NOTIF_SYSLOG_TAKEOVER = NOTIF_DAEMON | NOTIF_TAKEOVER_SYSLOG
NOTIF_COMMIT_SIMPLE = 1 << 3
NOTIF_COMMIT_DIFF = 1 << 4
NOTIF_USER_SESSION = 1 << 5
NOTIF_HA_INFO = 1 << 6
NOTIF_SUBAGENT_INFO = 1 << 7
NOTIF_COMMIT_FAILED = 1 << 8
NOTIF_SNMPA = 1 << 9
NOTIF_FORWARD_INFO = 1 << 10
NOTIF_NETCONF = 1 << 11
NOTIF_DEVEL = 1 << 12
NOTIF_HEARTBEAT = 1 << 13
NOTIF_CONFIRMED_COMMIT = 1 << 14
NOTIF_UPGRADE_EVENT = 1 << 15
NOTIF_COMMIT_PROGRESS = 1 << 16
NOTIF_AUDIT_SYNC = 1 << 17
NOTIF_HEALTH_CHECK = 1 << 18
NOTIF_STREAM_EVENT = 1 << 19
NOTIF_HA_INFO_SYNC = 1 << 20
NOTIF_PACKAGE_RELOAD = 1 << 21
NOTIF_CQ_PROGRESS = 1 << 22
NOTIF_REOPEN_LOGS = 1 << 23
NOTIF_PROGRESS = 1 << 24
NOTIF_CALL_HOME_INFO = 1 << 25
NOTIF_JSONRPC = 1 << 26
NOTIF_WEBUI = 1 << 27
NOTIF_AUDIT_NETWORK = 1 << 28
NOTIF_AUDIT_NETWORK_SYNC = 1 << 29
NOTIF_COMPACTION = 1 << 30
NOTIF_SYSTEM_GOING_DOWN = 1 << 31

# enum confd_ha_info_type
HA_INFO_NOPRIMARY = 1
HA_INFO_SECONDARY_DIED = 2
HA_INFO_SECONDARY_ARRIVED = 3
HA_INFO_SECONDARY_INITIALIZED = 4
HA_INFO_IS_PRIMARY = 5
HA_INFO_IS_NONE = 6
HA_INFO_BESECONDARY_RESULT = 7
# deprecated aliases
HA_INFO_NOMASTER = 1
HA_INFO_SLAVE_DIED = 2
HA_INFO_SLAVE_ARRIVED = 3
HA_INFO_SLAVE_INITIALIZED = 4
HA_INFO_IS_MASTER = 5
HA_INFO_BESLAVE_RESULT = 7

# enum confd_progress_verbosity
PROGRESS_NORMAL = 0
PROGRESS_VERBOSE = 1
PROGRESS_VERY_VERBOSE = 2
PROGRESS_DEBUG = 3


def _no_time(v: Any) -> bool:
    return v is None or (isinstance(v, Value) and v.confd_type() == C_NOEXISTS)


class Notification:
    """The ``'_notif'`` entry of a ``read_notification`` dict: the
    notification flag (``type``) and, for HA events, the ``hnot`` dict."""

    __slots__ = ("type", "hnot")

    def __init__(self, type: int, hnot: Optional[Dict[str, Any]] = None) -> None:  # noqa: A002
        self.type = type
        self.hnot = hnot

    def __repr__(self) -> str:
        return "Notification(type=%d, hnot=%r)" % (self.type, self.hnot)


class NotificationsData:
    """Arguments of ``notifications_connect2`` (as NSO's class of the same
    name). Only the intervals are used by HA and heartbeat subscriptions;
    ``start_time`` / ``stop_time`` are "no time": None or, as NSO's examples
    pass them, ``Value(None, C_NOEXISTS)`` (stream replay is not supported)."""

    def __init__(
        self,
        heartbeat_interval: int = 0,
        health_check_interval: int = 0,
        stream_name: Optional[str] = None,
        start_time: Any = None,
        stop_time: Any = None,
        xpath_filter: Optional[str] = None,
        usid: int = 0,
        verbosity: int = PROGRESS_NORMAL,
    ) -> None:
        if not (_no_time(start_time) and _no_time(stop_time)):
            raise NotImplementedError(
                "start_time/stop_time (stream replay) are not supported: "
                "pass None or Value(None, C_NOEXISTS)"
            )
        self.start_time = Value(None, C_NOEXISTS)
        self.stop_time = Value(None, C_NOEXISTS)
        self.heartbeat_interval = int(heartbeat_interval)
        self.health_check_interval = int(health_check_interval)
        self.stream_name = stream_name
        self.xpath_filter = xpath_filter
        self.usid = int(usid)
        self.verbosity = int(verbosity)

    def _to_c(self) -> _types.NotificationsData:
        d = _types.NotificationsData()
        d.heartbeat_interval = self.heartbeat_interval
        d.health_check_interval = self.health_check_interval
        d.stream_name = (
            _types.c_string(self.stream_name, "stream_name") if self.stream_name else None
        )
        d.start_time.type = _types.C_NOEXISTS
        d.stop_time.type = _types.C_NOEXISTS
        d.xpath_filter = (
            _types.c_string(self.xpath_filter, "xpath_filter") if self.xpath_filter else None
        )
        d.usid = self.usid
        d.verbosity = self.verbosity
        return d


def notifications_connect(
    sock: Any, mask: int, ip: Any = None, port: Any = None, path: Any = None
) -> None:
    """Connects ``sock`` as a notification socket subscribed to ``mask``
    (NOTIF_* bits). AF_INET/AF_INET6 need ``ip`` and ``port``; AF_UNIX needs
    ``path``. On failure close the socket and make a new one."""
    fd = _types.fileno(sock)
    _types.require_blocking(sock)
    m = _types.signed32(mask)
    addr, size = _types.sockaddr(_types.family_of(sock), ip, port, path)
    _lib.fn("confd_notifications_connect")(fd, addr, size, m)


def notifications_connect2(
    sock: Any,
    mask: int,
    data: NotificationsData,
    ip: Any = None,
    port: Any = None,
    path: Any = None,
) -> None:
    """As ``notifications_connect`` with extra parameters (needed for
    NOTIF_HEARTBEAT and NOTIF_HEALTH_CHECK intervals, in ms)."""
    if not isinstance(data, NotificationsData):
        raise TypeError("data must be a NotificationsData")
    fd = _types.fileno(sock)
    _types.require_blocking(sock)
    m = _types.signed32(mask)
    addr, size = _types.sockaddr(_types.family_of(sock), ip, port, path)
    cdata = data._to_c()
    _lib.fn("confd_notifications_connect2")(fd, addr, size, m, ctypes.byref(cdata))


def _ha_dict(h: _types.HaNotification) -> Dict[str, Any]:
    t = int(h.type)
    d: Dict[str, Any] = {"type": t}
    if t == HA_INFO_NOPRIMARY:
        d["noprimary"] = d["nomaster"] = int(h.data.noprimary)
    elif t == HA_INFO_SECONDARY_DIED:
        d["secondary_died"] = _types.node_dict(h.data.secondary_died)
        d["slave_died"] = dict(d["secondary_died"])
    elif t == HA_INFO_SECONDARY_ARRIVED:
        d["secondary_arrived"] = _types.node_dict(h.data.secondary_arrived)
        d["slave_arrived"] = dict(d["secondary_arrived"])
    elif t == HA_INFO_SECONDARY_INITIALIZED:
        d["cdb_initialized_by_copy"] = int(h.data.cdb_initialized_by_copy)
    elif t == HA_INFO_BESECONDARY_RESULT:
        d["besecondary_result"] = d["beslave_result"] = int(h.data.besecondary_result)
    return d


def read_notification(sock: Any) -> Dict[str, Any]:
    """Blocks until the next event on ``sock`` and returns it as a dict (see
    the module doc). Raises Error with ERR_EOF when the node closed the socket."""
    fd = _types.fileno(sock)
    storage = _types.NotificationStorage()
    _lib.fn("confd_read_notification")(fd, ctypes.byref(storage))
    try:
        head = _types.NotificationHead.from_buffer(storage)
        t = int(head.type) & 0xFFFFFFFF
        n: Dict[str, Any] = {"type": t}
        if t == NOTIF_HA_INFO:
            n["hnot"] = _ha_dict(head.hnot)
        n["_notif"] = Notification(t, n.get("hnot"))
        return n
    finally:
        lib = _lib.library()
        if lib.has("confd_free_notification"):
            lib.fn("confd_free_notification")(ctypes.byref(storage))


def sync_ha_notification(sock: Any) -> None:
    """Acknowledges an HA event on a NOTIF_HA_INFO_SYNC socket."""
    _lib.fn("confd_sync_ha_notification")(_types.fileno(sock))


def available() -> bool:
    """Whether the loaded library has the notification functions."""
    return all(_lib.has(n) for n in _lib.EVENTS_FUNCTIONS)
