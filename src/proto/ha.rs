//! HA control messages (client id 17, spec §D.5) and HA event terms (§D.7).

use super::term::Term;
use crate::value::Value;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const ORDER_BEPRIMARY: i128 = 1;
pub const ORDER_BESECONDARY: i128 = 2;
pub const ORDER_BENONE: i128 = 3;
pub const ORDER_GETSTATUS: i128 = 4;
pub const ORDER_SECONDARY_DEAD: i128 = 5;
pub const ORDER_BERELAY: i128 = 6;

/// `enum confd_ha_status_state`.
pub const STATE_NONE: i32 = 1;
pub const STATE_SECONDARY: i32 = 2;
pub const STATE_PRIMARY: i32 = 3;
pub const STATE_SECONDARY_RELAY: i32 = 4;

/// The address of an HA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// AF_UNSPEC: a name or other non-IP address, sent as a binary.
    Str(String),
}

impl NodeAddr {
    pub fn to_term(&self) -> Term {
        match self {
            NodeAddr::V4(a) => Term::Tuple(a.octets().iter().map(|&o| Term::int(o)).collect()),
            NodeAddr::V6(a) => Term::Tuple(a.segments().iter().map(|&s| Term::int(s)).collect()),
            NodeAddr::Str(s) => Term::binary(s.as_bytes()),
        }
    }
    pub fn from_term(t: &Term) -> Option<NodeAddr> {
        match t {
            Term::Tuple(_) => match Value::from_term(t).ok()? {
                Value::Ipv4(a) => Some(NodeAddr::V4(a)),
                Value::Ipv6(a) => Some(NodeAddr::V6(a)),
                _ => None,
            },
            Term::Binary(_) | Term::List(_) => t
                .as_bytes_lossy()
                .map(|b| NodeAddr::Str(String::from_utf8_lossy(&b).into_owned())),
            _ => None,
        }
    }
    /// Parses an IPv4 or IPv6 literal; anything else is kept as a string.
    pub fn parse(s: &str) -> NodeAddr {
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            NodeAddr::V4(a)
        } else if let Ok(a) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<Ipv6Addr>()
        {
            NodeAddr::V6(a)
        } else {
            NodeAddr::Str(s.to_owned())
        }
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAddr::V4(a) => write!(f, "{a}"),
            NodeAddr::V6(a) => write!(f, "{a}"),
            NodeAddr::Str(s) => write!(f, "{s}"),
        }
    }
}

/// A node id and address (`struct confd_ha_node`, `#ha_node{}`).
#[derive(Debug, Clone, PartialEq)]
pub struct HaNode {
    pub id: Value,
    pub addr: NodeAddr,
}

impl HaNode {
    pub fn to_term(&self) -> Term {
        Term::Tuple(vec![self.id.to_term(), self.addr.to_term()])
    }
    pub fn from_term(t: &Term) -> Option<HaNode> {
        match t.as_tuple()? {
            [id, addr] => Some(HaNode {
                id: Value::from_term(id).ok()?,
                addr: NodeAddr::from_term(addr)?,
            }),
            _ => None,
        }
    }
}

/// An order on the HA control socket.
#[derive(Debug, Clone, PartialEq)]
pub enum HaRequest {
    BePrimary {
        me: Value,
    },
    BeSecondary {
        me: Value,
        primary: HaNode,
        wait_reply: bool,
    },
    BeNone,
    GetStatus,
    SecondaryDead {
        node: Value,
    },
    BeRelay,
}

