//! The committer thread: group commit on the primary (and in NONE), pipelined.
//!
//! It takes every pending request, gives each a consecutive seq and a
//! transaction id, sends the batch to every connected secondary FIRST (one
//! buffer per batch, written to each secondary's socket by this thread when the
//! socket takes it at once, else queued to that secondary's writer thread: it
//! never waits for a socket), then makes the whole batch durable with one
//! `Store::commit`, then hands the batch to the [`Pipeline`] and takes the next
//! one at once: the next batch is made durable and sent while earlier ones wait
//! for their acknowledgements. The pipeline replies to clients strictly in
//! commit order, each batch once it is durable here and (sync mode) every
//! secondary that held our data when the batch was sent has acknowledged its
//! last seq, or has been declared dead (3 ticks, or `secondary_dead`). Who
//! settles a batch: the peer reader thread that reads the deciding
//! acknowledgement (or drops the peer), or this thread at a deadline.
//! Secondaries that do not ack within the deadline are declared dead and cut
//! off; the commit still succeeds. A secondary lost any other way before it
//! confirmed (its connection closed, the primary stopped serving it at a role
//! change) makes the commit fail with CONFD_ERR_HA_ABORT: its outcome is
//! unknown. With min-secondaries N, a commit needs N in-sync secondaries to
//! start (else CONFD_ERR_NOT_WRITABLE) and, in sync mode, N confirmations (else
//! CONFD_ERR_HA_ABORT).

use crate::node::{lock, Node};
use crate::replication::external::primary::{Peer, STALL_SLACK};
use crate::store::{StoreOp, TxMeta};
use confd_ha::errcode::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most requests in one batch, and about the most bytes.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// While batches wait for acknowledgements, the committer looks at their deadlines at
/// least this often.
const DEADLINE_SLICE: Duration = Duration::from_millis(50);
/// At most this many committed batches wait for their acknowledgements at once: the
/// committer makes the next batch durable and sends it while the ones before wait, and
/// beyond this it waits too, so that requests arriving meanwhile form one larger batch
/// (one fsync and one store commit for all of them) rather than many small ones.
pub const MAX_INFLIGHT_BATCHES: usize = 2;

pub type CommitResult = Result<String, (i32, String)>;

pub struct CommitReq {
    pub ops: Vec<StoreOp>,
    pub reply: SyncSender<CommitResult>,
    /// The data session's binding (external mode): 0, or the `primary_term_now` of the PRIMARY
    /// role the session was opened to, or that one of its commit requests arrived under. A commit of a session bound to a
    /// PRIMARY role the node has left since (benone, besecondary, then maybe PRIMARY again)
    /// is refused with CONFD_ERR_NOT_WRITABLE and not made: a commit sent to the primary
    /// is never committed by the same node in another role (in NONE it would be discarded
    /// at the next join). Sessions opened in NONE write in NONE, as ConfD allows.
    pub session: Arc<AtomicU64>,
}

/// The reason given to a commit of a session bound to a PRIMARY role the node has left.
pub const LEFT_PRIMARY_REFUSAL: &str = "this session was opened to (or committed on) this \
     node while it was PRIMARY, and the node has left that role since: the commit was not \
     made; open a new session to the current primary";

fn size(ops: &[StoreOp]) -> usize {
    ops.iter()
        .map(|o| match o {
            StoreOp::Set(p, v) => p.len() + v.len() + 16,
            StoreOp::Delete(p) => p.len() + 16,
        })
        .sum()
}

/// What a batch waits for before its replies go out (the seam where a commit's
/// confirmation rule lives).
pub enum Wait {
    /// Nothing more: the outcome is known (local durability in NONE or async mode, a
    /// refusal, a failed commit).
    Done(Result<(), (i32, String)>),
    /// Sync replication: an acknowledgement of `seq` from each of `targets` (or its
    /// declared death), and at least `need` confirmations (min-secondaries); peers still
    /// silent at `deadline` are declared dead.
    Acks {
        seq: u64,
        targets: Vec<Arc<Peer>>,
        need: usize,
        deadline: Instant,
    },
}

/// One batch from its local commit (or refusal) to its replies.
pub struct InFlight {
    replies: Vec<(SyncSender<CommitResult>, String)>,
    wait: Wait,
}

