//! HA events on notification sockets (client id 11).

mod common;
use common::*;
use confd_ha::client::data::Txn;
use confd_ha::client::events::Event;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{
    HaEvent, NodeAddr, NOTIF_HA_INFO, NOTIF_HA_INFO_SYNC, NOTIF_HEARTBEAT, STATE_NONE,
    STATE_PRIMARY, STATE_SECONDARY,
};
use confd_ha::value::Value;
use std::sync::mpsc::channel;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn every_event_type_in_order() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    let mut evp = p.events(NOTIF_HA_INFO);
    let mut evp2 = p.events(NOTIF_HA_INFO); // a second subscriber sees the same stream
    let mut evs = s.events(NOTIF_HA_INFO);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap();
    assert_eq!(next_ha_event(&mut evp, T), HaEvent::IsPrimary);
    p.set("/a", Value::Int32(1));

    // Async besecondary with a wrong token: BESECONDARY_RESULT with HA_BADTOKEN.
    let mut bad = s.ha_token("wrong");
    bad.besecondary("s", &p.as_primary(), false).unwrap();
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::BeSecondaryResult {
            result: CONFD_ERR_HA_BADTOKEN
        }
    );
    assert_eq!(bad.get_status().unwrap().0, STATE_NONE);

    // Async besecondary that works: SECONDARY_INITIALIZED (by copy) then result 0.
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), false).unwrap();
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::SecondaryInitialized { by_copy: true }
    );
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::BeSecondaryResult { result: 0 }
    );
    assert_eq!(hs.get_status().unwrap().0, STATE_SECONDARY);
    let arrived = next_ha_event(&mut evp, T);
    let expect_node = confd_ha::proto::ha::HaNode {
        id: buf("s"),
        addr: NodeAddr::V4("127.0.0.3".parse().unwrap()),
    };
    assert_eq!(arrived, HaEvent::SecondaryArrived(expect_node.clone()));

    // secondary_dead on the primary: no event there (as ConfD), NOPRIMARY +
    // IS_NONE on s.
    hp.secondary_dead("s").unwrap();
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::NoPrimary {
            reason: CONFD_ERR_HA_CLOSED
        }
    );
    assert_eq!(next_ha_event(&mut evs, T), HaEvent::IsNone);

    // Sync besecondary, nothing changed: initialized without copy; no result event.
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(
        next_ha_event(&mut evs, T),
        HaEvent::SecondaryInitialized { by_copy: false }
    );
    assert_eq!(
        next_ha_event(&mut evp, T),
        HaEvent::SecondaryArrived(expect_node.clone())
    );
    hs.benone().unwrap();
    assert_eq!(next_ha_event(&mut evs, T), HaEvent::IsNone);
    assert_eq!(
        next_ha_event(&mut evp, T),
        HaEvent::SecondaryDied(expect_node.clone())
    );
    hp.benone().unwrap();
    assert_eq!(next_ha_event(&mut evp, T), HaEvent::IsNone);

    // The second subscriber saw exactly the same stream.
    let mut seen = vec![];
    for _ in 0..5 {
        seen.push(next_ha_event(&mut evp2, T));
    }
    assert_eq!(
        seen,
        vec![
            HaEvent::IsPrimary,
            HaEvent::SecondaryArrived(expect_node.clone()),
            HaEvent::SecondaryArrived(expect_node.clone()),
            HaEvent::SecondaryDied(expect_node),
            HaEvent::IsNone,
        ]
    );
}

#[test]
fn ha_info_sync_holds_the_next_role_change_until_acked() {
    let port = free_port();
    let a = Node::start("a", 2, port, &[]);
    let mut ev = a.events(NOTIF_HA_INFO_SYNC);
    let mut ha = a.ha();
    ha.beprimary("a").unwrap();
    assert_eq!(next_ha_event(&mut ev, T), HaEvent::IsPrimary);
    // Not acknowledged yet: benone must wait.
    let (tx, rx) = channel();
    let ep = a.ep();
    let t = std::thread::spawn(move || {
        let mut ha2 = confd_ha::client::ha::HaClient::connect(&ep, TOKEN).unwrap();
        let r = ha2.benone();
        tx.send(r.is_ok()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "benone completed before the ack"
    );
    assert_eq!(a.state(), STATE_PRIMARY);
    // New subscribers can still connect during the hold.
    let mut late = a.events(NOTIF_HA_INFO);
    ev.sync_ha().unwrap();
    assert!(rx.recv_timeout(T).unwrap());
    t.join().unwrap();
    assert_eq!(next_ha_event(&mut ev, T), HaEvent::IsNone);
    assert_eq!(next_ha_event(&mut late, T), HaEvent::IsNone);
    ev.sync_ha().unwrap();
    // A sync subscriber that goes away releases the hold.
    let mut ha3 = a.ha();
    ha3.beprimary("a").unwrap();
    drop(ev);
    ha3.benone().unwrap();
    assert_eq!(a.state(), STATE_NONE);
}

#[test]
fn subscribers_that_never_read_or_ack_do_not_delay_commits() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    // One subscriber never reads, another never acknowledges.
    let _lazy = p.events(NOTIF_HA_INFO);
    let _stubborn = p.events(NOTIF_HA_INFO_SYNC);
    let mut hp = p.ha();
    hp.beprimary("p").unwrap(); // the first event needs no earlier ack
                                // SECONDARY_ARRIVED now waits for the stubborn ack; the join and commits must not.
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    let mut d = p.data();
    for i in 0..50 {
        let mut t = Txn::new();
        t.set("/n", Value::Int32(i));
        d.commit(&t).unwrap();
        assert_eq!(s.get("/n"), Some(Value::Int32(i)));
    }
    // The secondary was never dropped for a late ack.
    assert_eq!(p.data().node_state().unwrap().secondaries.len(), 1);
    assert!(!p.log_text().contains("dropped"), "{}", p.log_text());
}

#[test]
fn heartbeats_arrive_at_the_interval() {
    let port = free_port();
    let a = Node::start("a", 2, port, &[]);
    // 10 ms is raised to ConfD's minimum of 1000 ms.
    let mut ev = confd_ha::client::events::EventClient::connect(
        &a.ep(),
        NOTIF_HEARTBEAT | NOTIF_HA_INFO,
        10,
    )
    .unwrap();
    let _ = ev.stream.set_read_timeout(Some(T));
    let t0 = std::time::Instant::now();
    assert_eq!(ev.read().unwrap(), Event::Heartbeat);
    assert_eq!(ev.read().unwrap(), Event::Heartbeat);
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
}
