//! The network the cluster runs on: a Linux bridge with one network
//! namespace per node (veth pairs) where the machine allows it, else plain
//! loopback addresses. Partitions in netns mode:
//! - two-way isolation of a node: its veth is set down on the bridge side
//!   (nobody reaches it, not even the test's clients);
//! - one-way "A cannot send to B": in A's namespace, B's address is pinned to
//!   a MAC address nobody has (`ip neigh replace .. nud permanent`); the bridge
//!   floods those frames and every interface drops them. B's frames still
//!   reach A. This needs no netfilter, tc classifier or kernel module.
//!
//! Loss and delay (tc netem) are used only when the kernel has netem.

use std::process::{Command, Stdio};

/// A MAC address no interface has (locally administered).
const NOWHERE_MAC: &str = "02:00:5e:00:de:ad";
/// Every name this suite creates starts with this, followed by the pid.
const PREFIX: &str = "hfl";

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("network setup: {e}");
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The namespaces, bridge and veths of one run; removed on drop.
pub struct Netns {
    tag: String,
    /// First three octets of the /24 used.
    net: String,
    bridge: String,
    pub ns: Vec<String>,
    veth: Vec<String>,
    pub netem: bool,
}

impl Netns {
    /// Removes what an earlier run that was killed left behind.
    fn clean_stale() {
        let alive = |name: &str| -> bool {
            let digits: String = name[PREFIX.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            match digits.parse::<u32>() {
                Ok(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
                Err(_) => true,
            }
        };
        if let Ok(list) = run(&["ip", "netns", "list"]) {
            for l in list.lines() {
                let n = l.split_whitespace().next().unwrap_or("");
                if n.starts_with(PREFIX) && !alive(n) {
                    let _ = run(&["ip", "netns", "del", n]);
                }
            }
        }
        if let Ok(list) = run(&["ip", "-o", "link", "show"]) {
            for l in list.lines() {
                let n = l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .split('@')
                    .next()
                    .unwrap_or("");
                if n.starts_with(PREFIX) && !alive(n) {
                    let _ = run(&["ip", "link", "del", n]);
                }
            }
        }
    }

    /// Sets up `n` namespaces on a bridge, or says why it cannot.
    pub fn setup(n: usize) -> Result<Netns, String> {
        if !is_root() {
            return Err("not root".into());
        }
        run(&["ip", "-V"]).map_err(|e| format!("no iproute2: {e}"))?;
        Netns::clean_stale();
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        // A /24 no interface uses yet (runs in parallel pick different ones).
        let used = run(&["ip", "-o", "-4", "addr", "show"]).unwrap_or_default();
        let mut k = pid;
        let net = loop {
            let cand = format!("10.{}.{}", 200 + k % 50, (k / 50) % 256);
            if !used.contains(&format!("{cand}.")) {
                break cand;
            }
            k = k.wrapping_add(7919);
        };
        let mut me = Netns {
            bridge: format!("{tag}b"),
            tag: tag.clone(),
            net,
            ns: Vec::new(),
            veth: Vec::new(),
            netem: false,
        };
        // Drop cleans up whatever was made if a step fails.
        run(&["ip", "link", "add", &me.bridge, "type", "bridge"])?;
        run(&["ip", "link", "set", &me.bridge, "up"])?;
        let host = format!("{}.1/24", me.net);
        run(&["ip", "addr", "add", &host, "dev", &me.bridge])?;
        for i in 0..n {
            let ns = format!("{tag}n{}", i + 1);
            let veth = format!("{tag}v{}", i + 1);
            run(&["ip", "netns", "add", &ns])?;
            me.ns.push(ns.clone());
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            me.veth.push(veth.clone());
            run(&["ip", "link", "set", &veth, "master", &me.bridge, "up"])?;
            let addr = format!("{}/24", me.ip(i));
            me.exec(i, &["ip", "addr", "add", &addr, "dev", "eth0"])?;
            me.exec(i, &["ip", "link", "set", "eth0", "up"])?;
            me.exec(i, &["ip", "link", "set", "lo", "up"])?;
        }
        // Reachability from the host, where the clients and the framework run.
        for i in 0..n {
            let ip = me.ip(i);
            let ok = (0..50).any(|_| {
                let r = std::net::TcpStream::connect_timeout(
                    &format!("{ip}:9").parse().unwrap(),
                    std::time::Duration::from_millis(200),
                );
                // Refused means the packet got there and back.
                matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            });
            if !ok {
                return Err(format!("{ip} is not reachable from the host"));
            }
        }
        // And between the namespaces, across the bridge (a host whose
        // firewall filters bridged traffic, as Docker's does, fails here).
        for i in 0..n {
            let j = (i + 1) % n;
            let probe = format!("exec 3<>/dev/tcp/{}/9", me.ip(j));
            let out = Command::new("ip")
                .args([
                    "netns", "exec", &me.ns[i], "timeout", "3", "bash", "-c", &probe,
                ])
                .output()
                .map_err(|e| format!("bash in a namespace: {e}"))?;
            if !String::from_utf8_lossy(&out.stderr).contains("refused") {
                return Err(format!(
                    "{} does not reach {} across the bridge (bridged traffic filtered?)",
                    me.ip(i),
                    me.ip(j)
                ));
            }
        }
        me.netem = me
            .exec(
                0,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
                ],
            )
            .is_ok();
        if me.netem {
            let _ = me.exec(0, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(me)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.net, i + 2)
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.ns[i].clone(),
        ]
    }

    fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", &self.ns[i]];
        a.extend_from_slice(args);
        run(&a)
    }

