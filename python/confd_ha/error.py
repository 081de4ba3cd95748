"""The one exception class of the package and the ``confd_errno`` numbers.

Every library call goes through one checking function (``confd_ha._lib``);
when a call fails it raises :class:`Error`, which carries the three things
ConfD reports about a failure:

* ``confd_errno`` -- the error number (one of the ``ERR_*`` constants below);
* ``confd_strerror`` (also ``strerror``) -- the library's fixed text for that
  number (``confd_strerror()``);
* ``confd_lasterr`` (also ``lasterr``) -- the library's message about this
  failure (``confd_lasterr()``), usually the daemon's reason ("token mismatch ...").

The ``confd_*`` names are NSO's (``_ncs.error.Error``); ``str(e)`` is NSO's
``"<confd_strerror> (<confd_errno>): <confd_lasterr>"``. One difference:
NSO's ``e.strerror`` is the OS error text (meaningful only for ERR_OS), ours
is the ConfD text, the same as ``confd_strerror``.

A call that finds the daemon's socket closed (``CONFD_EOF``) raises
:class:`EOF`, a subclass of :class:`Error` with ``confd_errno == ERR_EOF``
(NSO's ``_ncs.error.EOF``), so ``except EOF:`` catches exactly that.

Mistakes in the Python arguments themselves (a node id of the wrong type, an
unparsable address) raise ``TypeError`` / ``ValueError`` before anything is
sent, as NSO's ``_ncs`` does.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["Error", "EOF", "errno_name"]

# Return codes of the C API (confd_lib.h). (CONFD_EOF is ``confd_ha.EOF``
# at the package's top level, as ``_ncs.EOF``; here ``EOF`` is the
# exception class, as ``_ncs.error.EOF``.)
OK = 0
ERR = -1
RC_EOF = -2

# confd_errno values (spec section B.4; same numbers as confd_lib.h).
ERR_NOEXISTS = 1
ERR_ALREADY_EXISTS = 2
ERR_ACCESS_DENIED = 3
ERR_NOT_WRITABLE = 4
ERR_BADTYPE = 5
ERR_NOTCREATABLE = 6
ERR_NOTDELETABLE = 7
ERR_BADPATH = 8
ERR_NOSTACK = 9
ERR_LOCKED = 10
ERR_INUSE = 11
ERR_NOTSET = 12
ERR_NON_UNIQUE = 13
ERR_BAD_KEYREF = 14
ERR_TOO_FEW_ELEMS = 15
ERR_TOO_MANY_ELEMS = 16
ERR_BADSTATE = 17
ERR_INTERNAL = 18
ERR_EXTERNAL = 19
ERR_MALLOC = 20
ERR_PROTOUSAGE = 21
ERR_NOSESSION = 22
ERR_TOOMANYTRANS = 23
ERR_OS = 24
ERR_HA_CONNECT = 25
ERR_HA_CLOSED = 26
ERR_HA_BADFXS = 27
ERR_HA_BADTOKEN = 28
ERR_HA_BADNAME = 29
ERR_HA_BIND = 30
ERR_HA_NOTICK = 31
ERR_VALIDATION_WARNING = 32
ERR_SUBAGENT_DOWN = 33
ERR_LIB_NOT_INITIALIZED = 34
ERR_TOO_MANY_SESSIONS = 35
ERR_BAD_CONFIG = 36
ERR_RESOURCE_DENIED = 37
ERR_INCONSISTENT_VALUE = 38
ERR_APPLICATION_INTERNAL = 39
ERR_UNSET_CHOICE = 40
ERR_MUST_FAILED = 41
ERR_MISSING_INSTANCE = 42
ERR_INVALID_INSTANCE = 43
ERR_UNAVAILABLE = 44
ERR_EOF = 45
ERR_NOTMOVABLE = 46
ERR_HA_WITH_UPGRADE = 47
ERR_TIMEOUT = 48
ERR_ABORTED = 49
ERR_XPATH = 50
ERR_NOT_IMPLEMENTED = 51
ERR_HA_BADVSN = 52
ERR_POLICY_FAILED = 53
ERR_POLICY_COMPILATION_FAILED = 54
ERR_POLICY_EVALUATION_FAILED = 55
ERR_CONNECTION_REFUSED = 56
ERR_START_FAILED = 57
ERR_DATA_MISSING = 58
ERR_CLI_CMD = 59
ERR_UPGRADE_IN_PROGRESS = 60
ERR_NOTRANS = 61
ERR_SERVICE_CONFLICT = 62
ERR_CONNECTION_TIMEOUT = 63
ERR_CONNECTION_CLOSED = 64
ERR_DEVICE = 65
ERR_TEMPLATE = 66
ERR_NO_MOUNT_ID = 67
ERR_STALE_INSTANCE = 68
ERR_HA_BADCONFIG = 69
ERR_TRANSACTION_CONFLICT = 70
ERR_HA_ABORT = 71
ERR_BAD_PAYLOAD = 72
ERR_CHECKSUM_MISMATCH = 73


def errno_name(code: int) -> Optional[str]:
    """The constant name of an error number (``"ERR_HA_BADTOKEN"``), or None."""
    return _NAMES.get(code)


_NAMES = {
    v: k
    for k, v in sorted(globals().items())
    if k.startswith("ERR_") and isinstance(v, int)
}
__all__ += sorted(_NAMES.values())


class Error(Exception):
    """A failed call of libconfd_ha.

    Attributes:
        confd_errno: the error number (``confd_ha.error.ERR_*``).
        strerror: ``confd_strerror(confd_errno)``, the fixed text for the number.
        lasterr: ``confd_lasterr()`` right after the failure ("" if none).
        function: name of the C function that failed (None if not from a call).
    """

    def __init__(
        self,
        confd_errno: int,
        strerror: Optional[str] = None,
        lasterr: str = "",
        function: Optional[str] = None,
    ) -> None:
        self.confd_errno = int(confd_errno)
        if strerror is None:
            name = errno_name(self.confd_errno)
            strerror = name if name is not None else "Unknown error"
        self.strerror = strerror
        self.lasterr = lasterr or ""
        self.function = function
        super().__init__(self.confd_errno, self.strerror, self.lasterr)

    # NSO's attribute names.
    @property
    def confd_strerror(self) -> str:
        return self.strerror

    @property
    def confd_lasterr(self) -> str:
        return self.lasterr

    @property
    def errno_name(self) -> Optional[str]:
        """``"ERR_HA_BADTOKEN"`` etc., or None for a number without a name."""
        return errno_name(self.confd_errno)

    def __str__(self) -> str:
        # As NSO's _ncs.error.Error: "<strerror> (<errno>): <lasterr>" (the
        # failed function is in repr() and ``function``).
        return "%s (%d): %s" % (self.strerror, self.confd_errno, self.lasterr)

    def __repr__(self) -> str:
        return "%s(confd_errno=%d (%s), strerror=%r, lasterr=%r, function=%r)" % (
            type(self).__name__,
            self.confd_errno,
            self.errno_name or "?",
            self.strerror,
            self.lasterr,
            self.function,
        )


class EOF(Error):
    """The daemon closed the socket (``CONFD_EOF``; ``confd_errno`` is
    ERR_EOF), as NSO's ``_ncs.error.EOF``."""

    def __init__(
        self,
        confd_errno: int = ERR_EOF,
        strerror: Optional[str] = None,
        lasterr: str = "",
        function: Optional[str] = None,
    ) -> None:
        super().__init__(confd_errno, strerror, lasterr, function)
