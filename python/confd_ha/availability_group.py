"""An availability-group API in the shape BlueCat Gateway gives its workflows:
``get_node_state()`` and ``subscribe(event_id, callback)`` / ``unsubscribe``.

::

    from confd_ha import availability_group as ag

    def on_role(event, **kwargs):
        print("role", event.previous, "->", event.new)

    sid = ag.subscribe(ag.EventId.NODE_ROLE_CHANGED, on_role)
    ...
    ag.unsubscribe(sid)

Which node: without arguments the local node found from the environment the
way NSO's libraries find it -- ``NCS_IPC_PATH`` (a Unix socket) wins; else
``NCS_IPC_ADDR`` / ``NCS_IPC_PORT`` (port default 4569); else
``CONFD_IPC_ADDR`` / ``CONFD_IPC_PORT``; else ConfD's 127.0.0.1:4565. Every
function also takes ``address=`` / ``port=`` or ``path=`` explicitly.

Threading and ordering: each subscription has its own notification socket
and its own daemon thread; its callbacks run on that thread, one at a time, in
the order the node sent the events. A callback that raises is logged (logger
``confd_ha.availability_group``) and the subscription goes on. ``unsubscribe``
wakes the thread and joins it, so no callback of that subscription runs after
``unsubscribe`` returns; called from inside the subscription's own callback it
returns at once and no further callback runs. If the node closes the socket
the subscription ends (logged; ``subscription_error(sid)`` tells why).

Roles come from the HA events themselves: IS_PRIMARY -> PRIMARY; IS_NONE,
NOPRIMARY and a failed BESECONDARY_RESULT -> NONE; SECONDARY_INITIALIZED and a
successful BESECONDARY_RESULT -> SECONDARY. (``berelay`` produces no HA event,
so RELAY is seen only through ``get_node_state``.) The role before the first
event is taken from ``get_node_state()`` when the library offers it, else it is
unknown and the first change reports ``previous=None``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import itertools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from . import _lib, events
from .error import ERR_EOF, Error

__all__ = [
    "NodeRole", "EventId", "NodeState", "Peer", "NodeRoleChangedEvent", "HaInfoEvent",
    "get_node_state", "subscribe", "unsubscribe", "subscription_error", "local_endpoint",
]

log = logging.getLogger("confd_ha.availability_group")

CONFD_PORT = 4565
NCS_PORT = 4569


class NodeRole(str, enum.Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    RELAY = "relay"
    NONE = "none"

    @classmethod
    def from_state(cls, state: int) -> "NodeRole":
        """From a confd_ha_status_state number (STATE_NONE .. STATE_SECONDARY_RELAY)."""
        return {1: cls.NONE, 2: cls.SECONDARY, 3: cls.PRIMARY, 4: cls.RELAY}[int(state)]


class EventId(str, enum.Enum):
    NODE_ROLE_CHANGED = "node_role_changed"
    #: every HA_INFO event as it comes (an :class:`HaInfoEvent`)
    HA_INFO = "ha_info"


@dataclass(frozen=True)
class Peer:
    node_id: str
    address: str
    last_heartbeat_time: Optional[_dt.datetime] = None


@dataclass(frozen=True)
class NodeState:
    node_role: NodeRole
    node_id: Optional[str]
    primary: Optional[Peer]
    secondaries: Tuple[Peer, ...]
    last_txid: str
    last_seq: int
    #: last tick from the primary (on a secondary), the latest from any
    #: secondary (on a primary); None if none yet or ticks are off
    last_heartbeat_time: Optional[_dt.datetime]


@dataclass(frozen=True)
class NodeRoleChangedEvent:
    previous: Optional[NodeRole]
    new: NodeRole
    #: the HA_INFO event (as ``events.read_notification()['hnot']``) that changed it
    ha_info: Dict[str, Any] = field(default_factory=dict)
    time: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    event_id: EventId = EventId.NODE_ROLE_CHANGED


@dataclass(frozen=True)
class HaInfoEvent:
    type: int
    data: Dict[str, Any]
    time: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    event_id: EventId = EventId.HA_INFO


# --------------------------------------------------------------------------
# which node


@dataclass(frozen=True)
class Endpoint:
    family: int
    ip: Optional[str] = None
    port: Optional[int] = None
    path: Optional[str] = None

    def socket(self) -> socket.socket:
        return socket.socket(self.family, socket.SOCK_STREAM)

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        if self.family == socket.AF_INET6:
            return "[%s]:%s" % (self.ip, self.port)
        return "%s:%s" % (self.ip, self.port)


def _tcp(address: str, port: Any) -> Endpoint:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise ValueError("invalid port %r" % (port,)) from None
    host = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host.split("%", 1)[0])
            return Endpoint(fam, host, p)
        except OSError:
            pass
    infos = socket.getaddrinfo(host, p, 0, socket.SOCK_STREAM)
    fam, _, _, _, sa = infos[0]
    return Endpoint(fam, sa[0], p)


def local_endpoint(
    address: Optional[str] = None, port: Any = None, path: Optional[str] = None
) -> Endpoint:
    """The node to talk to: explicit arguments, else the environment (see the
    module doc), else 127.0.0.1:4565."""
    if path is not None:
        return Endpoint(socket.AF_UNIX, path=os.fspath(path))
    if address is not None or port is not None:
        return _tcp(address or "127.0.0.1", CONFD_PORT if port is None else port)
    env = {k: v for k, v in os.environ.items() if v}
    if "NCS_IPC_PATH" in env:
        return Endpoint(socket.AF_UNIX, path=env["NCS_IPC_PATH"])
    if "NCS_IPC_ADDR" in env or "NCS_IPC_PORT" in env:
        return _tcp(env.get("NCS_IPC_ADDR", "127.0.0.1"), env.get("NCS_IPC_PORT", NCS_PORT))
    return _tcp(env.get("CONFD_IPC_ADDR", "127.0.0.1"), env.get("CONFD_IPC_PORT", CONFD_PORT))


# --------------------------------------------------------------------------
# node state


def get_node_state(
    *, address: Optional[str] = None, port: Any = None, path: Optional[str] = None
) -> NodeState:
    """The node's role, id, primary, secondaries, last transaction id and
    last heartbeat time. Needs the library's ``cha_node_state()``."""
    ep = local_endpoint(address, port, path)
    if not _lib.has("cha_node_state"):
        raise NotImplementedError(
            "get_node_state() needs cha_node_state() from libconfd_ha (the "
            "availability-group C API), which this build of the library lacks"
        )
    return _cha_node_state(ep)  # pragma: no cover - bound when the C API lands


