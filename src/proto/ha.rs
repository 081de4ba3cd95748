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
    /// Decodes a reply as ConfD's libraries do (spec §H.2): any atom is
    /// success (a daemon answers `ok`); `{error, Code}` and
    /// `{error, Code, Reason}` are errors (the 2-tuple with an empty reason);
    /// `{State, Nodes}` is a status.
    pub fn from_term(t: &Term) -> Option<HaReply> {
        if let Term::Atom(_) = t {
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

/// Recognises `{error, Code}` (what a real daemon sends, spec §H.2; the
/// reason is then empty) and `{error, Code, Reason}` (Reason a binary, a
/// string, an atom or any term, shown as text).
pub fn parse_error(t: &Term) -> Option<(i32, String)> {
    let (code, reason) = match t.as_tuple()? {
        [e, code] if e.is_atom("error") => (code, None),
        [e, code, reason] if e.is_atom("error") => (code, Some(reason)),
        _ => return None,
    };
    let code = code.as_int().and_then(|i| i32::try_from(i).ok())?;
    let reason = match reason {
        None => String::new(),
        Some(reason) => match reason.as_bytes_lossy() {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => match reason {
                Term::Atom(a) => a.clone(),
                other => format!("{other:?}"),
            },
        },
    };
    Some((code, reason))
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
    NoPrimary {
        reason: i32,
    },
    SecondaryDied(HaNode),
    SecondaryArrived(HaNode),
    SecondaryInitialized {
        by_copy: bool,
    },
    IsPrimary,
    IsNone,
    BeSecondaryResult {
        result: i32,
    },
    /// An HA_INFO type this library does not know (a newer daemon's), with
    /// its data as sent. Delivered, as ConfD's libraries deliver it.
    Unknown {
        info_type: i32,
        data: Term,
    },
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
            HaEvent::Unknown { info_type, .. } => *info_type,
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
            HaEvent::Unknown { data, .. } => data.clone(),
        };
        Term::Tuple(vec![
            Term::Int(NOTIF_HA_INFO),
            Term::Tuple(vec![Term::int(self.info_type()), data]),
        ])
    }
    /// Decodes the `{Type, Data}` part. Only the shape `{Type, Data}` with an
    /// integer `Type` that fits an `int` is required; like ConfD's libraries
    /// (spec §H.7) every such event is delivered, whatever its data:
    ///
    /// - an unknown `Type` → [`HaEvent::Unknown`] with the type number as is;
    /// - NOPRIMARY data that is not an `int` → reason 0 (no confd_errno);
    /// - the by-copy flag: an integer (nonzero = by copy) or the atom `true`;
    ///   anything else is "not by copy";
    /// - BESECONDARY_RESULT data: an integer as is, the atom `ok` → 0,
    ///   `{error, Code}` → Code, anything else → CONFD_ERR_INTERNAL (never
    ///   0, which would report a failure as success);
    /// - node ids and addresses as in [`event_node`].
    pub fn from_inner(t: &Term) -> Option<HaEvent> {
        let [ty, data] = t.as_tuple()? else {
            return None;
        };
        let int = || data.as_int().and_then(|i| i32::try_from(i).ok());
        Some(match i32::try_from(ty.as_int()?).ok()? {
            HA_INFO_NOPRIMARY => HaEvent::NoPrimary {
                reason: int().unwrap_or(0),
            },
            HA_INFO_SECONDARY_DIED => HaEvent::SecondaryDied(event_node(data)),
            HA_INFO_SECONDARY_ARRIVED => HaEvent::SecondaryArrived(event_node(data)),
            HA_INFO_SECONDARY_INITIALIZED => HaEvent::SecondaryInitialized {
                by_copy: match data {
                    Term::Int(i) => *i != 0,
                    other => other.is_atom("true"),
                },
            },
            HA_INFO_IS_PRIMARY => HaEvent::IsPrimary,
            HA_INFO_IS_NONE => HaEvent::IsNone,
            HA_INFO_BESECONDARY_RESULT => HaEvent::BeSecondaryResult {
                result: match (int(), data) {
                    (Some(r), _) => r,
                    (None, d) if d.is_atom("ok") => 0,
                    (None, d) => parse_error(d)
                        .map(|(code, _)| code)
                        .unwrap_or(crate::errcode::CONFD_ERR_INTERNAL),
                },
            },
            other => HaEvent::Unknown {
                info_type: other,
                data: data.clone(),
            },
        })
    }
}