impl HaRequest {
    pub fn to_term(&self) -> Term {
        let t = |v: Vec<Term>| Term::Tuple(v);
        match self {
            HaRequest::BePrimary { me } => t(vec![Term::int(ORDER_BEPRIMARY), me.to_term()]),
            HaRequest::BeSecondary {
                me,
                primary,
                wait_reply,
            } => t(vec![
                Term::int(ORDER_BESECONDARY),
                me.to_term(),
                primary.to_term(),
                Term::int(i32::from(*wait_reply)),
            ]),
            HaRequest::BeNone => t(vec![Term::int(ORDER_BENONE)]),
            HaRequest::GetStatus => t(vec![Term::int(ORDER_GETSTATUS)]),
            HaRequest::SecondaryDead { node } => {
                t(vec![Term::int(ORDER_SECONDARY_DEAD), node.to_term()])
            }
            HaRequest::BeRelay => t(vec![Term::int(ORDER_BERELAY)]),
        }
    }

    /// Decodes a request; the error says what was wrong with it.
    pub fn from_term(t: &Term) -> Result<HaRequest, String> {
        let bad = || format!("malformed HA request {t:?}");
        let e = t.as_tuple().ok_or_else(bad)?;
        let order = e.first().and_then(Term::as_int).ok_or_else(bad)?;
        let val = |x: &Term| Value::from_term(x).map_err(|e| e.to_string());
        Ok(match (order, e.len()) {
            (ORDER_BEPRIMARY, 2) => HaRequest::BePrimary { me: val(&e[1])? },
            (ORDER_BESECONDARY, 4) => HaRequest::BeSecondary {
                me: val(&e[1])?,
                primary: HaNode::from_term(&e[2]).ok_or_else(bad)?,
                wait_reply: match e[3].as_int() {
                    Some(0) => false,
                    Some(_) => true,
                    None => e[3].is_atom("true"),
                },
            },
            (ORDER_BENONE, 1) => HaRequest::BeNone,
            (ORDER_GETSTATUS, 1) => HaRequest::GetStatus,
            (ORDER_SECONDARY_DEAD, 2) => HaRequest::SecondaryDead { node: val(&e[1])? },
            (ORDER_BERELAY, 1) => HaRequest::BeRelay,
            _ => return Err(bad()),
        })
    }
}

/// The answer to a synchronous order.
#[derive(Debug, Clone, PartialEq)]
pub enum HaReply {
    Ok,
    Error { code: i32, reason: String },
    Status { state: i32, nodes: Vec<HaNode> },
}

impl HaReply {
    pub fn to_term(&self) -> Term {
        match self {
            HaReply::Ok => Term::ok(),
            HaReply::Error { code, reason } => error_term(*code, reason),
            HaReply::Status { state, nodes } => Term::Tuple(vec![
                Term::int(*state),
                Term::List(nodes.iter().map(HaNode::to_term).collect()),
            ]),
        }
    }
    pub fn from_term(t: &Term) -> Option<HaReply> {
        if t.is_atom("ok") {
            return Some(HaReply::Ok);
        }
        if let Some((code, reason)) = parse_error(t) {
            return Some(HaReply::Error { code, reason });
        }
        match t.as_tuple()? {
            [state, Term::List(nodes)] => Some(HaReply::Status {
                state: state.as_int().and_then(|i| i32::try_from(i).ok())?,
                nodes: nodes.iter().map(HaNode::from_term).collect::<Option<_>>()?,
            }),
            _ => None,
        }
    }
}

/// `{error, Code, Reason}` with Reason a UTF-8 binary.
pub fn error_term(code: i32, reason: &str) -> Term {
    Term::Tuple(vec![
        Term::atom("error"),
        Term::int(code),
        Term::binary(reason),
    ])
}

/// Recognises `{error, Code, Reason}` (Reason a binary, a string or any term).
pub fn parse_error(t: &Term) -> Option<(i32, String)> {
    match t.as_tuple()? {
        [e, code, reason] if e.is_atom("error") => {
            let code = code.as_int().and_then(|i| i32::try_from(i).ok())?;
            let reason = match reason.as_bytes_lossy() {
                Some(b) => String::from_utf8_lossy(&b).into_owned(),
                None => match reason {
                    Term::Atom(a) => a.clone(),
                    other => format!("{other:?}"),
                },
            };
            Some((code, reason))
        }
        _ => None,
    }
}

