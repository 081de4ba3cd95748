//! Replication, status and write refusal with real ha-node processes.

mod common;
use common::*;
use confd_ha::client::data::Txn;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{STATE_NONE, STATE_PRIMARY, STATE_SECONDARY};
use confd_ha::value::Value;
use std::time::Duration;

fn remote_code(e: &confd_ha::error::Error) -> i32 {
    e.errno()
}

#[test]
fn three_nodes_replicate_sync_and_report_status() {
    let port = free_port();
    let p = Node::start("p1", 2, port, &[]);
    let s1 = Node::start("s1", 3, port, &[]);
    let s2 = Node::start("s2", 4, port, &[]);
    // Everyone starts in NONE with no nodes.
    assert_eq!(p.status(), (STATE_NONE, vec![]));

    let mut hp = p.ha();
    hp.beprimary("p1").unwrap();
    assert_eq!(hp.get_status().unwrap().0, STATE_PRIMARY);
    // Data committed before the secondaries join arrives by full copy.
    p.set("/system/hostname", buf("alpha"));

    let mut h1 = s1.ha();
    h1.besecondary("s1", &p.as_primary(), true).unwrap();
    let mut h2 = s2.ha();
    h2.besecondary("s2", &p.as_primary(), false).unwrap();
    s2.wait_state(STATE_SECONDARY, Duration::from_secs(10));
    assert_eq!(s1.get("/system/hostname"), Some(buf("alpha")));
    assert_eq!(s2.get("/system/hostname"), Some(buf("alpha")));
    assert_eq!(s1.stat("full_copies_received"), 1);

    wait_for(
        "two secondaries on the primary",
        Duration::from_secs(5),
        || (hp.get_status().unwrap().1.len() == 2).then_some(()),
    );
    let (st, nodes) = hp.get_status().unwrap();
    assert_eq!(st, STATE_PRIMARY);
    let mut ids: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, vec!["s1", "s2"]);
    let s1_entry = nodes.iter().find(|n| n.id == buf("s1")).unwrap();
    assert_eq!(s1_entry.addr.to_string(), "127.0.0.3");
    let (st, nodes) = h1.get_status().unwrap();
    assert_eq!((st, nodes), (STATE_SECONDARY, vec![p.as_primary()]));

    // Sync replication: readable on both secondaries as soon as the commit returns.
    let mut d = p.data();
    for i in 0..20u32 {
        let mut t = Txn::new();
        t.set(
            &format!("/servers/server{{s{i}}}/port"),
            Value::UInt16(8000 + i as u16),
        );
        t.set("/counter", Value::UInt32(i));
        let txid = d.commit(&t).unwrap();
        for s in [&s1, &s2] {
            assert_eq!(s.get("/counter"), Some(Value::UInt32(i)), "on {}", s.name);
            assert_eq!(s.data().txid().unwrap(), txid);
        }
    }
    let mut t = Txn::new();
    t.delete("/servers/server{s3}");
    d.commit(&t).unwrap();
    assert!(!s2.data().exists("/servers/server{s3}/port").unwrap());
    assert_eq!(s1.data().list("/servers").unwrap().len(), 19);

    // Writes on a secondary are refused with a clear reason.
    let mut t = Txn::new();
    t.set("/x", Value::Int32(1));
    let e = s1.data().commit(&t).unwrap_err();
    assert_eq!(remote_code(&e), CONFD_ERR_NOT_WRITABLE);
    assert!(e.to_string().contains("secondary"), "{e}");
    assert!(e.to_string().contains("p1"), "{e}");
    // Reads of a missing path: NOEXISTS.
    let e = s1.data().get("/nope").unwrap_err();
    assert_eq!(remote_code(&e), CONFD_ERR_NOEXISTS);
    assert_eq!(p.stat("full_copies_sent"), 2);
}

