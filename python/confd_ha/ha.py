"""HA control, mirroring NSO's ``_ncs.ha`` (spec section F.1) over
``confd_ha_*`` of libconfd_ha.

Typical use::

    import socket
    from confd_ha import ha

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ha.connect(s, "secret-token", ip="127.0.0.1", port=4565)
    ha.beprimary(s, "n1")
    state, nodes = ha.status(s)
    s.close()

Only one HA connection per node: a new ``connect`` makes the node close the
previous one. After a failed ``connect`` close the socket and make a new one.
Node ids are ``str`` (sent as C_BUF) or ``bytes``. Failures raise
:class:`confd_ha.error.Error`. A socket must not be used by two threads at
once (as in ConfD).
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Tuple

from . import _lib, _types

__all__ = [
    "connect", "beprimary", "besecondary", "berelay", "benone",
    "secondary_dead", "status", "bemaster", "beslave", "slave_dead",
    "STATE_NONE", "STATE_SECONDARY", "STATE_PRIMARY", "STATE_SECONDARY_RELAY",
    "STATE_SLAVE", "STATE_MASTER", "STATE_SLAVE_RELAY",
]

# enum confd_ha_status_state
STATE_NONE = 1
STATE_SECONDARY = 2
STATE_PRIMARY = 3
STATE_SECONDARY_RELAY = 4
# deprecated aliases
STATE_SLAVE = 2
STATE_MASTER = 3
STATE_SLAVE_RELAY = 4


def connect(sock: Any, token: Any, ip: Any = None, port: Any = None, pstr: Any = None) -> None:
    """Connects ``sock`` (an unconnected, blocking socket of family AF_INET,
    AF_INET6 or AF_UNIX) to the node and presents ``token``. AF_INET/AF_INET6
    need ``ip`` and ``port``; AF_UNIX needs ``pstr`` (the socket path)."""
    fd = _types.fileno(sock)
    _types.require_blocking(sock)
    addr, size = _types.sockaddr(_types.family_of(sock), ip, port, pstr)
    tok = _types.c_string(token, "token")
    _lib.fn("confd_ha_connect")(fd, addr, size, tok)


def beprimary(sock: Any, mynodeid: Any) -> None:
    """Orders the node to become primary, named ``mynodeid``."""
    fd = _types.fileno(sock)
    val, keep = _types.make_value(mynodeid, "mynodeid")
    _lib.fn("confd_ha_beprimary")(fd, ctypes.byref(val))
    del keep


def besecondary(sock: Any, mynodeid: Any, primary_id: Any, primary_ip: Any, waitreply: Any) -> None:
    """Orders the node to become secondary (named ``mynodeid``) of the primary
    ``primary_id`` at ``primary_ip`` (IPv4, else IPv6 text). With a true
    ``waitreply`` returns when the node is in sync; with 0 returns at once and
    the result arrives as an HA_INFO_BESECONDARY_RESULT event."""
    fd = _types.fileno(sock)
    family, packed = _types.parse_ip(primary_ip)
    wait = int(waitreply)
    me, keep_me = _types.make_value(mynodeid, "mynodeid")
    prim_id, keep_prim = _types.make_value(primary_id, "primary_id")
    primary = _types.HaNode()
    primary.nodeid = prim_id
    primary.af = family
    if family == _types.AF_INET:
        primary.addr.ip4[:] = list(packed)
    else:
        primary.addr.ip6[:] = list(packed)
    _lib.fn("confd_ha_besecondary")(fd, ctypes.byref(me), ctypes.byref(primary), wait)
    del keep_me, keep_prim


def berelay(sock: Any) -> None:
    """Turns an established secondary into a relay for other secondaries."""
    _lib.fn("confd_ha_berelay")(_types.fileno(sock))


def benone(sock: Any) -> None:
    """Returns the node to the NONE state."""
    _lib.fn("confd_ha_benone")(_types.fileno(sock))


def secondary_dead(sock: Any, nodeid: Any) -> None:
    """Tells the node that the secondary ``nodeid`` is dead."""
    fd = _types.fileno(sock)
    val, keep = _types.make_value(nodeid, "nodeid")
    _lib.fn("confd_ha_secondary_dead")(fd, ctypes.byref(val))
    del keep


def status(sock: Any) -> Tuple[int, List[Dict[str, str]]]:
    """``(state, [{'nodeid': str, 'address': str}, ...])`` as NSO returns it:
    NONE -> no nodes; SECONDARY -> [its primary]; PRIMARY -> the connected
    secondaries; SECONDARY_RELAY -> [its primary, its sub-secondaries...].

    Unlike NSO (which formats every address as IPv4), ``address`` follows the
    node's address family: dotted IPv4, IPv6 text, or the string address."""
    fd = _types.fileno(sock)
    st = _types.HaStatus()
    _lib.fn("confd_ha_get_status")(fd, ctypes.byref(st))
    n = max(0, min(int(st.num_nodes), _types.MAX_STATUS_NODES))
    nodes = []
    for i in range(n):
        node = st.nodes[i]
        addr = _types.node_address(node)
        nodes.append({"nodeid": _types.value_to_str(node.nodeid), "address": addr or ""})
    return int(st.state), nodes


# Deprecated names (NSO keeps them as aliases).
bemaster = beprimary
beslave = besecondary
slave_dead = secondary_dead
