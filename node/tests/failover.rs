//! Failover, re-join without copy, restart, divergence, relays, durability,
//! frozen secondaries.

mod common;
use common::*;
use confd_ha::client::data::Txn;
use confd_ha::client::events::EventClient;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{
    HaEvent, NOTIF_HA_INFO, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY, STATE_SECONDARY_RELAY,
};
use confd_ha::value::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

#[test]
fn failover_promote_rejoin_restart_and_diverge() {
    let port = free_port();
    let mut p = Node::start("p", 2, port, &[]);
    let s1 = Node::start("s1", 3, port, &[]);
    let mut s2 = Node::start("s2", 4, port, &[]);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    p.set("/before", buf("copy"));
    let mut h1 = s1.ha();
    let mut h2 = s2.ha();
    h1.besecondary("s1", &p.as_primary(), true).unwrap();
    h2.besecondary("s2", &p.as_primary(), true).unwrap();
    for i in 0..5 {
        p.set(&format!("/k{i}"), Value::Int32(i));
    }
    assert_eq!(s2.stat("full_copies_received"), 1);
    let mut ev1: EventClient = s1.events(NOTIF_HA_INFO);

    // kill -9 of the primary: both secondaries notice (socket closed) and go to NONE.
    p.kill9();
    s1.wait_state(STATE_NONE, T);
    s2.wait_state(STATE_NONE, T);
    assert_eq!(
        next_ha_event(&mut ev1, T),
        HaEvent::NoPrimary {
            reason: CONFD_ERR_HA_CLOSED
        }
    );
    assert_eq!(next_ha_event(&mut ev1, T), HaEvent::IsNone);
    assert_eq!(h1.get_status().unwrap(), (STATE_NONE, vec![]));

    // s1 is promoted; s2 re-joins it without a copy (same transaction id).
    h1.beprimary("s1").unwrap();
    assert_eq!(next_ha_event(&mut ev1, T), HaEvent::IsPrimary);
    h2.besecondary("s2", &s1.as_primary(), true).unwrap();
    assert_eq!(s2.stat("full_copies_received"), 1, "re-join must not copy");
    assert_eq!(s1.stat("full_copies_sent"), 0);
    match next_ha_event(&mut ev1, T) {
        HaEvent::SecondaryArrived(n) => assert_eq!(n.id, buf("s2")),
        e => panic!("expected SECONDARY_ARRIVED, got {e:?}"),
    }
    let txid = s1.set("/after", buf("failover"));
    assert_eq!(s2.get("/after"), Some(buf("failover")));
    assert_eq!(s2.data().txid().unwrap(), txid);
    assert_eq!(s2.get("/k4"), Some(Value::Int32(4)));

    // s2 restarted from its data directory re-joins without a copy.
    s2.restart();
    assert_eq!(s2.get("/after"), Some(buf("failover")));
    let mut h2 = s2.ha();
    h2.besecondary("s2", &s1.as_primary(), true).unwrap();
    assert_eq!(s2.stat("full_copies_received"), 0, "restart must not copy");
    match next_ha_event(&mut ev1, T) {
        HaEvent::SecondaryDied(n) => assert_eq!(n.id, buf("s2")),
        e => panic!("expected SECONDARY_DIED, got {e:?}"),
    }

    // The old primary comes back with data that diverged (a write in NONE):
    // it gets a full copy, and its own write is gone.
    p.spawn();
    p.set("/diverged", buf("yes"));
    let mut hp = p.ha();
    hp.besecondary("p", &s1.as_primary(), true).unwrap();
    assert_eq!(p.stat("full_copies_received"), 1);
    assert_eq!(p.get("/diverged"), None);
    assert_eq!(p.get("/after"), Some(buf("failover")));
    assert_eq!(p.data().txid().unwrap(), s1.data().txid().unwrap());
    let mut hs1 = s1.ha();
    let (st, nodes) = hs1.get_status().unwrap();
    assert_eq!(st, STATE_PRIMARY);
    assert_eq!(nodes.len(), 2);
}

