//! ha-node does what ConfD 6.6 measurably does for the same program
//! (docs/confd-compat.md): one test per behaviour, with real ha-node processes.

mod common;
use common::*;
use confd_ha::client::events::EventClient;
use confd_ha::errcode::*;
use confd_ha::proto::frame::{read_frame, write_frame};
use confd_ha::proto::ha::{
    HaEvent, HaNode, NodeAddr, NOTIF_HA_INFO, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY,
    STATE_SECONDARY_RELAY,
};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn at(name: &str, ip: &str) -> HaNode {
    HaNode {
        id: buf(name),
        addr: NodeAddr::V4(ip.parse().unwrap()),
    }
}

/// Reads HA events until `last` arrives; returns every event read, `last` included.
fn events_until(ev: &mut EventClient, last: &HaEvent) -> Vec<HaEvent> {
    let mut seen = vec![];
    loop {
        let e = next_ha_event(ev, T);
        let done = e == *last;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// n1 primary ← n2 relay ← n3.
struct Chain {
    n1: Node,
    n2: Node,
    n3: Node,
    ev1: EventClient,
}

fn chain() -> Chain {
    let port = free_port();
    let n1 = Node::start("n1", 2, port, &[]);
    let n2 = Node::start("n2", 3, port, &[]);
    let n3 = Node::start("n3", 4, port, &[]);
    let mut ev1 = n1.events(NOTIF_HA_INFO);
    n1.ha().beprimary("n1").unwrap();
    assert_eq!(next_ha_event(&mut ev1, T), HaEvent::IsPrimary);
    let mut h2 = n2.ha();
    h2.besecondary("n2", &n1.as_primary(), true).unwrap();
    h2.berelay().unwrap();
    assert_eq!(
        next_ha_event(&mut ev1, T),
        HaEvent::SecondaryArrived(at("n2", "127.0.0.3"))
    );
    n3.ha().besecondary("n3", &n2.as_primary(), true).unwrap();
    Chain { n1, n2, n3, ev1 }
}

#[test]
fn primary_status_lists_the_secondaries_behind_its_relays() {
    let c = chain();
    // Each node with the address its connection came from.
    let want = vec![at("n2", "127.0.0.3"), at("n3", "127.0.0.4")];
    wait_for("n3 in the primary's status", T, || {
        (c.n1.status() == (STATE_PRIMARY, want.clone())).then_some(())
    });
    assert_eq!(
        c.n2.status(),
        (
            STATE_SECONDARY_RELAY,
            vec![c.n1.as_primary(), at("n3", "127.0.0.4")]
        )
    );
    // n3 leaves: the primary no longer lists it.
    c.n3.ha().benone().unwrap();
    wait_for("n3 gone from the primary's status", T, || {
        (c.n1.status() == (STATE_PRIMARY, vec![at("n2", "127.0.0.3")])).then_some(())
    });
}

#[test]
fn primary_announces_nodes_joining_and_leaving_through_a_relay() {
    let mut c = chain();
    assert_eq!(
        next_ha_event(&mut c.ev1, T),
        HaEvent::SecondaryArrived(at("n3", "127.0.0.4"))
    );
    c.n3.ha().benone().unwrap();
    assert_eq!(
        next_ha_event(&mut c.ev1, T),
        HaEvent::SecondaryDied(at("n3", "127.0.0.4"))
    );
    // The relay itself dying: SECONDARY_DIED for it and for the node behind it.
    c.n3.ha()
        .besecondary("n3", &c.n2.as_primary(), true)
        .unwrap();
    assert_eq!(
        next_ha_event(&mut c.ev1, T),
        HaEvent::SecondaryArrived(at("n3", "127.0.0.4"))
    );
    c.n2.kill9();
    let mut died = vec![next_ha_event(&mut c.ev1, T), next_ha_event(&mut c.ev1, T)];
    died.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        died,
        vec![
            HaEvent::SecondaryDied(at("n2", "127.0.0.3")),
            HaEvent::SecondaryDied(at("n3", "127.0.0.4")),
        ]
    );
    assert_eq!(c.n1.status(), (STATE_PRIMARY, vec![]));
}

#[test]
fn secondary_dead_announces_only_the_nodes_behind_the_dead_relay() {
    let mut c = chain();
    assert_eq!(
        next_ha_event(&mut c.ev1, T),
        HaEvent::SecondaryArrived(at("n3", "127.0.0.4"))
    );
    let mut h1 = c.n1.ha();
    h1.secondary_dead("n2").unwrap();
    c.n2.wait_state(STATE_NONE, T);
    c.n3.wait_state(STATE_NONE, T);
    // A marker event ends the stream to look at.
    h1.benone().unwrap();
    assert_eq!(
        events_until(&mut c.ev1, &HaEvent::IsNone),
        vec![
            HaEvent::SecondaryDied(at("n3", "127.0.0.4")),
            HaEvent::IsNone
        ]
    );
}

#[test]
fn secondary_dead_of_a_direct_secondary_emits_no_event() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    let mut ev = p.events(NOTIF_HA_INFO);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    hp.secondary_dead("s").unwrap();
    s.wait_state(STATE_NONE, T);
    assert_eq!(hp.get_status().unwrap(), (STATE_PRIMARY, vec![]));
    hp.benone().unwrap();
    assert_eq!(
        events_until(&mut ev, &HaEvent::IsNone),
        vec![
            HaEvent::IsPrimary,
            HaEvent::SecondaryArrived(at("s", "127.0.0.3")),
            HaEvent::IsNone
        ]
    );
}

