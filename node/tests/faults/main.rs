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

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod framework;
mod load;
mod net;
mod scenarios;
mod suite;

/// THE SWITCH. `true` while the features of issue 9 (`--min-secondaries`,
/// `--on-store-error`, rollback files) were not in this tree: the scenarios
/// that need a missing one printed "SKIPPED (feature missing)". They are
/// merged, so it is `false`: a missing feature fails the suite.
pub const SKIP_MISSING_FEATURES: bool = false;

#[test]
fn faults() {
    suite::run_suite();
}
