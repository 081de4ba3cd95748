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

Threading and ordering: each subscription has its own connection to the
node and its own thread; its callbacks run on that thread, one at a time, in
the order the node sent the events. A callback that raises is logged (logger
``confd_ha.availability_group``) and the subscription goes on.
``unsubscribe`` stops the thread and joins it, so no callback of that
subscription runs after ``unsubscribe`` returns; called from inside the
subscription's own callback it returns at once and no further callback runs.
Subscriptions still open at interpreter exit are ended by an atexit hook.

Two engines give the same events:

* When the library has the availability-group C API (``cha_subscribe``), the
  library runs the subscription: after each HA event it reads the node state,
  so roles are exact (RELAY included), the role before the first event is
  known, and two quick changes may be reported as one (first role to last).
* Otherwise the package runs it in Python over ``confd_ha.events`` and
  derives roles from the HA events: IS_PRIMARY -> PRIMARY; IS_NONE, NOPRIMARY
  and a failed BESECONDARY_RESULT -> NONE; SECONDARY_INITIALIZED and a
  successful BESECONDARY_RESULT -> SECONDARY (``berelay`` has no event of its
  own). The role before the first event comes from ``get_node_state()`` when
  available, else the first change reports ``previous=None``. If the node
  closes the socket the subscription ends (logged; ``subscription_error(sid)``
  tells why).
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import datetime as _dt
import enum
import itertools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from . import _lib, _types, events
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

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_state(cls, state: int) -> "NodeRole":
        """From a confd_ha_status_state number (STATE_NONE .. STATE_SECONDARY_RELAY)."""
        return {1: cls.NONE, 2: cls.SECONDARY, 3: cls.PRIMARY, 4: cls.RELAY}[int(state)]