/// Most bytes of an event address kept as text when it is not an IP address.
pub const MAX_EVENT_ADDR_TEXT_BYTES: usize = 127;

/// The `{NodeId, Addr}` of a SECONDARY_DIED / SECONDARY_ARRIVED event,
/// decoded so that the event is always delivered (spec §H.7):
///
/// - a node id that is a value term is that value; an Erlang string (a list
///   of bytes) or an atom is a C_BUF of its text; anything else is
///   C_NOEXISTS;
/// - an address as in [`NodeAddr::from_term`]; an atom is its text; anything
///   else is its printed term (at most [`MAX_EVENT_ADDR_TEXT_BYTES`]);
/// - data that is not a 2-tuple gives a C_NOEXISTS id and an empty address.
pub fn event_node(data: &Term) -> HaNode {
    let Some([id, addr]) = data.as_tuple() else {
        return HaNode {
            id: Value::NoExists,
            addr: NodeAddr::Str(String::new()),
        };
    };
    let id = match id {
        Term::List(_) => match id.as_bytes_lossy() {
            Some(b) => Value::Buf(b),
            None => Value::from_term(id).unwrap_or(Value::NoExists),
        },
        Term::Atom(a) => Value::Buf(a.as_bytes().to_vec()),
        _ => Value::from_term(id).unwrap_or(Value::NoExists),
    };
    let addr = NodeAddr::from_term(addr).unwrap_or_else(|| {
        let mut text = match addr {
            Term::Atom(a) => a.clone(),
            other => format!("{other:?}"),
        };
        if text.len() > MAX_EVENT_ADDR_TEXT_BYTES {
            let mut cut = MAX_EVENT_ADDR_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        NodeAddr::Str(text)
    });
    HaNode { id, addr }
}

/// The first protocol version whose subscription term carries the verbosity
/// element. LIB_PROTO_VSN is 10 x major + minor of the ConfD core (spec §0):
/// ConfD 6.x is 60-69 (6.6 = 66), ConfD 7.x is 70-79, NSO 5.x/6.x (ConfD core
/// 8.x) 80 and up. ConfD 6.6 and its library use the 4-tuple and refuse the
/// 5-tuple; the `verbosity` field arrives with the ConfD 7.x headers; NSO
/// 6.2.5 sends the 5-tuple (spec §H.4). So the cut is the first ConfD 7.x
/// protocol version.
pub const SUBSCRIPTION_VERBOSITY_MIN_PROTO_VSN: u16 = 70;

/// The notification subscription: `{Mask, HbInterval, HcInterval,
/// StreamInfo, Verbosity}` for protocol versions from
/// [`SUBSCRIPTION_VERBOSITY_MIN_PROTO_VSN`], `{Mask, HbInterval, HcInterval,
/// StreamInfo}` before.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub mask: i128,
    pub heartbeat_ms: i64,
    pub health_check_ms: i64,
    pub verbosity: i64,
}

impl Subscription {
    /// The 5-tuple (protocol 70 and up).
    pub fn to_term(&self) -> Term {
        Term::Tuple(vec![
            Term::Int(self.mask),
            Term::int(self.heartbeat_ms),
            Term::int(self.health_check_ms),
            Term::atom("undefined"),
            Term::int(self.verbosity),
        ])
    }
    /// The term for a daemon that settled on protocol version `proto_vsn`:
    /// the 4-tuple without verbosity before
    /// [`SUBSCRIPTION_VERBOSITY_MIN_PROTO_VSN`], else the 5-tuple.
    pub fn to_term_for(&self, proto_vsn: u16) -> Term {
        let mut t = self.to_term();
        if proto_vsn < SUBSCRIPTION_VERBOSITY_MIN_PROTO_VSN {
            if let Term::Tuple(e) = &mut t {
                e.truncate(4);
            }
        }
        t
    }
    /// Accepts the 5-tuple and the 4-tuple without verbosity (whatever the
    /// protocol version of the hello: `ha-node` serves every release).
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

/// A heartbeat event frame on the notification socket for a client of
/// protocol version `proto_vsn`: `{8192}` (CONFD_NOTIF_HEARTBEAT alone) as
/// ConfD 6.6 sends it (measured, spec §H.1) before protocol 70; `{8192, 0}`
/// from 70 on (not measured; econfd and this library read only the flag).
pub fn heartbeat_term_for(proto_vsn: u16) -> Term {
    if proto_vsn < SUBSCRIPTION_VERBOSITY_MIN_PROTO_VSN {
        Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT)])
    } else {
        heartbeat_term()
    }
}