#[test]
fn first_join_of_an_empty_node_is_initialized_by_copy() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    assert_eq!((p.stat("seq"), s.stat("seq")), (0, 0), "both are empty");
    let mut ev = s.events(NOTIF_HA_INFO);
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(
        next_ha_event(&mut ev, T),
        HaEvent::SecondaryInitialized { by_copy: true }
    );
    // A re-join once both hold the same transaction needs no copy.
    p.set("/a", Value::Int32(1));
    let mut hs = s.ha();
    hs.benone().unwrap();
    assert_eq!(next_ha_event(&mut ev, T), HaEvent::IsNone);
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(
        next_ha_event(&mut ev, T),
        HaEvent::SecondaryInitialized { by_copy: false }
    );
}

#[test]
fn status_right_after_async_besecondary_is_secondary() {
    let port = free_port();
    let s = Node::start("s", 3, port, &[]);
    // A "primary" that accepts the connection and says nothing keeps the
    // join running for the whole handshake deadline.
    let silent = TcpListener::bind(format!("127.0.0.5:{port}")).unwrap();
    let mut ev = s.events(NOTIF_HA_INFO);
    let mut hs = s.ha();
    let mute = at("mute", "127.0.0.5");
    hs.besecondary("s", &mute, false).unwrap();
    assert_eq!(hs.get_status().unwrap(), (STATE_SECONDARY, vec![mute]));
    let _held = silent.accept().unwrap();
    let r = next_ha_event(&mut ev, T);
    assert!(
        matches!(r, HaEvent::BeSecondaryResult { result } if result != 0),
        "{r:?}"
    );
    assert_eq!(hs.get_status().unwrap(), (STATE_NONE, vec![]));

    // With a real primary: SECONDARY at once and after the join.
    let p = Node::start("p", 2, port, &[]);
    p.ha().beprimary("p").unwrap();
    hs.besecondary("s", &p.as_primary(), false).unwrap();
    assert_eq!(
        hs.get_status().unwrap(),
        (STATE_SECONDARY, vec![p.as_primary()])
    );
    assert_eq!(
        events_until(&mut ev, &HaEvent::BeSecondaryResult { result: 0 }),
        vec![
            HaEvent::SecondaryInitialized { by_copy: true },
            HaEvent::BeSecondaryResult { result: 0 }
        ]
    );
    assert_eq!(
        hs.get_status().unwrap(),
        (STATE_SECONDARY, vec![p.as_primary()])
    );
}

