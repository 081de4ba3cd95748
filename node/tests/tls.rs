//! Mutual TLS on the HA port, against real ha-node processes with
//! certificates made at test time (rcgen): a TLS cluster replicates (also
//! through a relay) and detects a frozen primary by its ticks; a wrong CA, an
//! expired certificate, a name mismatch and plaintext against TLS are refused,
//! with CONFD_ERR_HA_CONNECT and a TLS reason on the joining side and a log
//! line on both; the weak-token and exposed-port warnings; configuration errors.

mod common;
use common::*;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaNode, NodeAddr, STATE_NONE, STATE_SECONDARY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A throw-away CA that writes its certificate and the ones it issues as PEM files.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem: PathBuf,
    dir: PathBuf,
}

/// A node's `--ha-tls-*` flags.
struct NodeTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl NodeTls {
    fn args(&self) -> Vec<String> {
        vec![
            "--ha-tls-ca".into(),
            self.ca.display().to_string(),
            "--ha-tls-cert".into(),
            self.cert.display().to_string(),
            "--ha-tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem,
            dir: dir.to_path_buf(),
        }
    }

    /// A node certificate naming `names` (IPs or DNS names), usable as TLS
    /// server and client; `expired`: valid only in 2020.
    fn issue(&self, tag: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, tag);
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{tag}.pem")),
            self.dir.join(format!("{tag}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Flags for a node trusting this CA, with a certificate from `issuer`.
    fn node(&self, issuer: &Ca, tag: &str, names: &[&str], expired: bool) -> NodeTls {
        let (cert, key) = issuer.issue(tag, names, expired);
        NodeTls {
            ca: self.pem.clone(),
            cert,
            key,
        }
    }
}

fn start(name: &str, n: u8, port: u16, args: &[String]) -> Node {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(name, n, port, &a)
}

/// A join that must fail before any data: HA_CONNECT, a reason naming TLS
/// and containing `why`, and the node still in NONE.
fn join_refused(s: &Node, me: &str, primary: &HaNode, why: &str) -> String {
    let e = s.ha().besecondary(me, primary, true).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.errno(), CONFD_ERR_HA_CONNECT, "{msg}");
    assert!(msg.contains("TLS"), "{msg}");
    assert!(msg.contains(why), "{msg}");
    assert_eq!(s.state(), STATE_NONE);
    assert_eq!(s.get("/a"), None);
    eprintln!("{me}: refused as expected: {msg}");
    msg
}

/// Waits until `n`'s log has a line containing `what`.
fn log_has(n: &Node, what: &str) {
    wait_for(
        &format!("'{what}' in the log of {}", n.name),
        Duration::from_secs(10),
        || n.log_text().contains(what).then_some(()),
    );
}

#[test]
fn tls_cluster_replicates_through_a_relay() {
    let tmp = TempDir::new("tls-ok");
    let ca = Ca::new(tmp.path(), "cluster");
    let port = free_port();
    let p = start(
        "p",
        2,
        port,
        &ca.node(&ca, "p", &["127.0.0.2"], false).args(),
    );
    let s = start(
        "s",
        3,
        port,
        &ca.node(&ca, "s", &["127.0.0.3"], false).args(),
    );
    let t = start(
        "t",
        4,
        port,
        &ca.node(&ca, "t", &["127.0.0.4"], false).args(),
    );
    p.ha().beprimary("p").unwrap();
    p.set("/a", buf("1"));
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.state(), STATE_SECONDARY);
    assert_eq!(s.get("/a"), Some(buf("1")));
    assert_eq!(s.stat("full_copies_received"), 1);
    // Replication over TLS. (A commit waits for a secondary only once its
    // copy is acknowledged, which may be just after besecondary returns.)
    p.set("/b", buf("2"));
    wait_for("/b on the secondary", Duration::from_secs(10), || {
        (s.get("/b") == Some(buf("2"))).then_some(())
    });
    // A relay serves its sub-secondary over TLS too.
    s.ha().berelay().unwrap();
    t.ha().besecondary("t", &s.as_primary(), true).unwrap();
    assert_eq!(t.get("/b"), Some(buf("2")));
    p.set("/c", buf("3"));
    wait_for("/c on the sub-secondary", Duration::from_secs(10), || {
        (t.get("/c") == Some(buf("3"))).then_some(())
    });
    // The status lists the secondary (and, as the relay reports it, the
    // sub-secondary), the token (12 bytes) is not flagged weak under TLS, and
    // no exposed-port warning on loopback.
    assert!(p.status().1.iter().any(|n| n.id == buf("s")));
    for n in [&p, &s, &t] {
        assert_eq!(n.stat("short_token"), 0);
        assert!(!n.log_text().contains("has no TLS"), "{}", n.log_text());
    }
    // Tick deadlines work through TLS: a frozen primary is detected by its
    // silence (the relay's read timeouts fire), and the relay's loss reaches t.
    let mut ev = s.events(confd_ha::proto::ha::NOTIF_HA_INFO);
    p.signal(libc::SIGSTOP);
    assert_eq!(
        next_ha_event(&mut ev, Duration::from_secs(20)),
        confd_ha::proto::ha::HaEvent::NoPrimary {
            reason: CONFD_ERR_HA_NOTICK
        }
    );
    t.wait_state(STATE_NONE, Duration::from_secs(20));
    p.signal(libc::SIGCONT);
}