// ---- HA events on the notification socket (client id 11) ----

/// `CONFD_NOTIF_HA_INFO` and friends used by the HA event stream.
pub const NOTIF_HA_INFO: i128 = 1 << 6;
pub const NOTIF_HEARTBEAT: i128 = 1 << 13;
pub const NOTIF_HA_INFO_SYNC: i128 = 1 << 20;

pub const HA_INFO_NOPRIMARY: i32 = 1;
pub const HA_INFO_SECONDARY_DIED: i32 = 2;
pub const HA_INFO_SECONDARY_ARRIVED: i32 = 3;
pub const HA_INFO_SECONDARY_INITIALIZED: i32 = 4;
pub const HA_INFO_IS_PRIMARY: i32 = 5;
pub const HA_INFO_IS_NONE: i32 = 6;
pub const HA_INFO_BESECONDARY_RESULT: i32 = 7;

/// One HA_INFO event.
#[derive(Debug, Clone, PartialEq)]
pub enum HaEvent {
    NoPrimary { reason: i32 },
    SecondaryDied(HaNode),
    SecondaryArrived(HaNode),
    SecondaryInitialized { by_copy: bool },
    IsPrimary,
    IsNone,
    BeSecondaryResult { result: i32 },
}

impl HaEvent {
    pub fn info_type(&self) -> i32 {
        match self {
            HaEvent::NoPrimary { .. } => HA_INFO_NOPRIMARY,
            HaEvent::SecondaryDied(_) => HA_INFO_SECONDARY_DIED,
            HaEvent::SecondaryArrived(_) => HA_INFO_SECONDARY_ARRIVED,
            HaEvent::SecondaryInitialized { .. } => HA_INFO_SECONDARY_INITIALIZED,
            HaEvent::IsPrimary => HA_INFO_IS_PRIMARY,
            HaEvent::IsNone => HA_INFO_IS_NONE,
            HaEvent::BeSecondaryResult { .. } => HA_INFO_BESECONDARY_RESULT,
        }
    }
    /// `{64, {Type, Data}}`.
    pub fn to_term(&self) -> Term {
        let data = match self {
            HaEvent::NoPrimary { reason } => Term::int(*reason),
            HaEvent::SecondaryDied(n) | HaEvent::SecondaryArrived(n) => n.to_term(),
            HaEvent::SecondaryInitialized { by_copy } => Term::int(i32::from(*by_copy)),
            HaEvent::IsPrimary | HaEvent::IsNone => Term::int(0),
            HaEvent::BeSecondaryResult { result } => Term::int(*result),
        };
        Term::Tuple(vec![
            Term::Int(NOTIF_HA_INFO),
            Term::Tuple(vec![Term::int(self.info_type()), data]),
        ])
    }
    /// Decodes the `{Type, Data}` part.
    pub fn from_inner(t: &Term) -> Option<HaEvent> {
        let [ty, data] = t.as_tuple()? else {
            return None;
        };
        let int = || data.as_int().and_then(|i| i32::try_from(i).ok());
        Some(match i32::try_from(ty.as_int()?).ok()? {
            HA_INFO_NOPRIMARY => HaEvent::NoPrimary { reason: int()? },
            HA_INFO_SECONDARY_DIED => HaEvent::SecondaryDied(HaNode::from_term(data)?),
            HA_INFO_SECONDARY_ARRIVED => HaEvent::SecondaryArrived(HaNode::from_term(data)?),
            HA_INFO_SECONDARY_INITIALIZED => HaEvent::SecondaryInitialized {
                by_copy: int()? != 0,
            },
            HA_INFO_IS_PRIMARY => HaEvent::IsPrimary,
            HA_INFO_IS_NONE => HaEvent::IsNone,
            HA_INFO_BESECONDARY_RESULT => HaEvent::BeSecondaryResult { result: int()? },
            _ => return None,
        })
    }
}