def _cha_node_state(ep: Endpoint) -> NodeState:  # pragma: no cover
    raise NotImplementedError(
        "cha_node_state() is exported but its binding is not written yet"
    )


def _ms_to_datetime(ms: Optional[int]) -> Optional[_dt.datetime]:
    if ms is None or ms < 0:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


# --------------------------------------------------------------------------
# subscriptions


def role_after(hnot: Dict[str, Any]) -> Optional[NodeRole]:
    """The role an HA_INFO event (``read_notification()['hnot']``) puts the
    node in, or None if it says nothing about the role."""
    t = hnot.get("type")
    if t == events.HA_INFO_IS_PRIMARY:
        return NodeRole.PRIMARY
    if t in (events.HA_INFO_IS_NONE, events.HA_INFO_NOPRIMARY):
        return NodeRole.NONE
    if t == events.HA_INFO_SECONDARY_INITIALIZED:
        return NodeRole.SECONDARY
    if t == events.HA_INFO_BESECONDARY_RESULT:
        return NodeRole.SECONDARY if hnot.get("besecondary_result") == 0 else NodeRole.NONE
    return None


class _Subscription:
    def __init__(self, sid: int, event_id: EventId, callback: Callable[..., Any], ep: Endpoint):
        self.sid = sid
        self.event_id = event_id
        self.callback = callback
        self.endpoint = ep
        self.error: Optional[BaseException] = None
        self.role: Optional[NodeRole] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards shutdown vs close of the socket
        self._sock: Optional[socket.socket] = ep.socket()
        try:
            events.notifications_connect(
                self._sock, events.NOTIF_HA_INFO, ip=ep.ip, port=ep.port, path=ep.path
            )
        except BaseException:
            self._sock.close()
            raise
        if event_id == EventId.NODE_ROLE_CHANGED and _lib.has("cha_node_state"):
            try:
                self.role = get_node_state(address=ep.ip, port=ep.port, path=ep.path).node_role
            except (Error, NotImplementedError) as e:
                log.debug("subscription %d: initial role unknown: %s", sid, e)
        self._thread = threading.Thread(
            target=self._run, name="confd_ha-subscription-%d" % sid, daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    n = events.read_notification(self._sock)
                except Error as e:
                    if not self._stopping.is_set():
                        self.error = e
                        if e.confd_errno == ERR_EOF:
                            log.warning("subscription %d: node %s closed the event socket",
                                        self.sid, self.endpoint)
                        else:
                            log.error("subscription %d ended: %s", self.sid, e)
                    return
                hnot = n.get("hnot")
                if hnot is not None:
                    self._dispatch(hnot)
        finally:
            with self._lock:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None

    def _dispatch(self, hnot: Dict[str, Any]) -> None:
        if self.event_id == EventId.HA_INFO:
            self._call(HaInfoEvent(type=hnot["type"], data=hnot))
            return
        new = role_after(hnot)
        if new is None or new == self.role:
            return
        previous, self.role = self.role, new
        self._call(NodeRoleChangedEvent(previous=previous, new=new, ha_info=hnot))

    def _call(self, event: Any) -> None:
        if self._stopping.is_set():
            return
        try:
            self.callback(event, subscription_id=self.sid)
        except Exception:
            log.exception("subscription %d: callback %r raised", self.sid, self.callback)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._sock is not None:
                try:
                    # wakes the reader blocked in confd_read_notification()
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if threading.current_thread() is not self._thread:
            self._thread.join()


_subs_lock = threading.Lock()
_subs: Dict[int, _Subscription] = {}
_ids = itertools.count(1)


def subscribe(
    event_id: EventId,
    callback: Callable[..., Any],
    *,
    address: Optional[str] = None,
    port: Any = None,
    path: Optional[str] = None,
) -> int:
    """Calls ``callback(event, subscription_id=...)`` on a library-owned thread
    for each event of ``event_id``. For NODE_ROLE_CHANGED the event has
    ``previous`` and ``new`` (NodeRole; ``previous`` None if unknown). Returns
    the subscription id for :func:`unsubscribe`. The subscription is in place
    when this returns: every later event reaches it."""
    eid = EventId(event_id)
    if not callable(callback):
        raise TypeError("callback must be callable")
    ep = local_endpoint(address, port, path)
    sid = next(_ids)
    sub = _Subscription(sid, eid, callback, ep)
    with _subs_lock:
        _subs[sid] = sub
    return sid


def unsubscribe(subscription_id: int) -> None:
    """Ends a subscription: when this returns no callback of it runs any more
    (from inside its own callback: no further callback runs). KeyError for an
    unknown id."""
    with _subs_lock:
        sub = _subs.pop(subscription_id, None)
    if sub is None:
        raise KeyError("no subscription %r" % (subscription_id,))
    sub.stop()


def subscription_error(subscription_id: int) -> Optional[BaseException]:
    """Why a subscription's thread ended on its own (None while it runs)."""
    with _subs_lock:
        sub = _subs.get(subscription_id)
    if sub is None:
        raise KeyError("no subscription %r" % (subscription_id,))
    return sub.error