#[test]
fn relay_forwards_and_its_death_sends_subs_to_none() {
    let port = free_port();
    let m = Node::start("m", 2, port, &[]);
    let mut r = Node::start("r", 3, port, &[]);
    let s = Node::start("s", 4, port, &[]);
    let mut hm = m.ha();
    hm.beprimary("m").unwrap();
    m.set("/a", Value::Int32(1));
    let mut hr = r.ha();
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    hr.berelay().unwrap();
    hr.berelay().unwrap();
    let mut hs = s.ha();
    hs.besecondary("s", &r.as_primary(), true).unwrap();
    assert_eq!(s.get("/a"), Some(Value::Int32(1)));
    assert_eq!(r.stat("full_copies_sent"), 1);
    // Commits on m reach s through r.
    for i in 2..10 {
        m.set("/a", Value::Int32(i));
    }
    wait_for("the commit on the sub-secondary", T, || {
        (s.get("/a") == Some(Value::Int32(9))).then_some(())
    });
    let (st, nodes) = hr.get_status().unwrap();
    assert_eq!(st, STATE_SECONDARY_RELAY);
    assert_eq!(nodes[0], m.as_primary());
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1].id, buf("s"));
    // The primary lists the relay and the node behind it (as ConfD).
    wait_for("the sub-secondary in the primary's status", T, || {
        let (st, nodes) = hm.get_status().unwrap();
        (st == STATE_PRIMARY && nodes.len() == 2 && nodes[1].id == buf("s")).then_some(())
    });
    assert_eq!(
        hs.get_status().unwrap(),
        (STATE_SECONDARY, vec![r.as_primary()])
    );
    // A relay refuses writes too.
    let mut t = Txn::new();
    t.set("/w", Value::Int32(0));
    assert_eq!(
        r.data().commit(&t).unwrap_err().errno(),
        CONFD_ERR_NOT_WRITABLE
    );
    // The relay told besecondary with the same parameters drops its subs.
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    assert_eq!(
        hr.get_status().unwrap(),
        (STATE_SECONDARY, vec![m.as_primary()])
    );
    s.wait_state(STATE_NONE, T);
    // Again a relay; then kill it: the sub-secondary goes to NONE.
    hr.berelay().unwrap();
    hs.besecondary("s", &r.as_primary(), true).unwrap();
    let mut evs = s.events(NOTIF_HA_INFO);
    r.kill9();
    s.wait_state(STATE_NONE, T);
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::NoPrimary {
            reason: CONFD_ERR_HA_CLOSED
        }
    );
    // Relay losing its primary: it goes to NONE and so does its sub.
    r.spawn();
    let mut hr = r.ha();
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    hr.berelay().unwrap();
    hs.besecondary("s", &r.as_primary(), true).unwrap();
    hm.benone().unwrap();
    r.wait_state(STATE_NONE, T);
    s.wait_state(STATE_NONE, T);
}