/// Batches whose replies have not gone out yet, oldest first. Replies leave strictly in
/// this order: a batch is settled only once every batch before it was.
#[derive(Default)]
pub struct Pipeline {
    q: Mutex<VecDeque<InFlight>>,
    /// Signalled when batches leave while the committer waits for room (`room`).
    cv: Condvar,
    committer_waits: AtomicBool,
    /// A batch settled with fewer confirmations than min-secondaries: the committer logs
    /// the change (`Node::in_sync_changed` takes the state lock, which whoever settles may
    /// hold).
    short: AtomicBool,
}

impl Pipeline {
    fn push(&self, b: InFlight) {
        lock(&self.q).push_back(b);
    }

    fn is_empty(&self) -> bool {
        lock(&self.q).is_empty()
    }

    fn len(&self) -> usize {
        lock(&self.q).len()
    }

    /// Waits (at most `d`) until fewer than `n` batches are in flight.
    fn room(&self, n: usize, d: Duration) {
        let q = lock(&self.q);
        if q.len() < n {
            return;
        }
        self.committer_waits.store(true, Ordering::SeqCst);
        let r = self.cv.wait_timeout_while(q, d, |q| q.len() >= n);
        drop(r);
        self.committer_waits.store(false, Ordering::SeqCst);
    }

    /// Replies to every batch at the front whose outcome is known now. Called by the
    /// committer after each batch and at deadlines, and by whoever changes what a batch
    /// waits for (a peer reader on an acknowledgement, a dropped peer, a stopped
    /// downstream).
    pub fn settle(&self) {
        let mut changed = false;
        self.settle_with(|w| acks_outcome(w, false, &mut changed));
        if changed {
            self.short.store(true, Ordering::SeqCst);
        }
    }

    /// At the deadlines: declares the peers still silent dead, then settles. `late` is how
    /// long the committer itself did not run beyond what it asked for (a frozen process,
    /// see STALL_SLACK): it does not count against the peers.
    fn expire(&self, late: Duration) {
        let now = Instant::now();
        let mut changed = false;
        {
            let mut q = lock(&self.q);
            for b in q.iter_mut() {
                if let Wait::Acks { deadline, .. } = &mut b.wait {
                    if late > STALL_SLACK {
                        *deadline += late;
                    }
                }
            }
            let due = q
                .front()
                .is_some_and(|b| matches!(b.wait, Wait::Acks { deadline, .. } if now >= deadline));
            drop(q);
            if !due {
                return;
            }
        }
        self.settle_with(|w| {
            let expired = matches!(w, Wait::Acks { deadline, .. } if now >= *deadline);
            acks_outcome(w, expired, &mut changed)
        });
        if changed {
            self.short.store(true, Ordering::SeqCst);
        }
    }

    /// The ordering core: `outcome` says a batch's result, or None while it still waits.
    fn settle_with(&self, mut outcome: impl FnMut(&mut Wait) -> Option<Result<(), (i32, String)>>) {
        let mut q = lock(&self.q);
        let mut left = false;
        while let Some(b) = q.front_mut() {
            let Some(r) = outcome(&mut b.wait) else { break };
            let b = q.pop_front().expect("front exists");
            left = true;
            // Each reply channel holds one reply and gets one: never blocks.
            for (tx, txid) in b.replies {
                let _ = tx.send(r.clone().map(|()| txid));
            }
        }
        if left && self.committer_waits.load(Ordering::SeqCst) {
            self.cv.notify_one();
        }
    }
}

/// A batch's outcome under sync replication, or None while it waits. With `expired`,
/// the peers that have not acknowledged are declared dead first. `changed`: the number of
/// confirming secondaries fell short of min-secondaries.
fn acks_outcome(
    w: &mut Wait,
    expired: bool,
    changed: &mut bool,
) -> Option<Result<(), (i32, String)>> {
    let (seq, targets, need, deadline) = match w {
        Wait::Done(r) => return Some(r.clone()),
        Wait::Acks {
            seq,
            targets,
            need,
            deadline,
        } => (*seq, &*targets, *need, *deadline),
    };
    let pending: Vec<&Arc<Peer>> = targets
        .iter()
        .filter(|p| !p.is_dead() && p.acked.load(Ordering::SeqCst) < seq)
        .collect();
    if !pending.is_empty() {
        // A peer is declared dead only once its reader has read everything that reached
        // the socket by the deadline: an ack sent in time but not yet read (this process
        // was frozen, or its reader not yet scheduled) never makes it look silent.
        if !expired || pending.iter().any(|p| !p.read_since(deadline)) {
            return None;
        }
        for p in pending {
            p.declare_dead(&format!(
                "no ack for transaction {seq} within the ack deadline (3 ticks)"
            ));
        }
    }
    let acks = crate::replication::external::primary::acks_of(targets, seq);
    if let Some(lost) = acks.lost.first() {
        return Some(Err((
            CONFD_ERR_HA_ABORT,
            format!(
                "transaction {seq} is durable on this node, but secondary {lost} before \
                 confirming it: the outcome is unknown (it may or may not survive a \
                 failover)"
            ),
        )));
    }
    if acks.confirmed < need {
        *changed = true;
        return Some(Err((
            CONFD_ERR_HA_ABORT,
            format!(
                "only {} of the {need} secondaries that min-secondaries requires \
                 confirmed transaction {seq}: the outcome is unknown (it is durable on \
                 this node and may or may not survive a failover)",
                acks.confirmed
            ),
        )));
    }
    Some(Ok(()))
}

