//! The committer thread: group commit on the primary (and in NONE).
//!
//! It takes every pending request, gives each a consecutive seq and a
//! transaction id, queues each transaction to every connected secondary FIRST,
//! then makes the whole batch durable with one `Store::commit`, then (sync
//! mode) waits until every secondary that held our data when the batch was
//! sent has acknowledged the last seq, or has been declared dead (3 ticks, or
//! `secondary_dead`). Secondaries that do not ack within the deadline are
//! declared dead and cut off; the commit still succeeds. A secondary lost any
//! other way before it confirmed (its connection closed, the primary stopped
//! serving it at a role change) makes the commit fail with CONFD_ERR_HA_ABORT:
//! its outcome is unknown. With min-secondaries N, a commit needs N in-sync
//! secondaries to start (else CONFD_ERR_NOT_WRITABLE) and, in sync mode, N
//! confirmations (else CONFD_ERR_HA_ABORT).

use crate::node::{lock, Node};
use crate::store::{StoreOp, TxMeta};
use confd_ha::errcode::*;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most requests in one batch, and about the most bytes.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

pub type CommitResult = Result<String, (i32, String)>;

pub struct CommitReq {
    pub ops: Vec<StoreOp>,
    pub reply: SyncSender<CommitResult>,
}

fn size(ops: &[StoreOp]) -> usize {
    ops.iter()
        .map(|o| match o {
            StoreOp::Set(p, v) => p.len() + v.len() + 16,
            StoreOp::Delete(p) => p.len() + 16,
        })
        .sum()
}

pub fn committer(node: Arc<Node>, rx: Receiver<CommitReq>) {
    let need = node.cfg.min_secondaries;
    while let Ok(first) = rx.recv() {
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
        let refuse = |batch: Vec<CommitReq>, code: i32, why: String| {
            for r in batch {
                let _ = r.reply.send(Err((code, why.clone())));
            }
        };
        let mut cs = lock(&node.commit);
        if !cs.writable {
            let why = cs.refusal.clone();
            drop(cs);
            refuse(batch, CONFD_ERR_NOT_WRITABLE, why);
            continue;
        }
        let down = cs.down.clone();
        if need > 0 {
            let in_sync = down.as_ref().map(|d| d.in_sync()).unwrap_or(0);
            if in_sync < need {
                drop(cs);
                node.in_sync_changed();
                refuse(
                    batch,
                    CONFD_ERR_NOT_WRITABLE,
                    format!(
                        "min-secondaries {need} not met: {in_sync} in-sync secondaries connected; \
                         writes are refused"
                    ),
                );
                continue;
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
            txns.push((meta, r.ops));
            replies.push(r.reply);
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
            refuse(
                replies
                    .into_iter()
                    .map(|reply| CommitReq { ops: vec![], reply })
                    .collect(),
                code,
                why,
            );
            continue;
        }
        cs.last = last.clone();
        drop(cs);
        node.stats
            .commits
            .fetch_add(txns.len() as u64, Ordering::Relaxed);
        let mut result: Result<(), (i32, String)> = Ok(());
        if node.cfg.sync && (!targets.is_empty() || need > 0) {
            let acks = match &down {
                Some(d) => d.wait_acks(&targets, last.seq, node.cfg.ack_timeout()),
                None => Default::default(),
            };
            if let Some(lost) = acks.lost.first() {
                result = Err((
                    CONFD_ERR_HA_ABORT,
                    format!(
                        "transaction {} is durable on this node, but secondary {lost} before \
                         confirming it: the outcome is unknown (it may or may not survive a \
                         failover)",
                        last.seq
                    ),
                ));
            } else if acks.confirmed < need {
                result = Err((
                    CONFD_ERR_HA_ABORT,
                    format!(
                        "only {} of the {need} secondaries that min-secondaries requires \
                         confirmed transaction {}: the outcome is unknown (it is durable on \
                         this node and may or may not survive a failover)",
                        acks.confirmed, last.seq
                    ),
                ));
                node.in_sync_changed();
            }
        }
        for (r, (m, _)) in replies.into_iter().zip(txns) {
            let _ = r.send(result.clone().map(|()| m.txid));
        }
    }
}
