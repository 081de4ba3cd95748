"""Finding, loading and binding libconfd_ha.so -- and the one place that checks
every call.

Where the library is looked for, first match wins:

1. ``$CONFD_HA_LIBRARY`` -- the full path of the shared library. When set it is
   the only candidate: a wrong path is an error, never silently skipped.
2. ``libconfd_ha.so`` next to this package (a copy installed with it).
3. ``<repo>/target/release/libconfd_ha.so`` when the package runs from the
   source tree (``<repo>/python/confd_ha``, with ``<repo>/Cargo.toml``).
4. The system loader: ``ctypes.util.find_library("confd_ha")``, then
   ``libconfd_ha.so.0`` and ``libconfd_ha.so`` (``LD_LIBRARY_PATH``, ldconfig).

Every C function that returns a ConfD status (``CONFD_OK`` / ``CONFD_ERR`` /
``CONFD_EOF``) is declared here with :func:`_check` as its ctypes ``errcheck``:
on any result but ``CONFD_OK`` it reads ``confd_errno``, ``confd_strerror()``
and ``confd_lasterr()`` in the calling thread (all three are per thread in the
library) and raises :class:`confd_ha.error.Error`. Nothing else in the package
inspects return codes.

ctypes releases the GIL around every call, so a thread blocked in
``confd_read_notification()`` does not stop the others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import POINTER, c_char_p, c_int, c_void_p
from typing import Dict, List, Optional, Tuple

from . import error as _error
from .error import Error

ENV_LIBRARY = "CONFD_HA_LIBRARY"
LIBRARY_FILE = "libconfd_ha.so"

# confd_init(name, estream, debug) is a macro over confd_init_vsn_sz() in
# ConfD's confd_lib.h; these are the numbers the macro passes (NSO 6.7 API,
# MAXDEPTH 20, MAXKEYLEN 9) -- the same defaults as our include/confd_lib.h.
INIT_NAME = b"confd_ha-python"
CONFD_LIB_API_VSN = 0x08070000
MAXDEPTH = 20
MAXKEYLEN = 9
CONFD_SILENT = 0

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


class LibraryError(OSError):
    """libconfd_ha.so could not be found or loaded, or lacks a function the
    package needs. The message says where it looked and what to do."""


def _check(result, func, arguments):
    """The errcheck of every status-returning C function (see module doc)."""
    if result == _error.OK:
        return result
    lib = _loaded
    code = lib.errno() if lib is not None else _error.ERR_INTERNAL
    if result == _error.RC_EOF:
        # The daemon closed the socket: always ERR_EOF (spec A.2, M-LIB).
        code = _error.ERR_EOF
    elif code == 0:
        code = _error.ERR_INTERNAL
    strerror = lib.strerror(code) if lib is not None else None
    lasterr = lib.lasterr() if lib is not None else ""
    if result not in (_error.ERR, _error.RC_EOF) and not lasterr:
        lasterr = "unexpected return value %d" % result
    cls = _error.EOF if code == _error.ERR_EOF else Error
    raise cls(code, strerror, lasterr, getattr(func, "__name__", None))


# name: (restype, argtypes, checked)
_CORE: Dict[str, Tuple[object, List[object], bool]] = {
    "confd_errno_location": (POINTER(c_int), [], False),
    "confd_lasterr": (c_char_p, [], False),
    "confd_strerror": (c_char_p, [c_int], False),
    "confd_ha_connect": (c_int, [c_int, c_void_p, c_int, c_char_p], True),
    "confd_ha_beprimary": (c_int, [c_int, c_void_p], True),
    "confd_ha_besecondary": (c_int, [c_int, c_void_p, c_void_p, c_int], True),
    "confd_ha_berelay": (c_int, [c_int], True),
    "confd_ha_benone": (c_int, [c_int], True),
    "confd_ha_get_status": (c_int, [c_int, c_void_p], True),
    "confd_ha_secondary_dead": (c_int, [c_int, c_void_p], True),
}

# Bound when present; a call of a missing one says which function is missing.
_OPTIONAL: Dict[str, Tuple[object, List[object], bool]] = {
    "confd_init_vsn_sz": (None, [c_char_p, c_void_p, c_int, c_int, c_int, c_int], False),
    "confd_init": (None, [c_char_p, c_void_p, c_int], False),
    "confd_ha_lib_version": (c_char_p, [], False),
    # confd_events.h (HA parts)
    "confd_notifications_connect": (c_int, [c_int, c_void_p, c_int, c_int], True),
    "confd_notifications_connect2": (c_int, [c_int, c_void_p, c_int, c_int, c_void_p], True),
    "confd_read_notification": (c_int, [c_int, c_void_p], True),
    "confd_free_notification": (None, [c_void_p], False),
    "confd_sync_ha_notification": (c_int, [c_int], True),
    # cha.h: the availability-group API
    "cha_node_state_get": (c_int, [c_void_p, c_int, c_void_p], True),
    "cha_node_health_get": (c_int, [c_void_p, c_int, c_void_p], True),
    "cha_subscribe": (c_int, [c_void_p, c_int, c_int, c_int, c_void_p, c_void_p, c_void_p], True),
    "cha_unsubscribe": (None, [c_void_p], False),
    # cha.h: the data API
    "cha_data_connect": (c_int, [c_int, c_void_p, c_int], True),
    "cha_get": (c_int, [c_int, c_char_p, c_void_p], True),
    "cha_free_value": (None, [c_void_p], False),
    "cha_exists": (c_int, [c_int, c_char_p, c_void_p], True),
    "cha_list": (c_int, [c_int, c_char_p, c_void_p], True),
    "cha_free_list": (None, [POINTER(c_char_p)], False),
    "cha_txid": (c_int, [c_int, c_char_p, c_int], True),
    "cha_get_linearizable": (c_int, [c_int, c_char_p, c_void_p], True),
    "cha_raft": (c_int, [c_int, c_char_p, c_void_p, c_int, c_void_p], True),
    "cha_free_text": (None, [c_void_p], False),
    "cha_txn_new": (c_void_p, [], False),
    "cha_txn_set": (c_int, [c_void_p, c_char_p, c_void_p], True),
    "cha_txn_delete": (c_int, [c_void_p, c_char_p], True),
    "cha_txn_commit": (c_int, [c_int, c_void_p, c_char_p, c_int], True),
    "cha_txn_free": (None, [c_void_p], False),
}

EVENTS_FUNCTIONS = (
    "confd_notifications_connect",
    "confd_read_notification",
    "confd_sync_ha_notification",
)


class Library:
    """A loaded and initialised libconfd_ha."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.cdll = cdll
        self.path = path
        self._funcs: Dict[str, object] = {}
        missing = [n for n in _CORE if not hasattr(cdll, n)]
        if not hasattr(cdll, "confd_init_vsn_sz") and not hasattr(cdll, "confd_init"):
            missing.insert(0, "confd_init_vsn_sz")
        if missing:
            raise LibraryError(
                "%s is not a usable libconfd_ha: it lacks %s "
                "(an old or unfinished build? rebuild with `cargo build --release`)"
                % (path, ", ".join(missing))
            )
        for table in (_CORE, _OPTIONAL):
            for name, (restype, argtypes, checked) in table.items():
                if hasattr(cdll, name):
                    f = getattr(cdll, name)
                    f.restype = restype
                    f.argtypes = argtypes
                    if checked:
                        f.errcheck = _check
                    self._funcs[name] = f
        self._errno_location = self._funcs["confd_errno_location"]
        self._lasterr = self._funcs["confd_lasterr"]
        self._strerror = self._funcs["confd_strerror"]

    def has(self, name: str) -> bool:
        """Whether the library exports ``name``."""
        return name in self._funcs or hasattr(self.cdll, name)

    def fn(self, name: str):
        """The bound C function ``name``; NotImplementedError if the library
        does not export it."""
        f = self._funcs.get(name)
        if f is None:
            raise NotImplementedError(
                "%s has no %s(); this build of libconfd_ha does not provide it"
                % (self.path, name)
            )
        return f

    def init(self) -> None:
        if "confd_init_vsn_sz" in self._funcs:
            self._funcs["confd_init_vsn_sz"](
                INIT_NAME, None, CONFD_SILENT, CONFD_LIB_API_VSN, MAXDEPTH, MAXKEYLEN
            )
        else:
            self._funcs["confd_init"](INIT_NAME, None, CONFD_SILENT)

    def errno(self) -> int:
        p = self._errno_location()
        return int(p[0]) if p else _error.ERR_INTERNAL

    def lasterr(self) -> str:
        s = self._lasterr()
        return s.decode("utf-8", "replace") if s else ""

    def strerror(self, code: int) -> str:
        s = self._strerror(int(code))
        return s.decode("utf-8", "replace") if s else "Unknown error"