#[test]
fn benone_then_besecondary_at_once_never_meets_a_duplicate_node_id() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    // Busy threads make the scheduling uneven, as on a loaded machine, so
    // that the new join often reaches the primary before the close of the
    // old link is read there.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut failed = None;
    for i in 0..60 {
        hs.benone().unwrap();
        if let Err(e) = hs.besecondary("s", &p.as_primary(), true) {
            failed = Some(format!(
                "round {i}: besecondary failed: {e} ({})",
                e.errno()
            ));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in spinners {
        t.join().unwrap();
    }
    assert_eq!(failed, None);
    wait_for("one s in the primary's status", T, || {
        (hp.get_status().unwrap() == (STATE_PRIMARY, vec![at("s", "127.0.0.3")])).then_some(())
    });
    // Another node using the same id is still refused.
    let other = Node::start("other", 4, port, &[]);
    let e = other
        .ha()
        .besecondary("s", &p.as_primary(), true)
        .unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_BADNAME, "{e}");
    assert!(e.to_string().contains("HA_DUPLICATE_NODEID"), "{e}");
}

/// Node-to-node hello: the primary answers with the lower of the offered
/// version and its own, down to version 1 (an older ha-node), and refuses
/// anything below.
#[test]
fn node_protocol_version_is_negotiated() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    p.ha().beprimary("p").unwrap();
    let hello = |vsn: i64| -> Term {
        let mut s = TcpStream::connect(format!("127.0.0.2:{port}")).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let t = Term::Tuple(vec![
            Term::atom("ha_hello"),
            Term::int(vsn),
            Term::binary([7u8; 32]),
        ]);
        write_frame(&mut s, &t.encode()).unwrap();
        Term::decode(&read_frame(&mut s, 1 << 20).unwrap()).unwrap()
    };
    let answer = |t: &Term| -> (String, i128) {
        let e = t.as_tuple().unwrap();
        (e[0].as_atom().unwrap().to_owned(), e[1].as_int().unwrap())
    };
    assert_eq!(answer(&hello(1)), ("ha_challenge".into(), 1));
    assert_eq!(answer(&hello(2)), ("ha_challenge".into(), 2));
    assert_eq!(answer(&hello(3)), ("ha_challenge".into(), 3));
    assert_eq!(answer(&hello(99)), ("ha_challenge".into(), 3));
    assert_eq!(
        answer(&hello(0)),
        ("ha_reject".into(), i128::from(CONFD_ERR_HA_BADVSN))
    );
    // A real join still works after all that.
    let s = Node::start("s", 3, port, &[]);
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
}

fn proof(label: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
    m.update(label.as_bytes());
    m.update(a);
    m.update(b);
    m.finalize().into_bytes().to_vec()
}

fn recv_term(s: &mut TcpStream) -> Term {
    Term::decode(&read_frame(s, 1 << 20).unwrap()).unwrap()
}

