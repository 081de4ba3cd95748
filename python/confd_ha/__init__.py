"""Python bindings for libconfd_ha: ConfD/NSO HA control (``confd_ha.ha``, as
NSO's ``_ncs.ha``), HA event notifications (``confd_ha.events``, as
``_ncs.events``), an availability-group API (``confd_ha.availability_group``)
and ha-node's data API (``confd_ha.data``).

Pure Python over the shared library with ctypes; see README.md for how the
library is found. The library is loaded and ``confd_init()`` is called once,
on import. If it cannot be loaded the import still succeeds (constants and
the exception class stay usable) and every call raises
:class:`LibraryError` saying why; ``library_error()`` returns it.
"""

from __future__ import annotations

from typing import Optional

from . import error
from ._lib import ENV_LIBRARY, LibraryError
from .error import EOF, ERR, OK, Error

__version__ = "0.1.0"

CONFD_PORT = 4565
NCS_PORT = 4569
NCS_PATH = "/tmp/nso/nso-ipc"
PORT = CONFD_PORT

from . import _lib  # noqa: E402

_load_error = _lib.try_load()

from . import availability_group, data, events, ha  # noqa: E402


def library_error() -> Optional[LibraryError]:
    """Why the library could not be loaded on import (None if it was)."""
    return _load_error


def lib_version() -> Optional[str]:
    """The library's own version string (``confd_ha_lib_version()``), or None
    if this build does not export it; raises LibraryError."""
    lib = _lib.library()
    if not lib.has("confd_ha_lib_version"):
        return None
    v = lib.fn("confd_ha_lib_version")()
    return v.decode("utf-8", "replace") if v else None


def library_path() -> str:
    """The path (or loader name) of the libconfd_ha in use; raises LibraryError."""
    return _lib.library().path


__all__ = [
    "Error", "LibraryError", "error", "ha", "events", "availability_group",
    "OK", "ERR", "EOF", "CONFD_PORT", "NCS_PORT", "NCS_PATH", "PORT",
    "ENV_LIBRARY", "library_error", "library_path", "lib_version",
]
