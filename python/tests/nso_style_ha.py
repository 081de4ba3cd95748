"""A small HA program written for NSO's Python API (``import _ncs``), run
unchanged by test_ncs_shim.py against ha-node with this repository's
``python/`` on PYTHONPATH. It reaches the node through ``_ncs.ADDR`` /
``_ncs.PORT`` ($NCS_IPC_ADDR / $NCS_IPC_PORT).

Usage: nso_style_ha.py TOKEN SECONDARY_PORT
"""

import socket
import sys

import _ncs
from _ncs import events, ha


def main():
    token, secondary_port = sys.argv[1], int(sys.argv[2])

    ev = socket.socket()
    data = events.NotificationsData(
        heartbeat_interval=1000,
        health_check_interval=0,
        stream_name=None,
        start_time=_ncs.Value(None, _ncs.C_NOEXISTS),
        stop_time=_ncs.Value(None, _ncs.C_NOEXISTS),
    )
    events.notifications_connect2(ev, events.NOTIF_HA_INFO, data, ip=_ncs.ADDR, port=_ncs.PORT)

    s = socket.socket()
    ha.connect(s, token, ip=_ncs.ADDR, port=_ncs.PORT)
    _ncs.ha.bemaster(s, _ncs.Value("n1", _ncs.C_BUF))
    n = events.read_notification(ev)
    if n["type"] == events.NOTIF_HA_INFO and n["hnot"]["type"] == events.HA_INFO_IS_MASTER:
        print("event: IS_MASTER", "_notif" in n)

    try:
        ha.berelay(s)
    except _ncs.error.Error as e:
        print("berelay: %d %s | %s" % (e.confd_errno, e.confd_strerror, e.confd_lasterr))
        print("berelay is ERR_BADSTATE:", e.confd_errno == _ncs.ERR_BADSTATE)

    s2 = socket.socket()
    ha.connect(s2, token, ip=_ncs.ADDR, port=secondary_port)
    ha.beslave(s2, _ncs.Value("n2"), _ncs.Value("n1"), "127.0.0.1", 1)
    n = events.read_notification(ev)
    node = n["hnot"]["slave_arrived"]
    nodeid = node["nodeid"]
    print("event: SLAVE_ARRIVED %s %s %s" % (nodeid, nodeid.confd_type_str(), node["ip4"]))
    print("status:", ha.status(s))

    # A second HA connection makes the node close the first one.
    s3 = socket.socket()
    ha.connect(s3, token, ip=_ncs.ADDR, port=_ncs.PORT)
    ha.status(s3)
    try:
        ha.status(s)
    except _ncs.error.EOF as e:
        print("EOF: %d" % e.confd_errno)

    ha.benone(s2)
    ha.benone(s3)
    for sock in (s, s2, s3, ev):
        sock.close()


if __name__ == "__main__":
    main()
