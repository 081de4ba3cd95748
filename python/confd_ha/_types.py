"""ctypes twins of ConfD's C structs (spec section C) and the conversions
between them and Python values. Layouts are checked by tests/test_layout.py.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from ctypes import (
    Structure,
    Union,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int8,
    c_int16,
    c_int32,
    c_int64,
    c_ubyte,
    c_uint,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Dict, List, Optional, Tuple

AF_UNSPEC = 0
AF_INET = socket.AF_INET  # 2 on Linux
AF_INET6 = socket.AF_INET6  # 10 on Linux

# enum confd_vtype (the ones this package reads or writes)
C_NOEXISTS = 1
C_STR = 4
C_BUF = 5
C_INT8, C_INT16, C_INT32, C_INT64 = 6, 7, 8, 9
C_UINT8, C_UINT16, C_UINT32, C_UINT64 = 10, 11, 12, 13
C_DOUBLE = 14
C_IPV4 = 15
C_IPV6 = 16
C_BOOL = 17

NODE_BUF_SIZE = 128
MAX_STATUS_NODES = 255


class ConfdBuf(Structure):
    _fields_ = [("size", c_uint), ("ptr", c_void_p)]


class _ValueUnion(Union):
    _fields_ = [
        ("buf", ConfdBuf),
        ("s", c_void_p),
        ("i8", c_int8),
        ("i16", c_int16),
        ("i32", c_int32),
        ("i64", c_int64),
        ("u8", c_uint8),
        ("u16", c_uint16),
        ("u32", c_uint32),
        ("u64", c_uint64),
        ("d", c_double),
        ("ip", c_ubyte * 4),
        ("ip6", c_ubyte * 16),
        ("boolean", c_int),
        ("_size", c_ubyte * 32),  # largest member: confd_qname (two bufs)
    ]


class ConfdValue(Structure):
    """confd_value_t: 40 bytes, type at 0, union at 8."""

    _fields_ = [("type", c_int), ("val", _ValueUnion)]


class _AddrUnion(Union):
    _fields_ = [("ip4", c_ubyte * 4), ("ip6", c_ubyte * 16), ("str", c_void_p)]


class HaNode(Structure):
    """struct confd_ha_node: 320 bytes."""

    _fields_ = [
        ("nodeid", ConfdValue),
        ("af", c_int),
        ("addr", _AddrUnion),
        ("buf", c_char * NODE_BUF_SIZE),
        ("addr_buf", c_char * NODE_BUF_SIZE),
    ]


class HaStatus(Structure):
    """struct confd_ha_status: 81616 bytes."""

    _fields_ = [
        ("state", c_int),
        ("nodes", HaNode * MAX_STATUS_NODES),
        ("num_nodes", c_int),
    ]


class _HaNotificationData(Union):
    _fields_ = [
        ("noprimary", c_int),
        ("secondary_died", HaNode),
        ("secondary_arrived", HaNode),
        ("cdb_initialized_by_copy", c_int),
        ("besecondary_result", c_int),
    ]


class HaNotification(Structure):
    """struct confd_ha_notification: 328 bytes, type at 0, data at 8."""

    _fields_ = [("type", c_int), ("data", _HaNotificationData)]


class NotificationHead(Structure):
    """The part of struct confd_notification this package reads: the type at
    0 and the HA member ``n.hnot`` at 8. The real union is much larger (it
    holds ``char msg[BUFSIZ]`` members), so it is always read into a
    :class:`NotificationStorage`, never into this struct alone."""

    _fields_ = [("type", c_int), ("hnot", HaNotification)]


# Room for the whole of ConfD's struct confd_notification (its largest
# members are a few BUFSIZ (8192) buffers); 8-byte aligned.
NOTIFICATION_STORAGE_BYTES = 64 * 1024


class NotificationStorage(Structure):
    _fields_ = [("_words", c_uint64 * (NOTIFICATION_STORAGE_BYTES // 8))]


class NotificationsData(Structure):
    """struct confd_notifications_data: 112 bytes."""

    _fields_ = [
        ("heartbeat_interval", c_int),
        ("health_check_interval", c_int),
        ("stream_name", c_char_p),
        ("start_time", ConfdValue),
        ("stop_time", ConfdValue),
        ("xpath_filter", c_char_p),
        ("usid", c_int),
        ("verbosity", c_int),
    ]


# --------------------------------------------------------------------------
# Python values -> C


def encode_text(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def decode_text(b: bytes) -> str:
    # surrogateescape: any bytes survive a round trip back into a call.
    return b.decode("utf-8", "surrogateescape")


def make_value(v: Any, what: str = "node id") -> Tuple[ConfdValue, Any]:
    """A confd_value_t for a node id: ``str`` / ``bytes`` become C_BUF (as
    NSO's _ncs does for str); a :class:`confd_ha.value.Value` keeps its type.
    Returns (value, keepalive); the caller keeps ``keepalive`` alive for as
    long as the C side may read the value."""
    from .value import Value

    if isinstance(v, Value):
        return value_to_c(v)
    if isinstance(v, str):
        data = encode_text(v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
    else:
        raise TypeError("%s must be str, bytes or Value, not %s" % (what, type(v).__name__))
    return _buf_value(C_BUF, data)


def _buf_value(t: int, data: bytes) -> Tuple[ConfdValue, Any]:
    keep = ctypes.create_string_buffer(data, len(data) + 1)  # NUL-terminated too
    val = ConfdValue()
    val.type = t
    if t == C_STR:
        val.val.s = ctypes.cast(keep, c_void_p)
    else:
        val.val.buf.size = len(data)
        val.val.buf.ptr = ctypes.cast(keep, c_void_p)
    return val, keep


def value_to_c(v: Any) -> Tuple[ConfdValue, Any]:
    """(confd_value_t, keepalive) for a :class:`confd_ha.value.Value`."""
    from . import value as V

    t = v.confd_type()
    py = v._v
    if t in V.BYTES_TYPES:
        return _buf_value(t, py)
    val = ConfdValue()
    val.type = t
    if t in V.INT_TYPES:
        bits, signed = V.INT_TYPES[t]
        setattr(val.val, ("i%d" if signed else "u%d") % bits, py)
    elif t == C_BOOL:
        val.val.boolean = 1 if py else 0
    elif t == C_DOUBLE:
        val.val.d = py
    elif t == C_IPV4:
        val.val.ip[:] = list(py.packed)
    elif t == C_IPV6:
        val.val.ip6[:] = list(py.packed)
    elif t != C_NOEXISTS:
        raise TypeError("a Value of type %s cannot be passed here" % v.confd_type_str())
    return val, None


def value_from_c(v: ConfdValue) -> Any:
    """A :class:`confd_ha.value.Value` for a confd_value_t the library filled
    (a node id); a type it cannot hold becomes a C_BUF of its description."""
    from . import value as V

    t = int(v.type)
    if t in (C_BUF, V.C_BINARY, V.C_HEXSTR):
        data = ctypes.string_at(v.val.buf.ptr, v.val.buf.size) if v.val.buf.ptr and v.val.buf.size else b""
        return V.Value(data, t)
    if t == C_STR:
        return V.Value(ctypes.string_at(v.val.s) if v.val.s else b"", C_STR)
    if t in V.INT_TYPES:
        bits, signed = V.INT_TYPES[t]
        return V.Value(getattr(v.val, ("i%d" if signed else "u%d") % bits), t)
    if t == C_BOOL:
        return V.Value(bool(v.val.boolean), t)
    if t == C_DOUBLE:
        return V.Value(float(v.val.d), t)
    if t in (C_IPV4, C_IPV6):
        return V.Value(value_to_str(v), t)
    if t == C_NOEXISTS:
        return V.Value(None, t)
    return V.Value(value_to_str(v), C_BUF)


def parse_ip(text: Any) -> Tuple[int, bytes]:
    """(AF_INET, 4 bytes) or (AF_INET6, 16 bytes); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("Invalid primary_ip address.")
    for family in (AF_INET, AF_INET6):
        try:
            return family, socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
    raise ValueError("Invalid primary_ip address.")


# --------------------------------------------------------------------------
# C -> Python values


def value_to_str(v: ConfdValue) -> str:
    """A node id as text. C_BUF (what the library returns) is the normal case."""
    t = v.type
    if t == C_BUF:
        if not v.val.buf.ptr or v.val.buf.size == 0:
            return ""
        return decode_text(ctypes.string_at(v.val.buf.ptr, v.val.buf.size))
    if t == C_STR:
        return decode_text(ctypes.string_at(v.val.s)) if v.val.s else ""
    ints = {
        C_INT8: "i8", C_INT16: "i16", C_INT32: "i32", C_INT64: "i64",
        C_UINT8: "u8", C_UINT16: "u16", C_UINT32: "u32", C_UINT64: "u64",
    }
    if t in ints:
        return str(getattr(v.val, ints[t]))
    if t == C_BOOL:
        return "true" if v.val.boolean else "false"
    if t == C_DOUBLE:
        return repr(v.val.d)
    if t == C_IPV4:
        return socket.inet_ntop(AF_INET, bytes(v.val.ip))
    if t == C_IPV6:
        return socket.inet_ntop(AF_INET6, bytes(v.val.ip6))
    if t == C_NOEXISTS:
        return ""
    return "<confd_value_t of type %d>" % t


def node_address(node: HaNode) -> Optional[str]:
    """The node's address as text, by its ``af``; None for AF_UNSPEC with a
    NULL ``addr.str``."""
    if node.af == AF_INET:
        return socket.inet_ntop(AF_INET, bytes(node.addr.ip4))
    if node.af == AF_INET6:
        return socket.inet_ntop(AF_INET6, bytes(node.addr.ip6))
    if node.addr.str:
        return decode_text(ctypes.string_at(node.addr.str))
    return None


def node_dict(node: HaNode) -> Dict[str, Any]:
    """A node as _ncs.events gives it: nodeid (a Value), af, and ip4 / ip6 / str."""
    d: Dict[str, Any] = {"nodeid": value_from_c(node.nodeid), "af": node.af}
    if node.af == AF_INET:
        d["ip4"] = node_address(node)
    elif node.af == AF_INET6:
        d["ip6"] = node_address(node)
    else:
        d["str"] = node_address(node)
    return d


# --------------------------------------------------------------------------
# sockaddr for the caller's socket


def _port(port: Any) -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise ValueError("invalid port %r" % (port,)) from None
    if not 0 <= p <= 65535:
        raise ValueError("port %d out of range 0..65535" % p)
    return p


def _ip_bytes(family: int, ip: Any, port: int) -> Tuple[bytes, int]:
    if not isinstance(ip, str) or not ip:
        raise ValueError("invalid ip %r" % (ip,))
    scope = 0
    host = ip
    if family == AF_INET6 and "%" in ip:
        host, ifname = ip.split("%", 1)
        try:
            scope = int(ifname) if ifname.isdigit() else socket.if_nametoindex(ifname)
        except OSError:
            raise ValueError("invalid ip %r: unknown interface %r" % (ip, ifname)) from None
    try:
        return socket.inet_pton(family, host), scope
    except (OSError, ValueError):
        pass
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ValueError("invalid ip %r for this socket's address family: %s" % (ip, e)) from None
    sa = infos[0][4]
    return socket.inet_pton(family, sa[0]), (sa[3] if family == AF_INET6 else 0)


def sockaddr(
    family: int, ip: Any = None, port: Any = None, path: Any = None
) -> Tuple[ctypes.Array, int]:
    """A struct sockaddr for ``family`` (as NSO's binding builds it):
    AF_INET / AF_INET6 need ``ip`` and ``port``; AF_UNIX needs ``path``.
    Returns (buffer, size in bytes)."""
    if family == AF_INET:
        if ip is None or port is None:
            raise ValueError("an AF_INET socket needs ip and port")
        p = _port(port)
        addr, _ = _ip_bytes(family, ip, p)
        raw = struct.pack("=H", AF_INET) + struct.pack("!H", p) + addr + bytes(8)
    elif family == AF_INET6:
        if ip is None or port is None:
            raise ValueError("an AF_INET6 socket needs ip and port")
        p = _port(port)
        addr, scope = _ip_bytes(family, ip, p)
        raw = (
            struct.pack("=H", AF_INET6)
            + struct.pack("!HI", p, 0)
            + addr
            + struct.pack("=I", scope)
        )
    elif family == getattr(socket, "AF_UNIX", -1):
        if path is None:
            raise ValueError("an AF_UNIX socket needs a path")
        b = os.fsencode(path)
        if not b or b"\0" in b:
            raise ValueError("invalid Unix socket path %r" % (path,))
        if len(b) > 107:
            raise ValueError("Unix socket path is %d bytes; at most 107 fit" % len(b))
        raw = struct.pack("=H", socket.AF_UNIX) + b + b"\0"
    else:
        raise ValueError("unsupported socket family %r" % (family,))
    buf = ctypes.create_string_buffer(raw, len(raw))
    return buf, len(raw)


def fileno(sock: Any) -> int:
    """The fd of a socket object (or an int fd)."""
    if isinstance(sock, int):
        fd = sock
    else:
        try:
            fd = sock.fileno()
        except AttributeError:
            raise TypeError("sock must be a socket object, not %s" % type(sock).__name__) from None
    if fd < 0:
        raise ValueError("the socket is closed")
    return fd


def family_of(sock: Any) -> int:
    fam = getattr(sock, "family", None)
    if fam is None:
        raise TypeError("sock must be a socket object (its family decides the address kind)")
    return int(fam)


def require_blocking(sock: Any) -> None:
    """The library does blocking I/O on the fd; a socket with a Python timeout
    is non-blocking at the fd level and would fail with EAGAIN."""
    gettimeout = getattr(sock, "gettimeout", None)
    if gettimeout is not None and gettimeout() is not None:
        raise ValueError(
            "the socket has a timeout (non-blocking fd); call sock.settimeout(None) first"
        )


def c_string(s: Any, what: str) -> bytes:
    if isinstance(s, str):
        b = encode_text(s)
    elif isinstance(s, (bytes, bytearray)):
        b = bytes(s)
    else:
        raise TypeError("%s must be str or bytes, not %s" % (what, type(s).__name__))
    if b"\0" in b:
        raise ValueError("%s contains a NUL byte" % what)
    return b


def signed32(mask: int) -> int:
    """An event mask as the C int the API takes (bit 31 -> negative)."""
    m = int(mask)
    if not 0 <= m <= 0xFFFFFFFF:
        if -(1 << 31) <= m < 0:
            return m
        raise ValueError("mask %d does not fit 32 bits" % m)
    return m - (1 << 32) if m & 0x80000000 else m



# --------------------------------------------------------------------------
# The project's availability-group C API (cha.h)

CHA_ID_SIZE = 128
CHA_ADDR_SIZE = 128
CHA_TXID_SIZE = 256
CHA_MAX_SECONDARIES = 255


class ChaPeer(Structure):
    """struct cha_peer: 264 bytes."""

    _fields_ = [
        ("id", c_char * CHA_ID_SIZE),
        ("address", c_char * CHA_ADDR_SIZE),
        ("last_tick_ms", c_int64),
    ]


class ChaNodeState(Structure):
    """struct cha_node_state: 67992 bytes."""

    _fields_ = [
        ("role", c_int),
        ("has_primary", c_int),
        ("node_id", c_char * CHA_ID_SIZE),
        ("primary", ChaPeer),
        ("num_secondaries", c_int),
        ("secondaries", ChaPeer * CHA_MAX_SECONDARIES),
        ("seq", c_int64),
        ("txid", c_char * CHA_TXID_SIZE),
    ]


class ChaEvent(Structure):
    """struct cha_event: 296 bytes."""

    _fields_ = [
        ("type", c_int),
        ("previous_role", c_int),
        ("new_role", c_int),
        ("ha_info_type", c_int),
        ("ha_info_value", c_int),
        ("ha_info_node", ChaPeer),
        ("closed_errno", c_int),
    ]


# void (*cha_event_cb)(const struct cha_event *ev, void *user_data)
CHA_EVENT_CB = ctypes.CFUNCTYPE(None, ctypes.POINTER(ChaEvent), c_void_p)


def address_dict(address: str) -> Dict[str, Any]:
    """'af' and 'ip4' / 'ip6' / 'str' for an address given as text."""
    for fam, key in ((AF_INET, "ip4"), (AF_INET6, "ip6")):
        try:
            socket.inet_pton(fam, address)
            return {"af": fam, key: address}
        except (OSError, ValueError):
            pass
    return {"af": AF_UNSPEC, "str": address or None}
