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

import os
from typing import Optional

from . import error, value
from ._lib import ENV_LIBRARY, LibraryError
from .error import *  # noqa: F401,F403  the ERR_* numbers at top level, as _ncs has them
from .value import *  # noqa: F401,F403  Value and the C_* type numbers, as _ncs has them
from .error import ERR, OK, Error
from .value import Value

__version__ = "0.1.0"

# Return code of the C API for a closed socket (``_ncs.EOF``); the exception
# class is ``confd_ha.error.EOF``.
EOF = error.RC_EOF

CONFD_PORT = 4565
NCS_PORT = 4569
NCS_PATH = "/tmp/nso/nso-ipc"


def _env_port(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, ""), 10)
    except ValueError:
        return default


# The daemon's IPC address, read once on import like ConfD's library does:
# $CONFD_IPC_PORT (default CONFD_PORT, 4565) and $CONFD_IPC_ADDR (default
# 127.0.0.1). The ``_ncs`` shim has NSO's: $NCS_IPC_PORT (default 4569) and
# $NCS_IPC_ADDR.
PORT = _env_port("CONFD_IPC_PORT", CONFD_PORT)
ADDR = os.environ.get("CONFD_IPC_ADDR") or "127.0.0.1"

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
    "Error", "LibraryError", "Value", "error", "value", "ha", "events", "availability_group",
    "data", "OK", "ERR", "EOF", "CONFD_PORT", "NCS_PORT", "NCS_PATH", "PORT", "ADDR",
    "ENV_LIBRARY", "library_error", "library_path", "lib_version",
] + [k for k in dir(error) if k.startswith("ERR_")] + [k for k in dir(value) if k.startswith("C_")]
