"""``Value``: a ``confd_value_t`` as NSO's ``_ncs.Value`` presents it, and the
``C_*`` type numbers of ``enum confd_vtype``.

HA code uses values as node ids (``ha.beprimary(s, Value("n1"))``; the node
ids in ``events.read_notification`` dicts are Values) and for the start/stop
time of ``events.NotificationsData`` (``Value(None, C_NOEXISTS)``)::

    from confd_ha.value import Value, C_BUF, C_INT32
    Value("n1")                 # C_BUF, as str(...) gives it: 'n1'
    Value(7)                    # C_INT32 (C_INT64 beyond 32 bits)
    Value(7, C_UINT16)          # an explicit type
    Value(None, C_NOEXISTS)     # "no value"

The type is inferred when not given, as NSO does: ``bool`` -> C_BOOL, ``int``
-> C_INT32 (C_INT64 when it does not fit), ``float`` -> C_DOUBLE, ``str`` and
``bytes`` -> C_BUF, ``ipaddress`` addresses -> C_IPV4 / C_IPV6, anything else
-> C_BUF of ``str(init)``. An explicit type must match the value
(``TypeError`` / ``ValueError`` otherwise). Types a node id or a time cannot
have (lists, keypaths, ...) are refused with ``TypeError``.

Equality: Values are equal when type and value are; in addition a C_BUF /
C_STR Value equals the ``str`` of its text, so code that compares node ids
with strings keeps working (NSO's Value does not do this).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

# enum confd_vtype (confd_lib.h); numbers 21, 22, 24, 25, 26 are unused.
C_NOEXISTS = 1
C_XMLTAG = 2
C_SYMBOL = 3
C_STR = 4
C_BUF = 5
C_INT8 = 6
C_INT16 = 7
C_INT32 = 8
C_INT64 = 9
C_UINT8 = 10
C_UINT16 = 11
C_UINT32 = 12
C_UINT64 = 13
C_DOUBLE = 14
C_IPV4 = 15
C_IPV6 = 16
C_BOOL = 17
C_QNAME = 18
C_DATETIME = 19
C_DATE = 20
C_TIME = 23
C_DURATION = 27
C_ENUM_VALUE = 28
C_ENUM_HASH = 28
C_BIT32 = 29
C_BIT64 = 30
C_LIST = 31
C_XMLBEGIN = 32
C_XMLEND = 33
C_OBJECTREF = 34
C_UNION = 35
C_PTR = 36
C_CDBBEGIN = 37
C_OID = 38
C_BINARY = 39
C_IPV4PREFIX = 40
C_IPV6PREFIX = 41
C_DEFAULT = 42
C_DECIMAL64 = 43
C_IDENTITYREF = 44
C_XMLBEGINDEL = 45
C_DQUAD = 46
C_HEXSTR = 47
C_IPV4_AND_PLEN = 48
C_IPV6_AND_PLEN = 49
C_BITBIG = 50
C_XMLMOVEFIRST = 51
C_XMLMOVEAFTER = 52
C_EMPTY = 53
C_MAXTYPE = 54

_TYPE_NAMES = {
    v: k
    for k, v in sorted(globals().items(), reverse=True)
    if k.startswith("C_") and isinstance(v, int) and k not in ("C_MAXTYPE", "C_ENUM_HASH")
}

# Integer types: (bits, signed).
INT_TYPES = {
    C_INT8: (8, True), C_INT16: (16, True), C_INT32: (32, True), C_INT64: (64, True),
    C_UINT8: (8, False), C_UINT16: (16, False), C_UINT32: (32, False), C_UINT64: (64, False),
    C_ENUM_VALUE: (32, True), C_BIT32: (32, False), C_BIT64: (64, False),
}
# Types carried as bytes (confd_buf_t, or a C string for C_STR).
BYTES_TYPES = (C_BUF, C_STR, C_BINARY, C_HEXSTR)
# Every type a Value can hold.
SUPPORTED_TYPES = frozenset(
    (C_NOEXISTS, C_DOUBLE, C_BOOL, C_IPV4, C_IPV6) + BYTES_TYPES + tuple(INT_TYPES)
)


def type_name(t: int) -> str:
    """``"C_BUF"`` for 5; ``"C_?(n)"`` for a number without a name."""
    return _TYPE_NAMES.get(t, "C_?(%d)" % t)


def _int_in_range(v: Any, t: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("a %s value must be an int, not %s" % (type_name(t), type(v).__name__))
    bits, signed = INT_TYPES[t]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise ValueError("%d does not fit a %s value" % (v, type_name(t)))
    return v


class Value:
    """A ``confd_value_t`` (see the module doc). ``Value(init, type=None)``."""

    __slots__ = ("_type", "_v")

    def __init__(self, init: Any = None, type: Optional[int] = None) -> None:  # noqa: A002
        if isinstance(init, Value):
            if type is None or type == init._type:
                self._type, self._v = init._type, init._v
                return
            init = init.as_pyval()
        if type is None:
            type = self._infer(init)
            if type == C_BUF and not isinstance(init, (str, bytes, bytearray, memoryview)):
                init = str(init)
        type = int(type)
        if type not in SUPPORTED_TYPES:
            raise TypeError("Value of type %s is not supported by confd_ha" % type_name(type))
        self._type = type
        self._v = self._convert(init, type)

    @staticmethod
    def _infer(init: Any) -> int:
        if init is None:
            return C_NOEXISTS
        if isinstance(init, bool):
            return C_BOOL
        if isinstance(init, int):
            return C_INT32 if -(1 << 31) <= init < (1 << 31) else C_INT64
        if isinstance(init, float):
            return C_DOUBLE
        if isinstance(init, ipaddress.IPv4Address):
            return C_IPV4
        if isinstance(init, ipaddress.IPv6Address):
            return C_IPV6
        return C_BUF

    @staticmethod
    def _convert(v: Any, t: int) -> Any:
        if t == C_NOEXISTS:
            return None
        if t in BYTES_TYPES:
            if isinstance(v, str):
                return v.encode("utf-8", "surrogateescape")
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
            raise TypeError("a %s value must be str or bytes, not %s" % (type_name(t), type(v).__name__))
        if t in INT_TYPES:
            return _int_in_range(v, t)
        if t == C_BOOL:
            return bool(v)
        if t == C_DOUBLE:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError("a C_DOUBLE value must be a float, not %s" % type(v).__name__)
            return float(v)
        cls = ipaddress.IPv4Address if t == C_IPV4 else ipaddress.IPv6Address
        if isinstance(v, cls):
            return v
        if isinstance(v, (str, bytes)):
            try:
                return cls(v)
            except ValueError as e:
                raise ValueError("not a %s address: %r" % (type_name(t), v)) from e
        raise TypeError("a %s value must be an address or str, not %s" % (type_name(t), type(v).__name__))

    # ---- NSO's methods ---------------------------------------------------

    def confd_type(self) -> int:
        """The ``C_*`` type number."""
        return self._type

    def confd_type_str(self) -> str:
        """The ``C_*`` type name, e.g. ``"C_BUF"``."""
        return type_name(self._type)

    def as_pyval(self) -> Any:
        """The value as a plain Python object: str (C_BUF, C_STR, C_HEXSTR),
        bytes (C_BINARY), int, bool, float, str for addresses, None (C_NOEXISTS)."""
        t, v = self._type, self._v
        if t in (C_BUF, C_STR, C_HEXSTR):
            return v.decode("utf-8", "surrogateescape")
        if t in (C_IPV4, C_IPV6):
            return str(v)
        return v

    # ---- Python protocol -------------------------------------------------

    def __str__(self) -> str:
        t, v = self._type, self._v
        if t == C_NOEXISTS:
            return ""
        if t == C_BINARY:
            return v.decode("utf-8", "replace")
        if t == C_BOOL:
            return "true" if v else "false"
        if t == C_DOUBLE:
            return repr(v)
        return str(self.as_pyval())

    def __repr__(self) -> str:
        return "Value(%r, %s)" % (self.as_pyval(), self.confd_type_str())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Value):
            return (self._type, self._v) == (other._type, other._v)
        if isinstance(other, str) and self._type in (C_BUF, C_STR):
            return self.as_pyval() == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self) -> int:
        if self._type in (C_BUF, C_STR):
            return hash(self.as_pyval())  # consistent with equality to str
        return hash((self._type, self._v))


__all__ = ["Value", "type_name"] + [k for k in list(globals()) if k.startswith("C_")]
