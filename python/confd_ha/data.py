"""The data API of ha-node over the library's ``cha_*`` functions: reads and
transactions on the node's configuration store.

Typical use::

    import socket
    from confd_ha import data

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    data.connect(s, ip="127.0.0.1", port=4565)
    t = data.Transaction()
    t.set("/system/hostname", "router-1")
    t.set("/servers/server{www}/port", 8080, vtype=data.C_UINT16)
    txid = t.commit(s)
    data.get(s, "/servers/server{www}/port")       # 8080
    data.list_children(s, "/servers")              # ['server{www}']

Python values map to ``confd_value_t`` as: ``str`` / ``bytes`` -> C_BUF,
``bool`` -> C_BOOL, ``int`` -> C_INT64 (or the integer type given as
``vtype``), ``float`` -> C_DOUBLE, ``ipaddress.IPv4Address`` / ``IPv6Address``
-> C_IPV4 / C_IPV6. ``get`` returns ``str`` for C_BUF, ``bytes`` for
C_BINARY, ``int``, ``bool``, ``float`` and ``ipaddress`` objects. Writes on a
secondary raise :class:`confd_ha.error.Error` with ``ERR_NOT_WRITABLE``; a
missing path ``ERR_NOEXISTS``. A socket must not be used by two threads at once.
"""

from __future__ import annotations

import ctypes
import ipaddress
from ctypes import POINTER, c_char_p, c_int, c_void_p
from typing import Any, List, Optional

from . import _lib, _types
from ._types import (
    C_BOOL, C_BUF, C_DOUBLE, C_INT8, C_INT16, C_INT32, C_INT64, C_IPV4, C_IPV6,
    C_UINT8, C_UINT16, C_UINT32, C_UINT64,
)

__all__ = [
    "connect", "get", "exists", "list_children", "txid", "Transaction",
    "C_BUF", "C_BOOL", "C_DOUBLE", "C_IPV4", "C_IPV6", "C_ENUM_VALUE", "C_BINARY",
    "C_INT8", "C_INT16", "C_INT32", "C_INT64", "C_UINT8", "C_UINT16", "C_UINT32", "C_UINT64",
]

C_ENUM_VALUE = 28
C_BINARY = 39
TXID_SIZE = 256  # CHA_TXID_SIZE

_INT_FIELDS = {
    C_INT8: "i8", C_INT16: "i16", C_INT32: "i32", C_INT64: "i64",
    C_UINT8: "u8", C_UINT16: "u16", C_UINT32: "u32", C_UINT64: "u64",
}


def connect(sock: Any, ip: Any = None, port: Any = None, path: Any = None) -> None:
    """Connects ``sock`` (unconnected, blocking; AF_INET, AF_INET6 or AF_UNIX)
    to the node's IPC port as a data client."""
    fd = _types.fileno(sock)
    _types.require_blocking(sock)
    addr, size = _types.sockaddr(_types.family_of(sock), ip, port, path)
    _lib.fn("cha_data_connect")(fd, addr, size)


def _path(p: Any) -> bytes:
    return _types.c_string(p, "path")


# The range of every integer value type (an enum value is an int32), checked
# before the value reaches a C field, which would silently truncate it.
_INT_RANGES = {
    C_INT8: (-(2**7), 2**7 - 1),
    C_INT16: (-(2**15), 2**15 - 1),
    C_INT32: (-(2**31), 2**31 - 1),
    C_INT64: (-(2**63), 2**63 - 1),
    C_UINT8: (0, 2**8 - 1),
    C_UINT16: (0, 2**16 - 1),
    C_UINT32: (0, 2**32 - 1),
    C_UINT64: (0, 2**64 - 1),
    C_ENUM_VALUE: (-(2**31), 2**31 - 1),
}