/// A secondary joining a primary of the previous release (node-to-node
/// protocol version 1, which refuses any other version) connects again with
/// version 1 and speaks it: the 6-element ha_auth, no sub_secondaries report.
/// The old primary is played by the test (no such release binary is at hand).
#[test]
fn secondary_falls_back_to_an_old_primarys_protocol_version() {
    let port = free_port();
    let old = TcpListener::bind(format!("127.0.0.5:{port}")).unwrap();
    let s = Node::start("s", 3, port, &[]);
    let join = std::thread::spawn({
        let ep = s.ep();
        move || {
            let mut h = confd_ha::client::ha::HaClient::connect(&ep, TOKEN).unwrap();
            h.besecondary("s", &at("old", "127.0.0.5"), true)?;
            h.berelay()?;
            Ok::<_, confd_ha::error::Error>(h)
        }
    });
    // First attempts: versions 3 and 2 offered, each refused as a version-1 node does.
    for offered in [3, 2] {
        let (mut c, _) = old.accept().unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        let hello = recv_term(&mut c);
        let e = hello.as_tuple().unwrap();
        assert!(e[0].is_atom("ha_hello"), "{hello:?}");
        assert_eq!(e[1].as_int(), Some(offered));
        let reject = Term::Tuple(vec![
            Term::atom("ha_reject"),
            Term::int(CONFD_ERR_HA_BADVSN),
            Term::binary(format!("incompatible HA version ({offered}, expected 1)")),
        ]);
        write_frame(&mut c, &reject.encode()).unwrap();
    }
    // Second attempt: version 1.
    let (mut c, _) = old.accept().unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let hello = recv_term(&mut c);
    let e = hello.as_tuple().unwrap().to_vec();
    assert_eq!(e[1].as_int(), Some(1), "{hello:?}");
    let ns = e[2].as_binary().unwrap().to_vec();
    let np = [9u8; 32];
    let ch = Term::Tuple(vec![
        Term::atom("ha_challenge"),
        Term::int(1),
        Term::binary(np),
        Term::binary(proof("primary", &ns, &np)),
    ]);
    write_frame(&mut c, &ch.encode()).unwrap();
    let auth = recv_term(&mut c);
    let a = auth.as_tuple().unwrap().to_vec();
    assert!(a[0].is_atom("ha_auth") && a.len() == 6, "{auth:?}");
    assert_eq!(a[1].as_binary().unwrap(), &proof("secondary", &np, &ns)[..]);
    let welcome = Term::Tuple(vec![
        Term::atom("ha_welcome"),
        Term::atom("copy"),
        Term::int(0),
        Term::binary(""),
    ]);
    write_frame(&mut c, &welcome.encode()).unwrap();
    let done = Term::Tuple(vec![
        Term::atom("copy_done"),
        Term::int(0),
        Term::binary(""),
    ]);
    write_frame(&mut c, &done.encode()).unwrap();
    let mut h = join.join().unwrap().expect("besecondary and berelay");
    assert_eq!(
        h.get_status().unwrap(),
        (STATE_SECONDARY_RELAY, vec![at("old", "127.0.0.5")])
    );
    // Only acks and ticks come back: never a sub_secondaries report.
    // (The secondary ticks every 200 ms, so three frames come quickly.)
    for _ in 0..3 {
        let t = recv_term(&mut c);
        let ok = t.is_atom("tick") || t.as_tuple().is_some_and(|e| e[0].is_atom("ack"));
        assert!(ok, "a version-1 primary was sent {t:?}");
        write_frame(&mut c, &Term::atom("tick").encode()).unwrap();
    }
    assert!(s.log_text().contains("refused HA protocol version 3"));
    assert!(s.log_text().contains("refused HA protocol version 2"));
}

/// A node that does not bind its side of the link (HA address 0.0.0.0)
/// is reported with the address the kernel gave its connection.
#[test]
fn a_nodes_address_is_where_its_connection_comes_from() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let any = format!("0.0.0.0:{port}");
    let s = Node::start("s", 3, port, &["--ha-addr", &any]);
    let mut ev = p.events(NOTIF_HA_INFO);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    // Where an unbound connection to the primary comes from on this host.
    let probe = TcpStream::connect(format!("127.0.0.2:{port}")).unwrap();
    let src = probe.local_addr().unwrap().ip().to_string();
    drop(probe);
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    let want = at("s", &src);
    assert_eq!(
        events_until(&mut ev, &HaEvent::SecondaryArrived(want.clone())).last(),
        Some(&HaEvent::SecondaryArrived(want.clone()))
    );
    assert_eq!(hp.get_status().unwrap(), (STATE_PRIMARY, vec![want]));
}