pub fn committer(node: Arc<Node>, rx: Receiver<CommitReq>) {
    let need = node.cfg.min_secondaries;
    let pipe = &node.pipeline;
    loop {
        // While batches wait, wake for their deadlines; a wake much later than asked means
        // this process did not run (frozen), which does not count against the peers.
        let asked = Instant::now();
        let next = if pipe.len() >= MAX_INFLIGHT_BATCHES {
            pipe.room(MAX_INFLIGHT_BATCHES, DEADLINE_SLICE);
            Err(RecvTimeoutError::Timeout)
        } else if pipe.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(DEADLINE_SLICE)
        };
        let late = if pipe.is_empty() {
            Duration::ZERO
        } else {
            asked.elapsed().saturating_sub(DEADLINE_SLICE)
        };
        pipe.expire(late);
        if pipe.short.swap(false, Ordering::SeqCst) {
            node.in_sync_changed();
        }
        let first = match next {
            Ok(r) => r,
            // (or room in the pipeline, or a deadline)
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut bytes = size(&first.ops);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += size(&r.ops);
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        // A self-managing mode (Raft) takes the batch: it orders, replicates and applies.
        if let Some(m) = node.managed() {
            m.commit(batch);
            continue;
        }
        let b = commit_batch(&node, need, batch);
        pipe.push(b);
        pipe.settle();
    }
}

/// Answers (refuses) the requests of sessions bound to a PRIMARY role other than `term`'s
/// (0: not PRIMARY now), binds the others to `term` when it is one, and returns them.
fn bind_sessions(term: u64, batch: Vec<CommitReq>) -> Vec<CommitReq> {
    let mut keep = Vec::with_capacity(batch.len());
    for r in batch {
        let b = r.session.load(Ordering::Relaxed);
        if b != 0 && b != term {
            let _ = r.reply.send(Err((
                CONFD_ERR_NOT_WRITABLE,
                LEFT_PRIMARY_REFUSAL.to_string(),
            )));
            continue;
        }
        if term != 0 {
            r.session.store(term, Ordering::Relaxed);
        }
        keep.push(r);
    }
    keep
}