#[test]
fn commits_survive_kill9_of_every_node() {
    let port = free_port();
    let mut p = Node::start("p", 2, port, &[]);
    let mut s1 = Node::start("s1", 3, port, &[]);
    let mut s2 = Node::start("s2", 4, port, &["--replication", "sync"]);
    p.ha().beprimary("p").unwrap();
    let mut h1 = s1.ha();
    h1.besecondary("s1", &p.as_primary(), true).unwrap();
    let mut h2 = s2.ha();
    h2.besecondary("s2", &p.as_primary(), true).unwrap();
    // 4 concurrent clients, 25 commits each.
    let ep = p.ep();
    let threads: Vec<_> = (0..4)
        .map(|c| {
            let ep = ep.clone();
            std::thread::spawn(move || {
                let mut d = confd_ha::client::data::DataClient::connect(&ep).unwrap();
                for i in 0..25 {
                    let mut t = Txn::new();
                    t.set(&format!("/c{c}/i{i}"), Value::UInt32(i));
                    d.commit(&t).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let txid = p.data().txid().unwrap();
    assert_eq!(p.stat("seq"), 100);
    for n in [&mut p, &mut s1, &mut s2] {
        n.kill9();
    }
    for n in [&mut p, &mut s1, &mut s2] {
        n.spawn();
        assert_eq!(n.data().txid().unwrap(), txid, "on {}", n.name);
        let mut d = n.data();
        for c in 0..4 {
            assert_eq!(
                d.list(&format!("/c{c}")).unwrap().len(),
                25,
                "on {}",
                n.name
            );
            for i in 0..25 {
                assert_eq!(d.get(&format!("/c{c}/i{i}")).unwrap(), Value::UInt32(i));
            }
        }
    }
}

#[test]
fn frozen_secondary_is_dropped_and_commits_go_on() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s1 = Node::start("s1", 3, port, &[]);
    let s2 = Node::start("s2", 4, port, &[]);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    let mut evp = p.events(NOTIF_HA_INFO);
    s1.ha().besecondary("s1", &p.as_primary(), true).unwrap();
    let mut h2 = s2.ha();
    h2.besecondary("s2", &p.as_primary(), true).unwrap();
    p.set("/x", Value::Int32(1));
    s1.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    // Commits go on; the first may wait for the frozen secondary's deadline.
    for i in 2..6 {
        p.set("/x", Value::Int32(i));
        assert_eq!(s2.get("/x"), Some(Value::Int32(i)));
    }
    let died = expect_event(&mut evp, T, |e| matches!(e, HaEvent::SecondaryDied(_)));
    let dropped_after = t0.elapsed();
    match died {
        HaEvent::SecondaryDied(n) => assert_eq!(n.id, buf("s1")),
        _ => unreachable!(),
    }
    // 3 ticks of 200 ms, plus scheduling slack.
    assert!(
        dropped_after < Duration::from_millis(4000),
        "dropped after {dropped_after:?}"
    );
    assert_eq!(hp.get_status().unwrap().1.len(), 1);
    // Commits are fast again without it.
    p.set("/x", Value::Int32(7));
    assert_eq!(s2.get("/x"), Some(Value::Int32(7)));
    // Thawed, it finds its link gone, goes to NONE, and re-joins by catching up on the
    // transactions it missed (no full copy).
    s1.signal(libc::SIGCONT);
    s1.wait_state(STATE_NONE, T);
    let copies = s1.stat("full_copies_received");
    s1.ha().besecondary("s1", &p.as_primary(), true).unwrap();
    assert_eq!(s1.get("/x"), Some(Value::Int32(7)));
    assert_eq!(s1.stat("full_copies_received"), copies);
    assert_eq!(s1.stat("catch_ups_received"), 1);
}

#[test]
fn frozen_primary_gives_noprimary_notick() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    let mut ev = s.events(NOTIF_HA_INFO);
    p.signal(libc::SIGSTOP);
    assert_eq!(
        next_ha_event(&mut ev, T),
        HaEvent::NoPrimary {
            reason: CONFD_ERR_HA_NOTICK
        }
    );
    assert_eq!(next_ha_event(&mut ev, T), HaEvent::IsNone);
    assert_eq!(hs.get_status().unwrap().0, STATE_NONE);
    p.signal(libc::SIGCONT);
}

#[test]
fn sync_commit_through_a_relay_waits_for_its_sub_secondaries() {
    let port = free_port();
    let m = Node::start("m", 2, port, &[]);
    let r = Node::start("r", 3, port, &[]);
    let s = Node::start("s", 4, port, &[]);
    m.ha().beprimary("m").unwrap();
    let mut hr = r.ha();
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    hr.berelay().unwrap();
    s.ha().besecondary("s", &r.as_primary(), true).unwrap();
    // As soon as besecondary has returned, a commit on the primary returns only once the
    // sub-secondary has it: no polling, no warm-up.
    for i in 0..20 {
        m.set("/a", Value::Int32(i));
        assert_eq!(s.get("/a"), Some(Value::Int32(i)), "commit {i}");
    }
    // A frozen sub-secondary is dropped by the relay before the primary's
    // deadline runs out for the relay: commits go on, the relay stays.
    s.signal(libc::SIGSTOP);
    for i in 20..23 {
        m.set("/a", Value::Int32(i));
        assert_eq!(r.get("/a"), Some(Value::Int32(i)));
    }
    wait_for("the relay to drop its frozen sub-secondary", T, || {
        (hr.get_status().unwrap().1.len() == 1).then_some(())
    });
    // Dropped for the missing acknowledgement (the relay waited for it),
    // before its missing ticks would have been noticed.
    assert!(
        r.log_text().contains("no ack for transaction"),
        "{}",
        r.log_text()
    );
    assert_eq!(m.ha().get_status().unwrap().1, vec![r.as_primary()]);
    s.signal(libc::SIGCONT);
}

/// A secondary whose (waiting) besecondary has returned is waited for by the very next
/// sync commit, even when its full copy's acknowledgement has not reached the primary yet.
#[test]
fn the_first_commit_after_a_join_by_copy_waits_for_the_new_secondary() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    let mut hs = s.ha();
    for i in 0..15 {
        // A local write in NONE makes s's history differ: the join needs a full copy.
        hs.benone().unwrap();
        s.set("/local", Value::Int32(i));
        hs.besecondary("s", &p.as_primary(), true).unwrap();
        p.set("/x", Value::Int32(i));
        assert_eq!(s.get("/x"), Some(Value::Int32(i)), "round {i}");
    }
}