#[test]
fn wrong_ca_is_refused_both_ways() {
    let tmp = TempDir::new("tls-ca");
    let (ca, other) = (Ca::new(tmp.path(), "cluster"), Ca::new(tmp.path(), "other"));
    let port = free_port();
    let p = start(
        "p",
        2,
        port,
        &ca.node(&ca, "p", &["127.0.0.2"], false).args(),
    );
    p.ha().beprimary("p").unwrap();
    p.set("/a", buf("1"));
    // The secondary trusts another CA: it refuses the primary.
    let s1 = start(
        "s1",
        3,
        port,
        &other.node(&ca, "s1", &["127.0.0.3"], false).args(),
    );
    join_refused(
        &s1,
        "s1",
        &p.as_primary(),
        "the primary's certificate is refused",
    );
    log_has(&s1, "TLS: the primary's certificate is refused");
    log_has(&p, "TLS: the secondary refused our certificate");
    // The secondary's certificate is from another CA: the primary refuses it.
    let s2 = start(
        "s2",
        4,
        port,
        &ca.node(&other, "s2", &["127.0.0.4"], false).args(),
    );
    join_refused(&s2, "s2", &p.as_primary(), "refused our certificate");
    log_has(&p, "TLS: the secondary's certificate is refused");
    assert!(p.status().1.is_empty());
}

#[test]
fn expired_certificates_are_refused() {
    let tmp = TempDir::new("tls-exp");
    let ca = Ca::new(tmp.path(), "cluster");
    let port = free_port();
    // The primary's certificate expired: the secondary refuses it.
    let p = start(
        "p",
        2,
        port,
        &ca.node(&ca, "p", &["127.0.0.2"], true).args(),
    );
    log_has(&p, "peers will refuse it");
    p.ha().beprimary("p").unwrap();
    p.set("/a", buf("1"));
    let s = start(
        "s",
        3,
        port,
        &ca.node(&ca, "s", &["127.0.0.3"], false).args(),
    );
    join_refused(&s, "s", &p.as_primary(), "certificate expired");
    // The secondary's certificate expired: the primary refuses it.
    let q = start(
        "q",
        4,
        port,
        &ca.node(&ca, "q", &["127.0.0.4"], false).args(),
    );
    q.ha().beprimary("q").unwrap();
    q.set("/a", buf("1"));
    let t = start(
        "t",
        5,
        port,
        &ca.node(&ca, "t", &["127.0.0.5"], true).args(),
    );
    join_refused(&t, "t", &q.as_primary(), "refused our certificate");
    log_has(&q, "certificate expired");
    // With valid certificates on both ends the same secondary gets in.
    s.ha().besecondary("s", &q.as_primary(), true).unwrap();
    assert_eq!(s.get("/a"), Some(buf("1")));
}