class EventId(str, enum.Enum):
    NODE_ROLE_CHANGED = "node_role_changed"
    #: every HA_INFO event as it comes (an :class:`HaInfoEvent`)
    HA_INFO = "ha_info"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Peer:
    node_id: str
    address: str
    last_heartbeat_time: Optional[_dt.datetime] = None
    #: a secondary of this node (primary or relay): its replication progress,
    #: from ``cha_node_health_get()`` (None for a primary, or when the library
    #: or the node does not report it)
    acked_seq: Optional[int] = None
    #: this node's seq minus ``acked_seq``
    lag_txns: Optional[int] = None
    #: age in ms of the oldest transaction sent to it and not acknowledged
    #: (0 when caught up; during a full copy, since the copy began)
    lag_ms: Optional[int] = None
    #: ``"copying"`` or ``"in-sync"``
    state: Optional[str] = None
    #: full copies sent to this node id since the serving node started
    full_copies: Optional[int] = None
    #: re-joins of this node id served by a catch-up (only the missed transactions)
    catch_ups: Optional[int] = None


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
    #: on a secondary: when its last transaction (or full copy) from the
    #: primary was applied; None otherwise or when not reported
    last_txn_time: Optional[_dt.datetime] = None


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

    def sockaddr(self):
        """(struct sockaddr buffer, size) for the C API."""
        return _types.sockaddr(self.family, self.ip, self.port, self.path)

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
    last heartbeat time, through the library's ``cha_node_state_get()``
    (NotImplementedError if this build of the library lacks it)."""
    ep = local_endpoint(address, port, path)
    if not _lib.has("cha_node_state_get"):
        raise NotImplementedError(
            "get_node_state() needs cha_node_state_get() from libconfd_ha (the "
            "availability-group C API), which this build of the library lacks"
        )
    sa, size = ep.sockaddr()
    out = _types.ChaNodeState()
    _lib.fn("cha_node_state_get")(sa, size, ctypes.byref(out))
    st = _node_state(out)
    if _lib.has("cha_node_health_get"):
        h = _types.ChaNodeHealth()
        h.size = ctypes.sizeof(h)
        try:
            _lib.fn("cha_node_health_get")(sa, size, ctypes.byref(h))
        except Exception:  # an older ha-node reports no lag: the state stands without it
            return st
        st = _with_health(st, h)
    return st


def _with_health(st: NodeState, h: _types.ChaNodeHealth) -> NodeState:
    n = max(0, min(int(h.num_secondaries), _types.CHA_MAX_SECONDARIES))
    lag = {}
    for i in range(n):
        e = h.secondaries[i]
        lag[(_text(e.peer.id), _text(e.peer.address))] = dict(
            acked_seq=int(e.acked_seq),
            lag_txns=int(e.lag_txns),
            lag_ms=int(e.lag_ms),
            state="copying" if e.copy_state == _types.CHA_COPY_COPYING else "in-sync",
            full_copies=int(e.full_copies),
            catch_ups=int(e.catch_ups),
        )
    secondaries = tuple(
        dataclasses.replace(p, **lag[(p.node_id, p.address)])
        if (p.node_id, p.address) in lag else p
        for p in st.secondaries
    )
    return dataclasses.replace(
        st, secondaries=secondaries, last_txn_time=_ms_to_datetime(int(h.last_txn_ms))
    )


def _text(b: bytes) -> str:
    return _types.decode_text(b)


def _peer(p: _types.ChaPeer) -> Peer:
    return Peer(
        node_id=_text(p.id),
        address=_text(p.address),
        last_heartbeat_time=_ms_to_datetime(p.last_tick_ms),
    )


def _node_state(st: _types.ChaNodeState) -> NodeState:
    n = max(0, min(int(st.num_secondaries), _types.CHA_MAX_SECONDARIES))
    primary = _peer(st.primary) if st.has_primary else None
    secondaries = tuple(_peer(st.secondaries[i]) for i in range(n))
    if primary is not None:
        heartbeat = primary.last_heartbeat_time
    else:
        ticks = [p.last_heartbeat_time for p in secondaries if p.last_heartbeat_time]
        heartbeat = max(ticks) if ticks else None
    return NodeState(
        node_role=NodeRole.from_state(st.role),
        node_id=_text(st.node_id) or None,
        primary=primary,
        secondaries=secondaries,
        last_txid=_text(st.txid),
        last_seq=int(st.seq),
        last_heartbeat_time=heartbeat,
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


class _PySubscription:
    """A subscription run in Python over confd_ha.events (used when the
    library has no cha_subscribe()): one notification socket, one thread."""

    def __init__(self, sid: int, event_id: EventId, callback: Callable[..., Any], ep: Endpoint):
        self.sid = sid
        self.event_id = event_id
        self.callback = callback
        self.endpoint = ep
        self.error: Optional[BaseException] = None
        self.role: Optional[NodeRole] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards shutdown vs close of the socket
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        ep, sid, event_id = self.endpoint, self.sid, self.event_id
        self._sock = ep.socket()
        try:
            events.notifications_connect(
                self._sock, events.NOTIF_HA_INFO, ip=ep.ip, port=ep.port, path=ep.path
            )
        except BaseException:
            self._sock.close()
            self._sock = None
            raise
        if event_id == EventId.NODE_ROLE_CHANGED and _lib.has("cha_node_state_get"):
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
        t = self._thread
        if t is not None and threading.current_thread() is not t:
            t.join()


# cha_event.type
_CHA_EVENT_ROLE_CHANGED = 1
_CHA_EVENT_HA_INFO = 2
_CHA_EVENT_CLOSED = 8

# Trampolines of subscriptions ended from inside their own callback: the C
# thread is still running in them when unsubscribe returns, and nothing tells
# when it has left, so they are kept (a few hundred bytes each).
_retired_trampolines: list = []


def _hnot_from_cha(ev: _types.ChaEvent) -> Dict[str, Any]:
    """An HA_INFO cha_event as events.read_notification()['hnot'] shapes it."""
    t = int(ev.ha_info_type)
    v = int(ev.ha_info_value)
    d: Dict[str, Any] = {"type": t}
    if t == events.HA_INFO_NOPRIMARY:
        d["noprimary"] = d["nomaster"] = v
    elif t in (events.HA_INFO_SECONDARY_DIED, events.HA_INFO_SECONDARY_ARRIVED):
        node = {"nodeid": _text(ev.ha_info_node.id)}
        node.update(_types.address_dict(_text(ev.ha_info_node.address)))
        if t == events.HA_INFO_SECONDARY_DIED:
            d["secondary_died"], d["slave_died"] = node, dict(node)
        else:
            d["secondary_arrived"], d["slave_arrived"] = node, dict(node)
    elif t == events.HA_INFO_SECONDARY_INITIALIZED:
        d["cdb_initialized_by_copy"] = v
    elif t == events.HA_INFO_BESECONDARY_RESULT:
        d["besecondary_result"] = d["beslave_result"] = v
    return d


class _CSubscription:
    """A subscription run by the library (cha_subscribe): its thread, role
    tracking through the node state (relays included), its unsubscribe
    guarantee. The callback arrives through a ctypes trampoline."""

    def __init__(self, sid: int, event_id: EventId, callback: Callable[..., Any], ep: Endpoint):
        self.sid = sid
        self.event_id = event_id
        self.callback = callback
        self.endpoint = ep
        self.error: Optional[BaseException] = None
        self._stopping = threading.Event()
        self._in_callback = threading.local()
        self._trampoline = _types.CHA_EVENT_CB(self._on_event)
        self._lock = threading.Lock()  # guards _handle
        self._handle: Optional[int] = None

    def start(self) -> None:
        mask = _CHA_EVENT_HA_INFO if self.event_id == EventId.HA_INFO else _CHA_EVENT_ROLE_CHANGED
        sa, size = self.endpoint.sockaddr()
        handle = ctypes.c_void_p()
        _lib.fn("cha_subscribe")(
            sa, size, mask, 0, ctypes.cast(self._trampoline, ctypes.c_void_p), None,
            ctypes.byref(handle),
        )
        with self._lock:
            if not self._stopping.is_set():
                self._handle = handle.value
                return
        # unsubscribed from a callback that ran before cha_subscribe returned:
        # end it here (joins the library's thread once that callback is done)
        _lib.fn("cha_unsubscribe")(handle.value)

    def _on_event(self, ev_ptr, _user_data) -> None:
        # Runs on the library's thread; must never raise into C.
        try:
            if self._stopping.is_set() or not ev_ptr:
                return
            ev = ev_ptr.contents
            if ev.type == _CHA_EVENT_ROLE_CHANGED:
                event: Any = NodeRoleChangedEvent(
                    previous=NodeRole.from_state(ev.previous_role),
                    new=NodeRole.from_state(ev.new_role),
                )
            elif ev.type == _CHA_EVENT_HA_INFO:
                hnot = _hnot_from_cha(ev)
                event = HaInfoEvent(type=hnot["type"], data=hnot)
            elif ev.type == _CHA_EVENT_CLOSED:
                # The library lost the node: the subscription has ended.
                self.error = Error(ev.closed_errno, function="cha_subscribe")
                log.warning("subscription %d: lost node %s (%s)", self.sid, self.endpoint,
                            self.error.strerror)
                return
            else:
                return
            self._in_callback.active = True
            try:
                self.callback(event, subscription_id=self.sid)
            finally:
                self._in_callback.active = False
        except Exception:
            log.exception("subscription %d: callback %r raised", self.sid, self.callback)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            handle, self._handle = self._handle, None
        inside = getattr(self._in_callback, "active", False)
        if inside:
            _retired_trampolines.append(self._trampoline)
        if handle is None:
            return  # not started, or start() ends it (see there)
        # From another thread this joins the library's thread (the GIL is
        # released during the call, so a running callback can finish).
        _lib.fn("cha_unsubscribe")(handle)


_subs_lock = threading.Lock()
_subs: Dict[int, Any] = {}

#: use the library's cha_subscribe() when it has one (tests turn this off to
#: exercise the Python implementation against a real node too)
use_library_subscriptions = True
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
    if use_library_subscriptions and _lib.has("cha_subscribe") and _lib.has("cha_unsubscribe"):
        sub: Any = _CSubscription(sid, eid, callback, ep)
    else:
        sub = _PySubscription(sid, eid, callback, ep)
    # registered before it starts: a callback may unsubscribe(sid) at once
    with _subs_lock:
        _subs[sid] = sub
    try:
        sub.start()
    except BaseException:
        with _subs_lock:
            _subs.pop(sid, None)
        raise
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


@atexit.register
def _unsubscribe_all() -> None:
    """No callback may run into a finalising interpreter."""
    with _subs_lock:
        subs = list(_subs.values())
        _subs.clear()
    for sub in subs:
        try:
            sub.stop()
        except Exception:  # pragma: no cover - best effort at exit
            pass
