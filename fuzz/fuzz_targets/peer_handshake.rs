//! The HA port before authentication, as the primary reads it: the input is
//! the byte stream a connecting peer sends, delivered in pieces whose sizes
//! the input's first byte picks. Frames over MAX_HANDSHAKE_FRAME end the
//! connection until an `ha_auth` arrives (standing in for a valid proof);
//! nothing panics and no frame over the limit in force is ever returned.
#![no_main]

#[path = "peer_common.rs"]
mod peer_common;
// node/src/replication/peer.rs names `crate::store`.
pub(crate) use peer_common::store;
use peer_common::peer::{
    FrameReader, PeerMsg, ReadErr, MAX_HANDSHAKE_FRAME, MAX_PEER_FRAME,
};
use std::io::{self, Read};

/// Gives at most `step` bytes per read, and a "timeout" between reads.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
    tick: bool,
}

impl Read for Pieces<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.tick = !self.tick;
        if self.tick {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.data.len().min(self.step).min(b.len());
        b[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let mut r = Pieces {
        data: rest,
        step: usize::from(step) + 1,
        tick: false,
    };
    let mut fr = FrameReader::new();
    let mut limit = MAX_HANDSHAKE_FRAME;
    let mut idle = 0;
    loop {
        match fr.poll(&mut r) {
            Ok(Some(f)) => {
                idle = 0;
                assert!(f.len() <= limit, "frame of {} over {limit}", f.len());
                if let Ok(PeerMsg::Auth { .. }) = PeerMsg::decode(&f) {
                    fr.authenticated();
                    limit = MAX_PEER_FRAME;
                }
            }
            Ok(None) => {
                idle += 1;
                if idle > 2 && r.data.is_empty() {
                    return;
                }
            }
            Err(ReadErr::TooLarge(n, max)) => {
                assert_eq!(max, limit);
                assert!(n > max);
                return;
            }
            Err(_) => return,
        }
    }
});
