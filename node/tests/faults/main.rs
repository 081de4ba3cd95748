//! Fault-injection suite (issue 9): a 3-node cluster (each node in its own
//! network namespace where the machine allows, loopback otherwise), four
//! writers that record every acknowledged commit, a small HA framework that
//! fails over and switches over through the library, and faults: kill -9 and
//! SIGSTOP of the primary and of secondaries, planned switchover under load
//! (with a slow disk), partitions one- and two-way, a disk that fills (tmpfs),
//! an fdatasync that fails (strace's syscall fault injection), damaged store
//! files. After each scenario has healed it checks: no acknowledged commit
//! lost (with `min-secondaries 0`, only commits of the primary the scenario
//! froze, cut off, killed or broke, and each of those is in a rollback file), no node PRIMARY and writable
//! while its store refuses writes, identical data on every node, no crash.
//!
//! `make check` runs the bounded form (each kind of fault once); the full
//! form (`HA_FAULTS=full`, `make check-faults`) runs every scenario in both
//! modes, `HA_FAULTS_ITERATIONS` times (default 3). `HA_FAULTS_ONLY=substr`
//! runs the scenarios whose name contains substr; `HA_FAULTS_NET=loopback`
//! forces loopback. The last line printed is the totals.
//!
//! Then the Raft-mode scenarios (issue 13, raft_suite.rs): 3- and 5-node
//! clusters in `mode = "raft"`, named `raft3-...` and `raft5-...`
//! (`HA_FAULTS_ONLY=raft` runs only those), with their own totals line.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod framework;
mod load;
mod net;
mod raft;
mod raft_suite;
mod scenarios;
mod suite;

/// THE SWITCH. `true` while the features of issue 9 (`--min-secondaries`,
/// `--on-store-error`, rollback files) were not in this tree: the scenarios
/// that need a missing one printed "SKIPPED (feature missing)". They are
/// merged, so it is `false`: a missing feature fails the suite.
pub const SKIP_MISSING_FEATURES: bool = false;

#[test]
fn faults() {
    // The external-mode suite, then the Raft one (one after the other: they
    // share the network namespaces' names); a failure of the first does not
    // keep the second from running.
    let external = std::panic::catch_unwind(suite::run_suite);
    let raft = raft_suite::run();
    if let Err(p) = external {
        std::panic::resume_unwind(p);
    }
    assert!(
        raft.is_empty(),
        "Raft fault scenarios failed:\n{}",
        raft.join("\n")
    );
}