/// The notification subscription `{Mask, HbInterval, HcInterval, StreamInfo, Verbosity}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub mask: i128,
    pub heartbeat_ms: i64,
    pub health_check_ms: i64,
    pub verbosity: i64,
}

impl Subscription {
    pub fn to_term(&self) -> Term {
        Term::Tuple(vec![
            Term::Int(self.mask),
            Term::int(self.heartbeat_ms),
            Term::int(self.health_check_ms),
            Term::atom("undefined"),
            Term::int(self.verbosity),
        ])
    }
    /// Accepts the 5-tuple and the older 4-tuple without verbosity.
    pub fn from_term(t: &Term) -> Option<Subscription> {
        let e = t.as_tuple()?;
        if e.len() != 4 && e.len() != 5 {
            return None;
        }
        Some(Subscription {
            mask: e[0].as_int()?,
            heartbeat_ms: e[1].as_i64()?,
            health_check_ms: e[2].as_i64()?,
            verbosity: e.get(4).and_then(Term::as_i64).unwrap_or(0),
        })
    }
}

/// A heartbeat event frame on the notification socket: `{8192, 0}`
/// (CONFD_NOTIF_HEARTBEAT; the element after the flag carries nothing).
pub fn heartbeat_term() -> Term {
    Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT), Term::int(0)])
}