    /// Two-way: node `i` reaches nobody and nobody reaches it.
    pub fn isolate(&self, i: usize) {
        must(&["ip", "link", "set", &self.veth[i], "down"]);
    }

    pub fn unisolate(&self, i: usize) {
        must(&["ip", "link", "set", &self.veth[i], "up"]);
    }

    /// One-way: node `from` cannot send to node `to`.
    pub fn block(&self, from: usize, to: usize) {
        let ip = self.ip(to);
        self.exec(
            from,
            &[
                "ip",
                "neigh",
                "replace",
                &ip,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )
        .unwrap_or_else(|e| panic!("partition: {e}"));
    }

    pub fn unblock(&self, from: usize, to: usize) {
        let ip = self.ip(to);
        let _ = self.exec(from, &["ip", "neigh", "del", &ip, "dev", "eth0"]);
    }

    /// Packet loss and delay on node `i`'s interface (netem only).
    pub fn impair(&self, i: usize, loss_pct: u32, delay_ms: u32) -> bool {
        if !self.netem {
            return false;
        }
        let loss = format!("{loss_pct}%");
        let delay = format!("{delay_ms}ms");
        self.exec(
            i,
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &delay, "loss",
                &loss,
            ],
        )
        .is_ok()
    }

    pub fn unimpair(&self, i: usize) {
        let _ = self.exec(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Ends every partition and impairment.
    pub fn heal_all(&self) {
        for i in 0..self.ns.len() {
            let _ = run(&["ip", "link", "set", &self.veth[i], "up"]);
            for j in 0..self.ns.len() {
                if i != j {
                    self.unblock(i, j);
                }
            }
            if self.netem {
                self.unimpair(i);
            }
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "network namespaces {}n1..n{} on bridge {} ({}.0/24){}",
            self.tag,
            self.ns.len(),
            self.bridge,
            self.net,
            if self.netem {
                ""
            } else {
                "; no tc netem in this kernel: loss/delay faults are skipped"
            }
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// Where the nodes run.
pub enum Net {
    Netns(Netns),
    /// 127.0.0.2.. on the host; partitions become SIGSTOP freezes.
    Loopback,
}

impl Net {
    /// Network namespaces where possible (`HA_FAULTS_NET=loopback` forces
    /// loopback; `HA_FAULTS_NET=netns` makes a failure to set them up fatal).
    pub fn choose(n: usize) -> (Net, String) {
        let want = std::env::var("HA_FAULTS_NET").unwrap_or_default();
        if want == "loopback" {
            return (Net::Loopback, "loopback (HA_FAULTS_NET=loopback)".into());
        }
        match Netns::setup(n) {
            Ok(ns) => {
                let d = ns.describe();
                (Net::Netns(ns), d)
            }
            Err(e) if want == "netns" => panic!("HA_FAULTS_NET=netns but: {e}"),
            Err(e) => (
                Net::Loopback,
                format!("loopback, partitions are SIGSTOP freezes (no network namespaces: {e})"),
            ),
        }
    }

    /// Runs one scenario run; a panic in it (a node that would not start, a broken
    /// setup) heals every cut and becomes `on_panic(message)`, so it fails this run,
    /// not the suite.
    pub fn guarded<T>(&self, run: impl FnOnce() -> T, on_panic: impl FnOnce(String) -> T) -> T {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
            if let Some(ns) = self.netns() {
                ns.heal_all();
            }
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            on_panic(msg)
        })
    }

    pub fn netns(&self) -> Option<&Netns> {
        match self {
            Net::Netns(n) => Some(n),
            Net::Loopback => None,
        }
    }
}