/// A heartbeat event frame: `{8192, 0}` (CONFD_NOTIF_HEARTBEAT; the element
/// after the flag carries nothing).
pub fn heartbeat_term() -> Term {
    Term::Tuple(vec![Term::Int(NOTIF_HEARTBEAT), Term::int(0)])
}

/// What `confd_sync_ha_notification()` sends: the bare atom `ha_synced`, as
/// ConfD 6.6's and NSO 6.2.5's libraries do (measured, spec §H.3). ConfD
/// closes the notification socket on any other term.
pub fn ha_sync_ack() -> Term {
    Term::atom("ha_synced")
}

/// The acknowledgement libconfd_ha 0.1 sent (`{0, ha_info_synced}`), before
/// ConfD's term was measured. `ha-node` still accepts it (see node/src/events.rs).
pub fn legacy_ha_sync_ack() -> Term {
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
        // Any atom is success, as with ConfD's libraries (spec §H.2).
        assert_eq!(HaReply::from_term(&Term::atom("nok")), Some(HaReply::Ok));
        assert_eq!(HaReply::from_term(&Term::binary("ok")), None);
        // A real daemon's error: {error, Code}, no reason.
        let two = Term::decode(&hex("83 68 02 77 05 65 72 72 6F 72 61 11")).unwrap();
        assert_eq!(
            HaReply::from_term(&two),
            Some(HaReply::Error {
                code: 17,
                reason: String::new()
            })
        );
        assert_eq!(parse_error(&two), Some((17, String::new())));
        let atom_reason = Term::Tuple(vec![
            Term::atom("error"),
            Term::int(25),
            Term::atom("econnrefused"),
        ]);
        assert_eq!(parse_error(&atom_reason), Some((25, "econnrefused".into())));
        let not_int = Term::Tuple(vec![Term::atom("error"), Term::atom("closed")]);
        assert_eq!(parse_error(&not_int), None);
        assert_eq!(HaReply::from_term(&not_int), None);
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
        let unknown = HaEvent::Unknown {
            info_type: 8,
            data: Term::atom("x"),
        };
        assert_eq!(
            HaEvent::from_inner(&unknown.to_term().as_tuple().unwrap()[1]),
            Some(unknown)
        );
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
        assert_eq!(Subscription::from_term(&s.to_term()), Some(s.clone()));
        assert_eq!(s.to_term_for(87), s.to_term());
        assert_eq!(s.to_term_for(70), s.to_term());
        // ConfD 6.x: the 4-tuple {Mask, Hb, Hc, undefined} (spec §H.4).
        let mut four = hex("83 68 04 61 40 61 00 61 00 77 09");
        four.extend_from_slice(b"undefined");
        assert_eq!(s.to_term_for(66).encode(), four);
        assert_eq!(s.to_term_for(69).encode(), four);
        assert_eq!(Subscription::from_term(&s.to_term_for(66)), Some(s));
        assert_eq!(
            heartbeat_term().encode(),
            hex("83 68 02 62 00 00 20 00 61 00")
        );
        assert_eq!(heartbeat_term_for(87), heartbeat_term());
        assert_eq!(
            heartbeat_term_for(66).encode(),
            hex("83 68 01 62 00 00 20 00")
        );
        // ha_synced as NSO's library writes it (SMALL_ATOM_UTF8) and as
        // ConfD 6.6's does (ATOM_EXT) decode to the same term.
        assert_eq!(
            ha_sync_ack().encode(),
            hex("83 77 09 68 61 5F 73 79 6E 63 65 64")
        );
        assert_eq!(
            Term::decode(&hex("83 64 00 09 68 61 5F 73 79 6E 63 65 64")).unwrap(),
            ha_sync_ack()
        );
    }

    /// Odd event terms are delivered, not refused (spec §H.7).
    #[test]
    fn odd_event_data_is_delivered() {
        let ev = |ty: i32, data: Term| HaEvent::from_inner(&Term::Tuple(vec![Term::int(ty), data]));
        assert_eq!(
            ev(HA_INFO_NOPRIMARY, Term::atom("closed")),
            Some(HaEvent::NoPrimary { reason: 0 })
        );
        assert_eq!(
            ev(HA_INFO_SECONDARY_INITIALIZED, Term::atom("true")),
            Some(HaEvent::SecondaryInitialized { by_copy: true })
        );
        assert_eq!(
            ev(HA_INFO_SECONDARY_INITIALIZED, Term::atom("false")),
            Some(HaEvent::SecondaryInitialized { by_copy: false })
        );
        assert_eq!(
            ev(HA_INFO_SECONDARY_INITIALIZED, Term::int(7)),
            Some(HaEvent::SecondaryInitialized { by_copy: true })
        );
        assert_eq!(
            ev(HA_INFO_BESECONDARY_RESULT, Term::atom("ok")),
            Some(HaEvent::BeSecondaryResult { result: 0 })
        );
        assert_eq!(
            ev(
                HA_INFO_BESECONDARY_RESULT,
                Term::Tuple(vec![Term::atom("error"), Term::int(25)])
            ),
            Some(HaEvent::BeSecondaryResult { result: 25 })
        );
        assert_eq!(
            ev(HA_INFO_BESECONDARY_RESULT, Term::atom("what")),
            Some(HaEvent::BeSecondaryResult {
                result: crate::errcode::CONFD_ERR_INTERNAL
            })
        );
        let v4 = NodeAddr::V4("10.0.0.2".parse().unwrap());
        let string_id = Term::Tuple(vec![
            Term::List(b"n2".iter().map(|&b| Term::int(b)).collect()),
            v4.to_term(),
        ]);
        assert_eq!(
            ev(HA_INFO_SECONDARY_ARRIVED, string_id),
            Some(HaEvent::SecondaryArrived(HaNode {
                id: buf("n2"),
                addr: v4.clone()
            }))
        );
        let atom_id = Term::Tuple(vec![Term::atom("n3"), Term::atom("somewhere")]);
        assert_eq!(
            ev(HA_INFO_SECONDARY_DIED, atom_id),
            Some(HaEvent::SecondaryDied(HaNode {
                id: buf("n3"),
                addr: NodeAddr::Str("somewhere".into())
            }))
        );
        assert_eq!(
            ev(HA_INFO_SECONDARY_DIED, Term::int(5)),
            Some(HaEvent::SecondaryDied(HaNode {
                id: Value::NoExists,
                addr: NodeAddr::Str(String::new())
            }))
        );
        let long_addr = Term::Tuple(vec![
            Term::binary("n4"),
            Term::List(vec![Term::Float(1.5); 100]),
        ]);
        match ev(HA_INFO_SECONDARY_DIED, long_addr) {
            Some(HaEvent::SecondaryDied(HaNode {
                addr: NodeAddr::Str(s),
                ..
            })) => assert_eq!(s.len(), MAX_EVENT_ADDR_TEXT_BYTES),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ev(8, Term::int(0)),
            Some(HaEvent::Unknown {
                info_type: 8,
                data: Term::int(0)
            })
        );
        // Still refused: no {Type, Data} shape, or a type that is no int.
        assert_eq!(HaEvent::from_inner(&Term::atom("x")), None);
        assert_eq!(
            HaEvent::from_inner(&Term::Tuple(vec![Term::atom("a"), Term::int(0)])),
            None
        );
    }
}
