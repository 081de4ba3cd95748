//! Benchmarks (not run by default; no timing assertions):
//!   cargo test -p ha-node --release --test bench -- --ignored --nocapture --test-threads 1
//! Prints commit latency p50/p99 with sync replication to 0, 1 and 2
//! secondaries, throughput with 8 clients, full-copy time, and failover
//! detection time with a 100 ms tick.

mod common;
use common::*;
use confd_ha::client::data::{DataClient, Txn};
use confd_ha::proto::ha::{HaEvent, NOTIF_HA_INFO};
use confd_ha::value::Value;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn cluster(n_sec: usize) -> (Node, Vec<Node>) {
    let port = free_port();
    let p = Node::start("p", 2, port, &["--log-level", "warn"]);
    p.ha().beprimary("p").unwrap();
    let mut secs = Vec::new();
    for i in 0..n_sec {
        let name = format!("s{i}");
        let s = Node::start(&name, 3 + i as u8, port, &["--log-level", "warn"]);
        s.ha().besecondary(&name, &p.as_primary(), true).unwrap();
        secs.push(s);
    }
    (p, secs)
}

#[test]
#[ignore]
fn bench_commit_latency_and_throughput() {
    for n_sec in [0usize, 1, 2] {
        let (p, _secs) = cluster(n_sec);
        let mut d = p.data();
        let n = 2000;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let mut t = Txn::new();
            t.set(&format!("/bench/k{}", i % 100), Value::UInt32(i as u32));
            let t0 = Instant::now();
            d.commit(&t).unwrap();
            lat.push(t0.elapsed());
        }
        let p50 = pct(&mut lat, 0.5);
        let p99 = pct(&mut lat, 0.99);
        // 8 concurrent clients.
        let ep = p.ep();
        let per = 500;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..8)
            .map(|c| {
                let ep = ep.clone();
                std::thread::spawn(move || {
                    let mut d = DataClient::connect(&ep).unwrap();
                    for i in 0..per {
                        let mut t = Txn::new();
                        t.set(&format!("/tp/c{c}/k{}", i % 50), Value::UInt32(i));
                        d.commit(&t).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let tput = (8 * per) as f64 / t0.elapsed().as_secs_f64();
        println!(
            "BENCH commit sync to {n_sec} secondaries: 1 client p50 {:.3} ms p99 {:.3} ms; 8 clients {:.0} commits/s",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            tput
        );
    }
}

#[test]
#[ignore]
fn bench_full_copy_100mb() {
    let port = free_port();
    let p = Node::start("p", 2, port, &["--log-level", "warn"]);
    let s = Node::start("s", 3, port, &["--log-level", "warn"]);
    p.ha().beprimary("p").unwrap();
    // 100 MB in 1 MiB... as 400 transactions of 256 KiB values.
    let mut d = p.data();
    let val = vec![0x5au8; 256 * 1024];
    for i in 0..400 {
        let mut t = Txn::new();
        t.set(&format!("/big/v{i}"), Value::Binary(val.clone()));
        d.commit(&t).unwrap();
    }
    let mut hs = s.ha();
    let t0 = Instant::now();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    let dt = t0.elapsed();
    assert_eq!(s.stat("full_copies_received"), 1);
    println!(
        "BENCH full copy of {} MB: {:.3} s ({:.0} MB/s)",
        400 * 256 / 1024,
        dt.as_secs_f64(),
        100.0 / dt.as_secs_f64()
    );
    // The machine's floors, measured in the same run.
    let tmp = TempDir::new("floor");
    let f = tmp.path().join("seq");
    let chunk = vec![0xa5u8; 1 << 20];
    let t0 = Instant::now();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&f).unwrap();
        for _ in 0..100 {
            file.write_all(&chunk).unwrap();
        }
        file.sync_data().unwrap();
    }
    let disk = t0.elapsed();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let rd = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = l.accept().unwrap();
        let mut b = vec![0u8; 1 << 20];
        let mut n = 0usize;
        while n < 100 << 20 {
            n += s.read(&mut b).unwrap();
        }
    });
    let t0 = Instant::now();
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(a).unwrap();
        for _ in 0..100 {
            s.write_all(&chunk).unwrap();
        }
    }
    rd.join().unwrap();
    let net = t0.elapsed();
    println!(
        "BENCH floors: 100 MB sequential write + fdatasync {:.3} s ({:.0} MB/s); 100 MB loopback TCP {:.3} s ({:.0} MB/s)",
        disk.as_secs_f64(),
        100.0 / disk.as_secs_f64(),
        net.as_secs_f64(),
        100.0 / net.as_secs_f64()
    );
}

#[test]
#[ignore]
fn bench_failover_detection_100ms_tick() {
    let port = free_port();
    let p = Node::start(
        "p",
        2,
        port,
        &["--tick-timeout", "100ms", "--log-level", "warn"],
    );
    let s = Node::start(
        "s",
        3,
        port,
        &["--tick-timeout", "100ms", "--log-level", "warn"],
    );
    p.ha().beprimary("p").unwrap();
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    let mut ev = s.events(NOTIF_HA_INFO);
    let t0 = Instant::now();
    p.signal(libc::SIGSTOP);
    let e = next_ha_event(&mut ev, Duration::from_secs(10));
    let dt = t0.elapsed();
    p.signal(libc::SIGCONT);
    assert!(matches!(e, HaEvent::NoPrimary { .. }));
    println!(
        "BENCH failover detection with 100 ms tick: {:.1} ms (goal <= 350 ms)",
        dt.as_secs_f64() * 1e3
    );
}