def _check_int(v: Any, vtype: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("a value of type %d must be an int, not %s" % (vtype, type(v).__name__))
    lo, hi = _INT_RANGES[vtype]
    if not lo <= v <= hi:
        raise ValueError("%d does not fit a value of type %d (%d..%d)" % (v, vtype, lo, hi))
    return v


def _to_c(v: Any, vtype: Optional[int]):
    """(confd_value_t, keepalive) for a Python value."""
    if vtype is not None and vtype in _INT_FIELDS:
        _check_int(v, vtype)
        val = _types.ConfdValue()
        val.type = vtype
        setattr(val.val, _INT_FIELDS[vtype], v)
        return val, None
    if vtype == C_ENUM_VALUE:
        val = _types.ConfdValue()
        val.type = C_ENUM_VALUE
        val.val.i32 = _check_int(v, C_ENUM_VALUE)
        return val, None
    if vtype == C_BINARY:
        val, keep = _types.make_value(bytes(v), "value")
        val.type = C_BINARY
        return val, keep
    if vtype not in (None, C_BUF, C_BOOL, C_DOUBLE, C_IPV4, C_IPV6):
        raise ValueError("unsupported value type %r" % (vtype,))
    val, keep = _infer(v)
    if vtype is not None and val.type != vtype:
        raise TypeError("a %s is not a value of type %d" % (type(v).__name__, vtype))
    return val, keep


def _infer(v: Any):
    """(confd_value_t, keepalive) with the type the Python value implies."""
    val = _types.ConfdValue()
    if isinstance(v, (str, bytes, bytearray, memoryview)):
        return _types.make_value(v, "value")
    if isinstance(v, bool):
        val.type = C_BOOL
        val.val.boolean = int(v)
    elif isinstance(v, int):
        val.type = C_INT64
        val.val.i64 = v
        if val.val.i64 != v:
            raise ValueError("%d does not fit a 64-bit integer" % v)
    elif isinstance(v, float):
        val.type = C_DOUBLE
        val.val.d = v
    elif isinstance(v, ipaddress.IPv4Address):
        val.type = C_IPV4
        val.val.ip[:] = list(v.packed)
    elif isinstance(v, ipaddress.IPv6Address):
        val.type = C_IPV6
        val.val.ip6[:] = list(v.packed)
    else:
        raise TypeError("cannot store a %s" % type(v).__name__)
    return val, None


def _from_c(v: _types.ConfdValue) -> Any:
    t = v.type
    if t in (C_BUF, C_BINARY):
        raw = ctypes.string_at(v.val.buf.ptr, v.val.buf.size) if v.val.buf.size else b""
        return raw if t == C_BINARY else _types.decode_text(raw)
    if t in _INT_FIELDS:
        return getattr(v.val, _INT_FIELDS[t])
    if t == C_ENUM_VALUE:
        return v.val.i32
    if t == C_BOOL:
        return bool(v.val.boolean)
    if t == C_DOUBLE:
        return v.val.d
    if t == C_IPV4:
        return ipaddress.IPv4Address(bytes(v.val.ip))
    if t == C_IPV6:
        return ipaddress.IPv6Address(bytes(v.val.ip6))
    return None  # C_NOEXISTS


def get(sock: Any, path: Any) -> Any:
    """The value at ``path``."""
    v = _types.ConfdValue()
    _lib.fn("cha_get")(_types.fileno(sock), _path(path), ctypes.byref(v))
    try:
        return _from_c(v)
    finally:
        _lib.fn("cha_free_value")(ctypes.byref(v))


def get_linearizable(sock: Any, path: Any) -> Any:
    """The value at ``path``, read on the HA Raft leader after a read index
    round (linearizable). On a follower: ``ConfdError`` CONFD_ERR_NOT_WRITABLE
    naming the leader; in external mode: CONFD_ERR_BADSTATE."""
    v = _types.ConfdValue()
    _lib.fn("cha_get_linearizable")(_types.fileno(sock), _path(path), ctypes.byref(v))
    try:
        return _from_c(v)
    finally:
        _lib.fn("cha_free_value")(ctypes.byref(v))


def raft(sock: Any, action: str, *args: str) -> str:
    """Runs an HA Raft action (README, "Raft mode"): ``raft(s, "status",
    "json")``, ``raft(s, "create-cluster", "10.0.0.2:4570", ...)``,
    ``raft(s, "adjust-membership", "add-node", ADDR)``, ``raft(s,
    "handover")``, ``raft(s, "reset", "force")``, ``raft(s, "disconnect",
    ADDR)``. Returns the node's reply (JSON for status "json")."""
    argv = (c_char_p * max(len(args), 1))(
        *[_types.c_string(a, "raft argument") for a in args]
    )
    out = c_void_p()
    _lib.fn("cha_raft")(
        _types.fileno(sock),
        _types.c_string(action, "raft action"),
        argv,
        len(args),
        ctypes.byref(out),
    )
    try:
        return _types.decode_text(ctypes.string_at(out.value))
    finally:
        _lib.fn("cha_free_text")(out)


def exists(sock: Any, path: Any) -> bool:
    """Whether ``path`` holds a value or has children."""
    out = c_int(0)
    _lib.fn("cha_exists")(_types.fileno(sock), _path(path), ctypes.byref(out))
    return bool(out.value)


def list_children(sock: Any, path: Any) -> List[str]:
    """The names of the children of ``path``, sorted."""
    names = POINTER(c_char_p)()
    count = c_int(0)
    _lib.fn("cha_list")(_types.fileno(sock), _path(path), ctypes.byref(names), ctypes.byref(count))
    try:
        return [_types.decode_text(names[i]) for i in range(count.value)]
    finally:
        _lib.fn("cha_free_list")(names)


def txid(sock: Any) -> str:
    """The id of the node's last committed transaction ("" if none)."""
    buf = ctypes.create_string_buffer(TXID_SIZE)
    _lib.fn("cha_txid")(_types.fileno(sock), buf, TXID_SIZE)
    return _types.decode_text(buf.value)


class Transaction:
    """Sets and deletes collected on the client side; nothing reaches the
    node before :meth:`commit`, which applies them atomically."""

    def __init__(self) -> None:
        self._txn: Optional[int] = _lib.fn("cha_txn_new")()
        if not self._txn:
            raise MemoryError("cha_txn_new failed")

    def _handle(self) -> int:
        if not self._txn:
            raise ValueError("the transaction was closed")
        return self._txn

    def set(self, path: Any, value: Any, vtype: Optional[int] = None) -> "Transaction":
        v, keep = _to_c(value, vtype)
        _lib.fn("cha_txn_set")(self._handle(), _path(path), ctypes.byref(v))
        del keep  # the library copied the value
        return self

    def delete(self, path: Any) -> "Transaction":
        """Deletes ``path`` and its subtree."""
        _lib.fn("cha_txn_delete")(self._handle(), _path(path))
        return self

    def commit(self, sock: Any) -> str:
        """Commits on the node; returns the transaction id. On success the
        transaction is empty again; on failure it keeps its operations."""
        buf = ctypes.create_string_buffer(TXID_SIZE)
        _lib.fn("cha_txn_commit")(_types.fileno(sock), self._handle(), buf, TXID_SIZE)
        return _types.decode_text(buf.value)

    def close(self) -> None:
        if self._txn:
            _lib.fn("cha_txn_free")(self._txn)
            self._txn = None

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