def candidates() -> List[Tuple[str, str]]:
    """Where the library is looked for, in order: (description, path or name)."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return [("$" + ENV_LIBRARY, env)]
    out = []
    beside = os.path.join(_PKG_DIR, LIBRARY_FILE)
    if os.path.exists(beside):
        out.append(("next to the package", beside))
    repo = os.path.dirname(os.path.dirname(_PKG_DIR))
    built = os.path.join(repo, "target", "release", LIBRARY_FILE)
    if os.path.exists(os.path.join(repo, "Cargo.toml")) and os.path.exists(built):
        out.append(("source tree", built))
    found = ctypes.util.find_library("confd_ha")
    if found:
        out.append(("system loader", found))
    out.append(("system loader", LIBRARY_FILE + ".0"))
    out.append(("system loader", LIBRARY_FILE))
    return out


def _open() -> Library:
    tried = []
    for where, name in candidates():
        if where.startswith("$") and not os.path.exists(name):
            raise LibraryError(
                "%s=%s: no such file (set it to the full path of libconfd_ha.so)"
                % (ENV_LIBRARY, name)
            )
        try:
            cdll = ctypes.CDLL(name)
        except OSError as e:
            if where.startswith("$") or where != "system loader":
                raise LibraryError("cannot load %s (%s): %s" % (name, where, e)) from e
            tried.append(name)
            continue
        lib = Library(cdll, name)
        lib.init()
        return lib
    raise LibraryError(
        "libconfd_ha.so not found: set %s to its full path, put it next to the "
        "confd_ha package (%s), build it in the source tree (`cargo build "
        "--release` -> target/release/), or install it where the system loader "
        "finds it (tried %s)" % (ENV_LIBRARY, _PKG_DIR, ", ".join(tried))
    )


_lock = threading.Lock()
_loaded: Optional[Library] = None
_load_error: Optional[LibraryError] = None


def library() -> Library:
    """The loaded, initialised library (loaded once; later calls reuse it)."""
    global _loaded, _load_error
    lib = _loaded
    if lib is not None:
        return lib
    with _lock:
        if _loaded is None:
            if _load_error is not None:
                raise LibraryError(str(_load_error))
            try:
                _loaded = _open()
            except LibraryError as e:
                _load_error = e
                raise
        return _loaded


def try_load() -> Optional[LibraryError]:
    """Loads and initialises the library if possible (done once on import);
    returns the error instead of raising it. Calls raise it later."""
    try:
        library()
    except LibraryError as e:
        return e
    return None


def fn(name: str):
    """Shortcut: ``library().fn(name)``."""
    return library().fn(name)


def has(name: str) -> bool:
    """Whether the library is loaded and exports ``name`` (False if not loaded)."""
    try:
        return library().has(name)
    except LibraryError:
        return False