#[test]
fn certificate_must_name_the_address_dialled() {
    let tmp = TempDir::new("tls-name");
    let ca = Ca::new(tmp.path(), "cluster");
    let port = free_port();
    // A certificate for another IP.
    let p = start(
        "p",
        2,
        port,
        &ca.node(&ca, "p", &["127.0.0.9"], false).args(),
    );
    log_has(&p, "secondaries that dial 127.0.0.2 will refuse it");
    p.ha().beprimary("p").unwrap();
    p.set("/a", buf("1"));
    let s = start(
        "s",
        3,
        port,
        &ca.node(&ca, "s", &["127.0.0.3"], false).args(),
    );
    let msg = join_refused(&s, "s", &p.as_primary(), "not valid for name");
    assert!(msg.contains("127.0.0.2"), "{msg}");
    // A certificate with only a DNS name: good when the primary is given by
    // that name, refused when given by its IP.
    let q = start(
        "q",
        1,
        port,
        &ca.node(&ca, "q", &["localhost"], false).args(),
    );
    q.ha().beprimary("q").unwrap();
    q.set("/a", buf("1"));
    join_refused(&s, "s", &q.as_primary(), "not valid for name");
    let by_name = HaNode {
        id: buf("q"),
        addr: NodeAddr::Str("localhost".into()),
    };
    s.ha().besecondary("s", &by_name, true).unwrap();
    assert_eq!(s.get("/a"), Some(buf("1")));
}

#[test]
fn plaintext_and_tls_refuse_each_other() {
    let tmp = TempDir::new("tls-plain");
    let ca = Ca::new(tmp.path(), "cluster");
    let port = free_port();
    // A plaintext secondary against a TLS primary.
    let p = start(
        "p",
        2,
        port,
        &ca.node(&ca, "p", &["127.0.0.2"], false).args(),
    );
    p.ha().beprimary("p").unwrap();
    p.set("/a", buf("1"));
    let s = start("s", 3, port, &[]);
    join_refused(&s, "s", &p.as_primary(), "requires TLS on its HA port");
    log_has(&p, "plaintext on a TLS HA port");
    // A TLS secondary against a plaintext primary.
    let q = start("q", 4, port, &[]);
    q.ha().beprimary("q").unwrap();
    q.set("/a", buf("1"));
    let t = start(
        "t",
        5,
        port,
        &ca.node(&ca, "t", &["127.0.0.5"], false).args(),
    );
    join_refused(&t, "t", &q.as_primary(), "during the TLS handshake");
    log_has(&q, "a TLS ClientHello on a plaintext HA port");
    assert!(p.status().1.is_empty() && q.status().1.is_empty());
}

fn ha_ctl_status(n: &Node, token: &str) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &n.ipc_port.to_string(),
            "-t",
            token,
        ])
        .arg("status")
        .env_remove("HA_CTL_TOKEN")
        .output()
        .expect("run ha-ctl");
    assert!(o.status.success(), "{o:?}");
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn weak_token_and_exposed_port_warnings() {
    let tmp = TempDir::new("tls-warn");
    let ca = Ca::new(tmp.path(), "cluster");
    let port = free_port();
    let any = format!("0.0.0.0:{port}");
    // Plaintext on a non-loopback address: warned at start-up.
    let a = start("a", 2, port, &["--ha-addr".into(), any.clone()]);
    log_has(&a, "is not on loopback and has no TLS");
    // A short token is accepted, and flagged: log, stat, ha-ctl status.
    let mut ha = a.ha_token("short");
    assert_eq!(ha.get_status().unwrap().0, STATE_NONE);
    log_has(&a, "set a token of 5 bytes");
    assert_eq!(a.stat("short_token"), 1);
    let (out, err) = ha_ctl_status(&a, "short");
    assert_eq!(out, "state: none\n");
    assert!(err.contains("shorter than 16 bytes"), "{err}");
    // A 16-byte token is not. (A request's reply shows the token was taken.)
    let mut ha = a.ha_token("sixteen-byte-tok");
    assert_eq!(ha.get_status().unwrap().0, STATE_NONE);
    assert_eq!(a.stat("short_token"), 0);
    let (_, err) = ha_ctl_status(&a, "sixteen-byte-tok");
    assert_eq!(err, "");
    // With TLS neither warning, even on 0.0.0.0 with a short token.
    let mut args = ca.node(&ca, "b", &["127.0.0.3"], false).args();
    args.extend(["--ha-addr".into(), any]);
    let b = start("b", 3, port, &args);
    let mut hb = b.ha_token("short");
    assert_eq!(hb.get_status().unwrap().0, STATE_NONE);
    assert_eq!(b.stat("short_token"), 0);
    let (_, err) = ha_ctl_status(&b, "short");
    assert_eq!(err, "");
    assert!(!b.log_text().contains("has no TLS"), "{}", b.log_text());
    assert!(!b.log_text().contains("set a token of"));
    // Plaintext on loopback: no start-up warning.
    let c = start("c", 4, port, &[]);
    assert!(!c.log_text().contains("has no TLS"), "{}", c.log_text());
}