/// Commits one batch (or refuses it) and says what its replies wait for.
fn commit_batch(node: &Arc<Node>, need: usize, batch: Vec<CommitReq>) -> InFlight {
    let refuse = |batch: Vec<CommitReq>, code: i32, why: String| InFlight {
        replies: batch
            .into_iter()
            .map(|r| (r.reply, String::new()))
            .collect(),
        wait: Wait::Done(Err((code, why))),
    };
    let mut cs = lock(&node.commit);
    if !cs.writable {
        let why = cs.refusal.clone();
        drop(cs);
        return refuse(batch, CONFD_ERR_NOT_WRITABLE, why);
    }
    // Read under the commit lock, which set_commit holds while it changes it.
    let batch = bind_sessions(node.primary_term_now.load(Ordering::SeqCst), batch);
    if batch.is_empty() {
        drop(cs);
        return refuse(batch, CONFD_ERR_NOT_WRITABLE, String::new());
    }
    let down = cs.down.clone();
    if need > 0 {
        let in_sync = down.as_ref().map(|d| d.in_sync()).unwrap_or(0);
        if in_sync < need {
            drop(cs);
            node.in_sync_changed();
            return refuse(
                batch,
                CONFD_ERR_NOT_WRITABLE,
                format!(
                    "min-secondaries {need} not met: {in_sync} in-sync secondaries connected; \
                     writes are refused"
                ),
            );
        }
    }
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    // Seqs continue after the highest ever given out, not after the last durable one:
    // a failed commit's seqs may exist on a secondary and are never reused.
    let mut seq = cs.last.seq.max(cs.seq_floor);
    let mut txns: Vec<(TxMeta, Vec<StoreOp>)> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for r in batch {
        seq += 1;
        let meta = TxMeta {
            seq,
            txid: format!("{}-{seq}-{micros}", cs.my_id),
        };
        replies.push((r.reply, meta.txid.clone()));
        txns.push((meta, r.ops));
    }
    cs.seq_floor = seq;
    let targets = down.as_ref().map(|d| d.forward(&txns)).unwrap_or_default();
    let last = txns.last().map(|t| t.0.clone()).unwrap_or_default();
    if let Err(e) = node.store.commit(&txns) {
        drop(cs);
        crate::error!(
            "commit",
            "commit of transactions {}..={} failed: {e}",
            txns[0].0.seq,
            last.seq
        );
        if !targets.is_empty() || down.as_ref().is_some_and(|d| d.count() > 0) {
            node.save_seq_floor(last.seq);
        }
        // The secondaries may have applied what we could not: they re-join by copy
        // (and keep what the copy discards in a rollback file).
        if let Some(d) = &down {
            for p in d.commit_targets() {
                p.kill("the primary failed to commit a transaction it had sent");
            }
        }
        let fault = e.is_fault();
        if fault {
            node.store_failed("commit", &e);
        }
        let (code, why) = if fault {
            (
                crate::node::LOCAL_STORE_ERR,
                format!(
                    "the local store failed to commit transaction {}: {e}; the outcome is \
                     unknown (it may be durable here or on a secondary)",
                    last.seq
                ),
            )
        } else {
            (CONFD_ERR_INTERNAL, format!("commit failed: {e}"))
        };
        return InFlight {
            replies,
            wait: Wait::Done(Err((code, why))),
        };
    }
    cs.last = last.clone();
    drop(cs);
    node.stats
        .commits
        .fetch_add(txns.len() as u64, Ordering::Relaxed);
    let wait = if node.cfg.sync && (!targets.is_empty() || need > 0) {
        Wait::Acks {
            seq: last.seq,
            targets,
            need,
            deadline: Instant::now() + node.cfg.ack_timeout(),
        }
    } else {
        Wait::Done(Ok(()))
    };
    InFlight { replies, wait }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A later batch whose outcome is known first still waits for the batches before it:
    /// replies leave strictly in commit order.
    #[test]
    fn replies_leave_in_commit_order() {
        let p = Pipeline::default();
        let (tx, rx) = sync_channel(8);
        let acks = |seq| Wait::Acks {
            seq,
            targets: vec![],
            need: 1,
            deadline: Instant::now(),
        };
        for (txid, wait) in [
            ("t1", acks(1)),
            ("t2", Wait::Done(Ok(()))),
            ("t3", acks(3)),
            ("t4", Wait::Done(Err((CONFD_ERR_HA_ABORT, "x".into())))),
        ] {
            p.push(InFlight {
                replies: vec![(tx.clone(), txid.to_string())],
                wait,
            });
        }
        // Batch 3's acks arrived, batch 1's not: nothing may leave.
        let acked = |upto: u64| {
            move |w: &mut Wait| match w {
                Wait::Done(r) => Some(r.clone()),
                Wait::Acks { seq, .. } => (*seq <= upto).then_some(Ok(())),
            }
        };
        p.settle_with(|w| match w {
            Wait::Acks { seq: 3, .. } => Some(Ok(())),
            w => acked(0)(w),
        });
        assert!(rx.try_recv().is_err());
        assert!(!p.is_empty());
        p.settle_with(acked(3));
        let got: Vec<CommitResult> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Ok("t1".into()),
                Ok("t2".into()),
                Ok("t3".into()),
                Err((CONFD_ERR_HA_ABORT, "x".into()))
            ]
        );
        assert!(p.is_empty());
    }

    /// Without acknowledgements or declared deaths a batch waits; with no target and
    /// min-secondaries 1 it fails HA_ABORT, never OK.
    #[test]
    fn a_batch_short_of_min_secondaries_aborts() {
        let mut w = Wait::Acks {
            seq: 1,
            targets: vec![],
            need: 1,
            deadline: Instant::now(),
        };
        let mut changed = false;
        let r = acks_outcome(&mut w, false, &mut changed);
        assert!(matches!(r, Some(Err((CONFD_ERR_HA_ABORT, _)))), "{r:?}");
        assert!(changed);
    }
}