/// The project-defined acknowledgement sent by `confd_sync_ha_notification()`:
/// `{0, ha_info_synced}` (ConfD's own term for it is not public).
pub fn ha_sync_ack() -> Term {
    Term::Tuple(vec![Term::int(0), Term::atom("ha_info_synced")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(t: &Term) -> Vec<u8> {
        let mut v = Vec::new();
        crate::proto::frame::write_frame(&mut v, &t.encode()).unwrap();
        v
    }
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }
    fn buf(s: &str) -> Value {
        Value::Buf(s.as_bytes().to_vec())
    }

    #[test]
    fn worked_frames_of_the_spec() {
        let cases: Vec<(Term, &str)> = vec![
            (HaRequest::BePrimary { me: buf("n1") }.to_term(), "00 00 00 0C 83 68 02 61 01 6D 00 00 00 02 6E 31"),
            (HaRequest::BeNone.to_term(), "00 00 00 05 83 68 01 61 03"),
            (HaRequest::GetStatus.to_term(), "00 00 00 05 83 68 01 61 04"),
            (HaRequest::BeRelay.to_term(), "00 00 00 05 83 68 01 61 06"),
            (HaRequest::SecondaryDead { node: buf("n2") }.to_term(), "00 00 00 0C 83 68 02 61 05 6D 00 00 00 02 6E 32"),
            (
                HaRequest::BeSecondary {
                    me: buf("n2"),
                    primary: HaNode { id: buf("n1"), addr: NodeAddr::V4("127.0.0.1".parse().unwrap()) },
                    wait_reply: true,
                }
                .to_term(),
                "00 00 00 21 83 68 04 61 02 6D 00 00 00 02 6E 32 68 02 6D 00 00 00 02 6E 31 68 04 61 7F 61 00 61 00 61 01 61 01",
            ),
            (HaReply::Ok.to_term(), "00 00 00 05 83 77 02 6F 6B"),
            (
                HaReply::Error { code: 17, reason: "not allowed".into() }.to_term(),
                "00 00 00 1C 83 68 03 77 05 65 72 72 6F 72 61 11 6D 00 00 00 0B 6E 6F 74 20 61 6C 6C 6F 77 65 64",
            ),
            (
                HaReply::Status {
                    state: STATE_PRIMARY,
                    nodes: vec![HaNode { id: buf("n2"), addr: NodeAddr::V4("10.0.0.2".parse().unwrap()) }],
                }
                .to_term(),
                "00 00 00 1E 83 68 02 61 03 6C 00 00 00 01 68 02 6D 00 00 00 02 6E 32 68 04 61 0A 61 00 61 00 61 02 6A",
            ),
            (HaReply::Status { state: STATE_NONE, nodes: vec![] }.to_term(), "00 00 00 06 83 68 02 61 01 6A"),
            (
                HaEvent::SecondaryArrived(HaNode { id: buf("n2"), addr: NodeAddr::V4("10.0.0.2".parse().unwrap()) }).to_term(),
                "00 00 00 1C 83 68 02 61 40 68 02 61 03 68 02 6D 00 00 00 02 6E 32 68 04 61 0A 61 00 61 00 61 02",
            ),
            (HaEvent::NoPrimary { reason: 26 }.to_term(), "00 00 00 0B 83 68 02 61 40 68 02 61 01 61 1A"),
        ];
        for (term, expect) in cases {
            let bytes = framed(&term);
            assert_eq!(bytes, hex(expect), "frame of {term:?}");
            assert_eq!(Term::decode(&bytes[4..]).unwrap(), term);
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let reqs = [
            HaRequest::BePrimary { me: buf("a") },
            HaRequest::BeSecondary {
                me: buf("b"),
                primary: HaNode {
                    id: buf("a"),
                    addr: NodeAddr::V6("::1".parse().unwrap()),
                },
                wait_reply: false,
            },
            HaRequest::BeSecondary {
                me: buf("b"),
                primary: HaNode {
                    id: buf("a"),
                    addr: NodeAddr::Str("primary.example".into()),
                },
                wait_reply: true,
            },
            HaRequest::BeNone,
            HaRequest::GetStatus,
            HaRequest::SecondaryDead { node: buf("c") },
            HaRequest::BeRelay,
        ];
        for r in reqs {
            assert_eq!(HaRequest::from_term(&r.to_term()).unwrap(), r);
        }
        assert!(HaRequest::from_term(&Term::Tuple(vec![Term::int(9)])).is_err());
        assert!(HaRequest::from_term(&Term::atom("x")).is_err());
        // The old-OTP atom encoding of ok decodes too.
        assert_eq!(
            HaReply::from_term(&Term::decode(&hex("83 64 00 02 6F 6B")).unwrap()),
            Some(HaReply::Ok)
        );
        assert_eq!(HaReply::from_term(&Term::atom("nok")), None);
    }

    #[test]
    fn events_and_subscription_round_trip() {
        let n = HaNode {
            id: buf("s"),
            addr: NodeAddr::V4("127.0.0.2".parse().unwrap()),
        };
        for ev in [
            HaEvent::NoPrimary { reason: 31 },
            HaEvent::SecondaryDied(n.clone()),
            HaEvent::SecondaryArrived(n),
            HaEvent::SecondaryInitialized { by_copy: true },
            HaEvent::IsPrimary,
            HaEvent::IsNone,
            HaEvent::BeSecondaryResult { result: 28 },
        ] {
            let t = ev.to_term();
            assert_eq!(HaEvent::from_inner(&t.as_tuple().unwrap()[1]), Some(ev));
        }
        // An event type outside i32 is not type 1 modulo 2^32.
        let wrapped = Term::Tuple(vec![Term::Int((1i128 << 32) + 1), Term::int(26)]);
        assert_eq!(HaEvent::from_inner(&wrapped), None);
        let s = Subscription {
            mask: 64,
            heartbeat_ms: 0,
            health_check_ms: 0,
            verbosity: 0,
        };
        let mut framed_sub = Vec::new();
        crate::proto::frame::write_frame(&mut framed_sub, &s.to_term().encode()).unwrap();
        let mut expect = hex("00 00 00 16 83 68 05 61 40 61 00 61 00 77 09");
        expect.extend_from_slice(b"undefined");
        expect.extend_from_slice(&[0x61, 0x00]);
        assert_eq!(framed_sub, expect);
        assert_eq!(Subscription::from_term(&s.to_term()), Some(s));
        assert_eq!(
            heartbeat_term().encode(),
            hex("83 68 02 62 00 00 20 00 61 00")
        );
    }
}