#[test]
fn tls_configuration_errors() {
    let tmp = TempDir::new("tls-cfg");
    let ca = Ca::new(tmp.path(), "cluster");
    let good = ca.node(&ca, "n", &["127.0.0.2"], false);
    let run = |extra: &[String]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ha-node"))
            .args(["--ipc-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(extra)
            .output()
            .expect("run ha-node");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // One key alone: a usage error.
    let (code, err) = run(&["--ha-tls-cert".into(), good.cert.display().to_string()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ha-tls-ca and ha-tls-key missing"), "{err}");
    // A missing file, and a key that is not the certificate's: exit 1, naming the file.
    let missing = NodeTls {
        ca: tmp.path().join("nope.pem"),
        cert: good.cert.clone(),
        key: good.key.clone(),
    };
    let (code, err) = run(&missing.args());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("ha-tls-ca") && err.contains("nope.pem"),
        "{err}"
    );
    let other = ca.node(&ca, "m", &["127.0.0.2"], false);
    let mismatched = NodeTls {
        ca: good.ca.clone(),
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    let (code, err) = run(&mismatched.args());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("ha-tls-key"), "{err}");
}

/// Not run by default (no timing assertions): plain TCP against TLS on the
/// same machine, one after the other, for the sync commit latency with one
/// secondary and a 64 MiB full copy.
///   cargo test -p ha-node --release --test tls -- --ignored --nocapture
#[test]
#[ignore]
fn bench_tls_against_plain() {
    use confd_ha::client::data::Txn;
    use confd_ha::value::Value;
    use std::time::Instant;
    let tmp = TempDir::new("tls-bench");
    let ca = Ca::new(tmp.path(), "cluster");
    for round in 0..2 {
        for tls in [false, true] {
            let port = free_port();
            let args = |tag: &str, ip: &str| {
                let mut a = vec!["--log-level".to_string(), "warn".into()];
                if tls {
                    a.extend(ca.node(&ca, tag, &[ip], false).args());
                }
                a
            };
            let p = start("p", 2, port, &args("p", "127.0.0.2"));
            let s = start("s", 3, port, &args("s", "127.0.0.3"));
            p.ha().beprimary("p").unwrap();
            // 64 MiB as 256 values of 256 KiB, then the copy.
            let mut d = p.data();
            let val = vec![0x5au8; 256 * 1024];
            for i in 0..16 {
                let mut t = Txn::new();
                for j in 0..16 {
                    t.set(&format!("/big/v{i}/k{j}"), Value::Binary(val.clone()));
                }
                d.commit(&t).unwrap();
            }
            let t0 = Instant::now();
            s.ha().besecondary("s", &p.as_primary(), true).unwrap();
            let copy = t0.elapsed();
            let n = 500;
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let mut t = Txn::new();
                t.set(&format!("/bench/k{}", i % 100), Value::UInt32(i as u32));
                let t0 = Instant::now();
                d.commit(&t).unwrap();
                lat.push(t0.elapsed());
            }
            lat.sort();
            println!(
                "round {round} {}: full copy 64 MiB {:.3} s; sync commit to 1 secondary p50 {:.3} ms p99 {:.3} ms",
                if tls { "TLS  " } else { "plain" },
                copy.as_secs_f64(),
                lat[n / 2].as_secs_f64() * 1e3,
                lat[n * 99 / 100].as_secs_f64() * 1e3
            );
        }
    }
}
