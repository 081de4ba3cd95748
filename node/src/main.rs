//! ha-node: the HA node daemon. See `ha-node --help` and docs/ha-protocol.md.

mod commit;
mod config;
mod events;
mod ipc;
mod log;
mod metrics;
mod node;
mod replication;
// `read` is for ha-ctl.
#[allow(dead_code)]
mod rollback;
mod store;
mod tls;

use config::Cli;
use std::sync::Arc;

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
        let r = unsafe { libc::sigwait(set, &mut sig) };
        if r == 0 {
            return sig;
        }
    }
}

fn main() {
    // Before any thread exists, so that every thread inherits the mask.
    let sigs = block_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse_args(&args) {
        Ok(Cli::Run(c)) => *c,
        Ok(Cli::Help) => {
            print!("{}", config::HELP);
            return;
        }
        Ok(Cli::Version) => {
            println!("ha-node {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprintln!("ha-node: {e}");
            std::process::exit(2);
        }
    };
    log::set_level(cfg.log_level);
    let fail = |msg: String| -> ! {
        error!("main", "{msg}");
        std::process::exit(1);
    };
    // Everything the node creates (data directory, store, its side files)
    // is for this user only: 0700 directories, 0600 files.
    // SAFETY: umask(2) has no failure mode.
    unsafe {
        libc::umask(0o077);
    }
    let store = match store::Store::open(&cfg.data_dir) {
        Ok(s) => {
            s.set_txlog_max_txns(cfg.txlog_max_txns);
            Arc::new(s)
        }
        Err(e) => fail(format!(
            "cannot open the store in {}: {e}",
            cfg.data_dir.display()
        )),
    };
    let node = match node::Node::new(cfg.clone(), store) {
        Ok(n) => n,
        Err(e) => fail(e),
    };
    {
        let last = node::lock(&node.commit).last.clone();
        info!(
            "main",
            "ha-node {} starting: data dir {}, last transaction {} '{}', tick {}, {} replication",
            env!("CARGO_PKG_VERSION"),
            cfg.data_dir.display(),
            last.seq,
            last.txid,
            cfg.tick
                .map(|t| format!("{} ms", t.as_millis()))
                .unwrap_or_else(|| "disabled".into()),
            if cfg.sync { "sync" } else { "async" }
        );
    }
    if cfg.raft.is_some() {
        match replication::raft::start(&node) {
            Ok(m) => {
                let _ = node.managed.set(m);
            }
            Err(e) => fail(format!("cannot start HA Raft: {e}")),
        }
    }
    let mut ha_addrs = vec![cfg.ha_addr];
    ha_addrs.extend(cfg.extra_listen.iter().copied());
    tls::startup_warnings(node.tls.is_some(), &ha_addrs);
    let (ctx, crx) = std::sync::mpsc::channel();
    *node::lock(&node.commit_tx) = Some(ctx);
    let n = node.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("committer".into())
        .spawn(move || commit::committer(n, crx))
    {
        fail(format!("cannot start the committer: {e}"));
    }
    // Bind everything first, then serve: ready means every listener is up.
    if let Some(a) = cfg.metrics_addr {
        let l = metrics::bind(a).unwrap_or_else(|e| fail(e));
        let n = node.clone();
        std::thread::Builder::new()
            .name("metrics-accept".into())
            .spawn(move || metrics::serve(n, l))
            .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")));
        info!("main", "metrics on http://{a}/metrics");
    }
    let tcp = cfg
        .ipc_addr
        .as_ref()
        .map(|a| ipc::bind_tcp(a).unwrap_or_else(|e| fail(e)));
    let unix = cfg
        .ipc_path
        .as_ref()
        .map(|p| ipc::bind_unix(p).unwrap_or_else(|e| fail(e)));
    if let Some(l) = unix {
        let n = node.clone();
        std::thread::Builder::new()
            .name("ipc-unix".into())
            .spawn(move || ipc::serve_unix(n, l))
            .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")));
        info!(
            "main",
            "IPC listening on {}",
            cfg.ipc_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if let Some(l) = tcp {
        let n = node.clone();
        std::thread::Builder::new()
            .name("ipc-tcp".into())
            .spawn(move || ipc::serve_tcp(n, l))
            .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")));
        info!(
            "main",
            "IPC listening on {}",
            cfg.ipc_addr.as_deref().unwrap_or("")
        );
    }
    let sig = wait_signal(&sigs);
    info!(
        "main",
        "{} received: stopping",
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        }
    );
    node.stop();
    // A clean close of the store: no more writes (this waits for a batch being committed),
    // then a last checkpoint, so that the next start replays nothing and needs no repair.
    {
        let mut c = node::lock(&node.commit);
        c.writable = false;
        c.refusal = "the node is stopping: writes are refused".into();
    }
    match node.store.shutdown() {
        Ok(()) => info!("main", "store {} closed", node.store.file().display()),
        Err(e) => warn!("main", "closing the store: {e}"),
    }
    if let Some(p) = &cfg.ipc_path {
        let _ = std::fs::remove_file(p);
    }
    info!("main", "stopped");
    std::process::exit(0);
}
