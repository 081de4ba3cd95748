//! ha-node serves programs built against any ConfD / NSO release: it
//! accepts every protocol version in the hello, answers with that version,
//! and speaks that version's shapes (spec §H.4, §H.8): the 4-tuple
//! subscription and `{8192}` heartbeats for ConfD 6.x (protocol < 70), the
//! 5-tuple and `{8192, 0}` after; the `ha_synced` acknowledgement in any atom
//! encoding; any other message closes the notification socket, as ConfD does.

mod common;
use common::*;
use confd_ha::proto::frame::{read_frame, write_frame};
use confd_ha::proto::ha::{
    ha_sync_ack, legacy_ha_sync_ack, HaEvent, Subscription, NOTIF_HA_INFO, NOTIF_HA_INFO_SYNC,
    NOTIF_HEARTBEAT,
};
use confd_ha::proto::hello::{ClientHello, ServerHello, CLIENT_EVENT_MGR, CLIENT_HA};
use confd_ha::proto::term::Term;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn raw_hello(n: &Node, client_id: u8, proto: u16, vsn: u32) -> (TcpStream, ServerHello) {
    let mut s = TcpStream::connect(format!("127.0.0.1:{}", n.ipc_port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let h = ClientHello {
        client_id,
        proto_vsn: proto,
        lib_vsn: vsn,
        maxdepth: 20,
        maxkeylen: 9,
    };
    s.write_all(&h.encode()).unwrap();
    let mut b = [0u8; 9];
    s.read_exact(&mut b).unwrap();
    (s, ServerHello::decode(&b))
}

fn send(s: &mut TcpStream, t: &Term) {
    write_frame(s, &t.encode()).unwrap();
}

fn recv(s: &mut TcpStream) -> Term {
    Term::decode(&read_frame(s, 1 << 20).unwrap()).unwrap()
}

/// An event client of protocol `proto` subscribed with `sub`.
fn subscriber(n: &Node, proto: u16, sub: Term) -> TcpStream {
    let (mut s, a) = raw_hello(n, CLIENT_EVENT_MGR, proto, 0);
    assert_eq!(a.status, 0);
    send(&mut s, &sub);
    assert_eq!(recv(&mut s), Term::ok());
    s
}

/// Reads frames until a heartbeat; returns it.
fn next_heartbeat(s: &mut TcpStream) -> Term {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = recv(s);
        if t.as_tuple().and_then(|e| e.first()) == Some(&Term::Int(NOTIF_HEARTBEAT)) {
            return t;
        }
        assert!(Instant::now() < deadline, "no heartbeat");
    }
}

/// Reads frames until an HA event; returns it.
fn next_event(s: &mut TcpStream) -> HaEvent {
    loop {
        let t = recv(s);
        let e = t.as_tuple().unwrap();
        if e[0] == Term::Int(NOTIF_HA_INFO) {
            return HaEvent::from_inner(&e[1]).unwrap();
        }
    }
}

fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn every_protocol_version_is_accepted_and_answered_with_itself() {
    let n = Node::start("v", 1, free_port(), &[]);
    for (proto, vsn) in [
        (60u16, 0x0600_0000u32),
        (66, 0x0606_0000),
        (69, 0),
        (70, 0x0700_0000),
        (86, 0x0806_0800),
        (87, 0x0807_0000),
        (200, 0xffff_ffff),
    ] {
        for id in [CLIENT_HA, CLIENT_EVENT_MGR] {
            let (_s, a) = raw_hello(&n, id, proto, vsn);
            assert_eq!(
                (a.status, a.proto_vsn, a.vsn),
                (0, proto, vsn),
                "client {id}"
            );
        }
    }
    // An unknown client id is still refused, with the daemon's own version.
    let (_s, a) = raw_hello(&n, 99, 66, 0);
    assert_eq!((a.status, a.proto_vsn), (1, 87));
}

#[test]
fn a_confd66_program_gets_confd66_shapes_and_its_ha_synced_releases_the_hold() {
    let n = Node::start("v66", 2, free_port(), &[]);
    let mask = NOTIF_HA_INFO | NOTIF_HA_INFO_SYNC | NOTIF_HEARTBEAT;
    let sub = Subscription {
        mask,
        heartbeat_ms: 1000,
        health_check_ms: 0,
        verbosity: 0,
    };
    // ConfD 6.6's library: the 4-tuple.
    let mut s66 = subscriber(&n, 66, sub.to_term_for(66));
    assert_eq!(sub.to_term_for(66).as_tuple().unwrap().len(), 4);
    assert_eq!(
        next_heartbeat(&mut s66),
        Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT)])
    );
    // NSO's: the 5-tuple, and the other heartbeat shape.
    let mut s87 = subscriber(&n, 87, sub.to_term_for(87));
    assert_eq!(
        next_heartbeat(&mut s87),
        Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT), Term::int(0)])
    );

    let mut ha = n.ha();
    ha.beprimary("v66").unwrap();
    assert_eq!(next_event(&mut s66), HaEvent::IsPrimary);
    assert_eq!(next_event(&mut s87), HaEvent::IsPrimary);
    // ConfD 6.6's library writes ha_synced as ATOM_EXT, NSO's as
    // SMALL_ATOM_UTF8: both count. The next order waits for both.
    let mut atom_ext = vec![131, 100, 0, 9];
    atom_ext.extend_from_slice(b"ha_synced");
    write_frame(&mut s66, &atom_ext).unwrap();
    send(&mut s87, &ha_sync_ack());
    let (tx, rx) = channel();
    let t = std::thread::spawn(move || {
        let r = ha.benone();
        let _ = tx.send(r.is_ok());
        ha
    });
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(true),
        "benone held: the acknowledgements were not taken"
    );
    let _ha = t.join().unwrap();
    assert_eq!(next_event(&mut s66), HaEvent::IsNone);
    assert_eq!(next_event(&mut s87), HaEvent::IsNone);
}

#[test]
fn the_old_ack_is_taken_and_any_other_message_closes_the_socket() {
    let n = Node::start("vack", 3, free_port(), &[]);
    let sub = Subscription {
        mask: NOTIF_HA_INFO | NOTIF_HA_INFO_SYNC,
        heartbeat_ms: 0,
        health_check_ms: 0,
        verbosity: 0,
    };
    let mut old = subscriber(&n, 87, sub.to_term());
    let mut ha = n.ha();
    ha.beprimary("vack").unwrap();
    assert_eq!(next_event(&mut old), HaEvent::IsPrimary);
    send(&mut old, &legacy_ha_sync_ack());
    ha.benone().unwrap();
    assert_eq!(next_event(&mut old), HaEvent::IsNone);
    send(&mut old, &legacy_ha_sync_ack());
    // Any other term: ConfD closes the socket, so does ha-node.
    let mut odd = subscriber(&n, 66, sub.to_term_for(66));
    send(
        &mut odd,
        &Term::Tuple(vec![Term::int(0), Term::atom("something")]),
    );
    assert!(closed_by_daemon(&mut odd));
    // The node goes on (and holds nothing for the closed subscriber).
    ha.beprimary("vack").unwrap();
    assert_eq!(next_event(&mut old), HaEvent::IsPrimary);
    let log = n.log_text();
    assert!(log.contains("libconfd_ha 0.1"), "{log}");
    assert!(log.contains("closing, as ConfD does"), "{log}");
}
