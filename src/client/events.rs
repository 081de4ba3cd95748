//! The event notification client (client id 11): subscribe, read events,
//! acknowledge HA events under HA_INFO_SYNC.

use super::{recv, send, Endpoint, Stream};
use crate::error::{Error, Result};
use crate::proto::ha::{
    ha_sync_ack, parse_error, HaEvent, Subscription, NOTIF_HA_INFO, NOTIF_HEARTBEAT,
};
use crate::proto::hello::CLIENT_EVENT_MGR;
use crate::proto::term::Term;
use std::io::{Read, Write};

/// One notification as read from the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ha(HaEvent),
    Heartbeat,
    /// Any other notification: its flag and the whole term.
    Other(i128, Term),
}

/// Sends the subscription (after a hello that settled on protocol version
/// `proto_vsn`, which decides its shape) and reads the daemon's answer.
pub fn subscribe<S: Read + Write + ?Sized>(
    s: &mut S,
    sub: &Subscription,
    proto_vsn: u16,
) -> Result<()> {
    subscribe_term(s, &sub.to_term_for(proto_vsn))
}

/// Sends a subscription term and reads the answer: `{error, Code}` or
/// `{error, Code, Reason}` is an error, anything else success (as econfd
/// and ConfD's libraries take it).
pub fn subscribe_term<S: Read + Write + ?Sized>(s: &mut S, term: &Term) -> Result<()> {
    send(s, term)?;
    let reply = recv(s)?;
    match parse_error(&reply) {
        Some((code, reason)) => Err(Error::Remote { code, reason }),
        None => Ok(()),
    }
}

/// Decodes one event term: a tuple whose first element is its flag.
pub fn decode_event(t: &Term) -> Result<Event> {
    let bad = || Error::Protocol(format!("malformed notification {t:?}"));
    let e = t.as_tuple().ok_or_else(bad)?;
    let flag = e.first().and_then(Term::as_int).ok_or_else(bad)?;
    Ok(match flag {
        NOTIF_HA_INFO => Event::Ha(e.get(1).and_then(HaEvent::from_inner).ok_or_else(bad)?),
        NOTIF_HEARTBEAT => Event::Heartbeat,
        f => Event::Other(f, t.clone()),
    })
}

/// Blocks until the next event.
pub fn read_event<S: Read + ?Sized>(s: &mut S) -> Result<Event> {
    decode_event(&recv(s)?)
}

/// Acknowledges the last HA event (needed with NOTIF_HA_INFO_SYNC).
pub fn sync_ha<S: Write + ?Sized>(s: &mut S) -> Result<()> {
    send(s, &ha_sync_ack())
}

/// An owned notification connection.
#[derive(Debug)]
pub struct EventClient {
    pub stream: Stream,
}

impl EventClient {
    /// Connects and subscribes to `mask` (NOTIF_* bits); `heartbeat_ms` is
    /// used when the mask has NOTIF_HEARTBEAT.
    pub fn connect(ep: &Endpoint, mask: i128, heartbeat_ms: i64) -> Result<EventClient> {
        let (mut stream, settled) = ep.connect_settled(CLIENT_EVENT_MGR)?;
        let hb = if mask & NOTIF_HEARTBEAT != 0 {
            heartbeat_ms
        } else {
            0
        };
        subscribe(
            &mut stream,
            &Subscription {
                mask,
                heartbeat_ms: hb,
                health_check_ms: 0,
                verbosity: 0,
            },
            settled.proto_vsn,
        )?;
        Ok(EventClient { stream })
    }
    pub fn read(&mut self) -> Result<Event> {
        read_event(&mut self.stream)
    }
    pub fn sync_ha(&mut self) -> Result<()> {
        sync_ha(&mut self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ha_heartbeat_and_other() {
        assert_eq!(
            decode_event(&HaEvent::IsPrimary.to_term()).unwrap(),
            Event::Ha(HaEvent::IsPrimary)
        );
        let hb = Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT), Term::int(0)]);
        assert_eq!(decode_event(&hb).unwrap(), Event::Heartbeat);
        let other = Term::Tuple(vec![Term::int(1), Term::atom("x")]);
        assert!(matches!(decode_event(&other).unwrap(), Event::Other(1, _)));
        // An unknown HA_INFO type is delivered (spec §H.7).
        let unknown = Term::Tuple(vec![
            Term::Int(NOTIF_HA_INFO),
            Term::Tuple(vec![Term::int(99), Term::int(0)]),
        ]);
        assert!(matches!(
            decode_event(&unknown).unwrap(),
            Event::Ha(HaEvent::Unknown { info_type: 99, .. })
        ));
        let bad = Term::Tuple(vec![Term::Int(NOTIF_HA_INFO), Term::int(0)]);
        assert!(decode_event(&bad).is_err());
        assert!(decode_event(&Term::atom("x")).is_err());
    }
}