#[test]
fn join_errors_connect_badtoken_badname() {
    let port = free_port();
    let p = Node::start("p1", 2, port, &[]);
    let s = Node::start("s1", 3, port, &[]);
    // Nobody listening yet.
    let mut hs = s.ha();
    let e = hs.besecondary("s1", &p.as_primary(), true).unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_CONNECT, "{e}");
    assert_eq!(hs.get_status().unwrap().0, STATE_NONE);

    p.ha().beprimary("p1").unwrap();
    let mut hp = p.ha();
    p.set("/a", buf("1"));

    // Wrong token: HA_BADTOKEN and nothing replicated.
    let mut bad = s.ha_token("wrong-token");
    let e = bad.besecondary("s1", &p.as_primary(), true).unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_BADTOKEN, "{e}");
    assert_eq!(s.get("/a"), None);
    assert_eq!(bad.get_status().unwrap().0, STATE_NONE);
    assert!(hp.get_status().unwrap().1.is_empty());

    // Wrong primary name: HA_BADNAME.
    let mut hs = s.ha();
    let mut wrong = p.as_primary();
    wrong.id = buf("not-p1");
    let e = hs.besecondary("s1", &wrong, true).unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_BADNAME, "{e}");
    assert_eq!(s.get("/a"), None);

    // And then it works.
    hs.besecondary("s1", &p.as_primary(), true).unwrap();
    assert_eq!(s.get("/a"), Some(buf("1")));
    // A second node with the same id is refused.
    let s_dup = Node::start("s1dup", 4, port, &[]);
    let e = s_dup
        .ha()
        .besecondary("s1", &p.as_primary(), true)
        .unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_BADNAME, "{e}");
}

#[test]
fn ha_orders_and_states() {
    let port = free_port();
    let a = Node::start("a", 2, port, &[]);
    let b = Node::start("b", 3, port, &[]);
    let mut ha = a.ha();
    // berelay on a node that is not a secondary.
    let e = ha.berelay().unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_BADSTATE);
    ha.beprimary("a").unwrap();
    // beprimary again: ok.
    ha.beprimary("a").unwrap();
    // A second node bound to the same HA address cannot be primary: HA_BIND.
    let c = Node::start("c", 2, port, &[]);
    let e = c.ha().beprimary("c").unwrap_err();
    assert_eq!(e.errno(), CONFD_ERR_HA_BIND, "{e}");
    assert!(e.to_string().contains("cannot bind"), "{e}");
    // secondary_dead of an unknown node: ok.
    ha.secondary_dead("nobody").unwrap();
    let mut hb = b.ha();
    hb.besecondary("b", &a.as_primary(), true).unwrap();
    wait_for("b on a", Duration::from_secs(5), || {
        (ha.get_status().unwrap().1.len() == 1).then_some(())
    });
    ha.secondary_dead("b").unwrap();
    assert!(ha.get_status().unwrap().1.is_empty());
    // b notices the closed link and falls back to NONE.
    b.wait_state(STATE_NONE, Duration::from_secs(5));
    // A new HA connection replaces the old one.
    let mut ha2 = a.ha();
    // (The token frame has no reply: one call on the new connection makes sure it is in.)
    assert_eq!(ha2.get_status().unwrap().0, STATE_PRIMARY);
    assert!(ha.get_status().is_err());
    ha2.benone().unwrap();
    assert_eq!(ha2.get_status().unwrap(), (STATE_NONE, vec![]));
    // Writes work in NONE.
    a.set("/n", Value::Bool(true));
    assert_eq!(a.get("/n"), Some(Value::Bool(true)));
}

#[test]
fn the_later_accepted_ha_connection_wins_whatever_order_tokens_arrive_in() {
    use confd_ha::client::ha as hac;
    use confd_ha::proto::hello::CLIENT_HA;
    let port = free_port();
    let a = Node::start("a", 2, port, &[]);
    let b = Node::start("b", 3, port, &[]);
    // `early` is accepted first but sends its token last.
    let mut early = a.ep().connect(CLIENT_HA).unwrap();
    let mut late = a.ep().connect(CLIENT_HA).unwrap();
    hac::send_token(&mut late, b"late-token").unwrap();
    assert_eq!(hac::get_status(&mut late).unwrap().0, STATE_NONE);
    hac::send_token(&mut early, b"early-token").unwrap();
    // The stale connection is closed; the newer one keeps working.
    let e = hac::get_status(&mut early).unwrap_err();
    assert!(e.is_eof(), "stale HA connection: {e:?}");
    assert_eq!(hac::get_status(&mut late).unwrap().0, STATE_NONE);
    assert!(a
        .log_text()
        .contains("a newer HA control connection already holds the token"));
    // And the token is still the newer connection's.
    hac::beprimary(&mut late, &buf("a")).unwrap();
    let err = b
        .ha_token("early-token")
        .besecondary("b", &a.as_primary(), true)
        .unwrap_err();
    assert_eq!(remote_code(&err), CONFD_ERR_HA_BADTOKEN);
    b.ha_token("late-token")
        .besecondary("b", &a.as_primary(), true)
        .unwrap();
}
