"""The names of NSO's low-level ``_ncs`` module that HA code uses, over
``confd_ha`` -- so that a script written for NSO's Python API::

    import _ncs
    from _ncs import ha, events

    s = socket.socket()
    ha.connect(s, token, ip=_ncs.ADDR, port=_ncs.PORT)
    _ncs.ha.bemaster(s, _ncs.Value("n1"))

runs unchanged against ha-node (or a ConfD/NSO daemon) when the directory
holding this package (``python/`` of the repository, or site-packages after
``pip install ./python``) comes before NSO's own on ``sys.path``.

What is here: the submodules ``ha``, ``events`` and ``error`` (also as
``_ncs.ha`` etc. for ``import _ncs.ha``), ``Value`` and the ``C_*`` type
numbers, the ``ERR_*`` numbers, ``OK``/``ERR``/``EOF``, ``CONFD_PORT``,
``NCS_PORT``, ``NCS_PATH``, and ``PORT``/``ADDR`` as NSO sets them on import:
``$NCS_IPC_PORT`` (default 4569) and ``$NCS_IPC_ADDR`` (default 127.0.0.1).
Nothing else of NSO's ``_ncs`` (maapi, cdb, dp, ...) is provided: using it
raises AttributeError / ImportError.
"""

import os as _os
import sys as _sys

from confd_ha.error import *  # noqa: F401,F403  ERR_*
from confd_ha.value import *  # noqa: F401,F403  Value, C_*
from confd_ha import (  # noqa: F401  (after the above: EOF is the return code here)
    CONFD_PORT,
    EOF,
    ERR,
    NCS_PATH,
    NCS_PORT,
    OK,
    Value,
    error,
    events,
    ha,
)

for _name, _mod in (("ha", ha), ("events", events), ("error", error)):
    _sys.modules[__name__ + "." + _name] = _mod


def _port() -> int:
    try:
        return int(_os.environ.get("NCS_IPC_PORT", ""), 10)
    except ValueError:
        return NCS_PORT


PORT = _port()
ADDR = _os.environ.get("NCS_IPC_ADDR") or "127.0.0.1"
