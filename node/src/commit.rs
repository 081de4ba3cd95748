//! The committer thread: group commit on the primary (and in NONE).
//!
//! It takes every pending request, gives each a consecutive seq and a
//! transaction id, queues each transaction to every connected secondary FIRST,
//! then makes the whole batch durable with one `Store::commit`, then (sync
//! mode) waits until every secondary that held our data when the batch was
//! sent has acknowledged the last seq, or has been dropped. Secondaries that
//! do not ack within the deadline are cut off; the commit still succeeds.

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
        let mut cs = lock(&node.commit);
        if !cs.writable {
            let why = cs.refusal.clone();
            drop(cs);
            for r in batch {
                let _ = r.reply.send(Err((CONFD_ERR_NOT_WRITABLE, why.clone())));
            }
            continue;
        }
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let mut seq = cs.last.seq;
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
        let down = cs.down.clone();
        let targets = down.as_ref().map(|d| d.forward(&txns)).unwrap_or_default();
        let last = txns.last().map(|t| t.0.clone()).unwrap_or_default();
        if let Err(e) = node.store.commit(&txns) {
            drop(cs);
            crate::error!(
                "commit",
                "commit of transactions up to {} failed: {e}",
                last.seq
            );
            // The secondaries may have applied what we could not: they re-join by copy.
            if let Some(d) = &down {
                for p in d.initialized_peers() {
                    p.kill("the primary failed to commit a transaction it had sent");
                }
            }
            for r in replies {
                let _ = r.send(Err((CONFD_ERR_INTERNAL, format!("commit failed: {e}"))));
            }
            continue;
        }
        cs.last = last.clone();
        drop(cs);
        node.stats
            .commits
            .fetch_add(txns.len() as u64, Ordering::Relaxed);
        if node.cfg.sync && !targets.is_empty() {
            if let Some(d) = &down {
                d.wait_acks(&targets, last.seq, node.cfg.ack_timeout());
            }
        }
        for (r, (m, _)) in replies.into_iter().zip(txns) {
            let _ = r.send(Ok(m.txid));
        }
    }
}