/// A version-2 handshake as secondary `id` of node process `instance`,
/// join attempt `attempt`; returns the primary's answer and the socket.
fn v2_join(p: &Node, id: &str, instance: [u8; 32], attempt: i64) -> (Term, TcpStream) {
    let mut s = TcpStream::connect(format!("{}:{}", p.ip, p.ha_port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let ns = [3u8; 32];
    let hello = Term::Tuple(vec![Term::atom("ha_hello"), Term::int(2), Term::binary(ns)]);
    write_frame(&mut s, &hello.encode()).unwrap();
    let ch = recv_term(&mut s);
    let np = ch.as_tuple().unwrap()[2].as_binary().unwrap().to_vec();
    let auth = Term::Tuple(vec![
        Term::atom("ha_auth"),
        Term::binary(proof("secondary", &np, &ns)),
        Term::binary(id),
        Term::binary(&p.name),
        Term::int(1),
        Term::binary("x"),
        Term::binary(instance),
        Term::int(attempt),
    ]);
    write_frame(&mut s, &auth.encode()).unwrap();
    (recv_term(&mut s), s)
}

fn is_welcome(t: &Term) -> bool {
    t.as_tuple().is_some_and(|e| e[0].is_atom("ha_welcome"))
}

fn is_duplicate(t: &Term) -> bool {
    match t.as_tuple() {
        Some([r, code, why]) => {
            r.is_atom("ha_reject")
                && code.as_int() == Some(i128::from(CONFD_ERR_HA_BADNAME))
                && String::from_utf8_lossy(why.as_binary().unwrap_or_default())
                    .contains("HA_DUPLICATE_NODEID")
        }
        _ => false,
    }
}

#[test]
fn rejoin_replaces_only_an_older_link_of_the_same_node_process() {
    let port = free_port();
    let p = Node::start("p", 2, port, &["--tick-timeout", "0"]);
    p.ha().beprimary("p").unwrap();
    let (me, other) = ([1u8; 32], [2u8; 32]);
    let (t, _first) = v2_join(&p, "s", me, 5);
    assert!(is_welcome(&t), "{t:?}");
    // Another node process with the same id: refused.
    let (t, _) = v2_join(&p, "s", other, 9);
    assert!(is_duplicate(&t), "{t:?}");
    // An older attempt of the same process arriving late: refused.
    let (t, _) = v2_join(&p, "s", me, 4);
    assert!(is_duplicate(&t), "{t:?}");
    let (t, _) = v2_join(&p, "s", me, 5);
    assert!(is_duplicate(&t), "{t:?}");
    // A newer attempt of the same process replaces its link.
    let (t, _second) = v2_join(&p, "s", me, 6);
    assert!(is_welcome(&t), "{t:?}");
    assert_eq!(p.status().1.len(), 1);
    assert!(p
        .log_text()
        .contains("replaced by a new connection from the same node"));
}

/// Reports travel up a chain of relays: n1 ← n2 (relay) ← n3 (relay) ← n4.
#[test]
fn primary_lists_the_nodes_behind_a_chain_of_relays() {
    let mut c = chain();
    let mut h3 = c.n3.ha();
    h3.berelay().unwrap();
    let n4 = Node::start("n4", 5, c.n1.ha_port, &[]);
    n4.ha().besecondary("n4", &c.n3.as_primary(), true).unwrap();
    let want = vec![
        at("n2", "127.0.0.3"),
        at("n3", "127.0.0.4"),
        at("n4", "127.0.0.5"),
    ];
    wait_for("n4 in the primary's status", T, || {
        (c.n1.status() == (STATE_PRIMARY, want.clone())).then_some(())
    });
    let mut arrived = vec![];
    while arrived.len() < 2 {
        match next_ha_event(&mut c.ev1, T) {
            HaEvent::SecondaryArrived(n) => arrived.push(n.id.to_string()),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(arrived, vec!["n3", "n4"]);
    // The middle relay stops relaying: n4 goes, n3 stays.
    h3.besecondary("n3", &c.n2.as_primary(), true).unwrap();
    assert_eq!(
        next_ha_event(&mut c.ev1, T),
        HaEvent::SecondaryDied(at("n4", "127.0.0.5"))
    );
    assert_eq!(c.n1.status(), (STATE_PRIMARY, want[..2].to_vec()));
}
