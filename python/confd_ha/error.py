"""The one exception class of the package and the ``confd_errno`` numbers.

Every library call goes through one checking function (``confd_ha._lib``);
when a call fails it raises :class:`Error`, which carries the three things
ConfD reports about a failure:

* ``confd_errno`` -- the error number (one of the ``ERR_*`` constants below);
* ``strerror``    -- the library's fixed text for that number (``confd_strerror()``);
* ``lasterr``     -- the library's message about this failure (``confd_lasterr()``),
  usually the daemon's reason ("token mismatch ...").

A call that finds the daemon's socket closed (``CONFD_EOF``) raises the same
class with ``confd_errno == ERR_EOF``.

Mistakes in the Python arguments themselves (a node id of the wrong type, an
unparsable address) raise ``TypeError`` / ``ValueError`` before anything is
sent, as NSO's ``_ncs`` does.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["Error", "errno_name"]

# Return codes of the C API (confd_lib.h).
OK = 0
ERR = -1
EOF = -2

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

    @property
    def errno_name(self) -> Optional[str]:
        """``"ERR_HA_BADTOKEN"`` etc., or None for a number without a name."""
        return errno_name(self.confd_errno)

    def __str__(self) -> str:
        # NSO's _ncs.error.Error reads "<strerror> (<errno>): <lasterr>".
        text = "%s (%d)" % (self.strerror, self.confd_errno)
        if self.lasterr:
            text += ": " + self.lasterr
        if self.function:
            text = self.function + ": " + text
        return text

    def __repr__(self) -> str:
        return "Error(confd_errno=%d (%s), strerror=%r, lasterr=%r, function=%r)" % (
            self.confd_errno,
            self.errno_name or "?",
            self.strerror,
            self.lasterr,
            self.function,
        )
