//! The HA control client (client id 17).

use super::{call, send, Endpoint, Stream};
use crate::error::{Error, Result};
use crate::proto::frame;
use crate::proto::ha::{HaNode, HaReply, HaRequest};
use crate::proto::hello::CLIENT_HA;
use crate::value::Value;
use std::io::{Read, Write};

/// After the hello: sends the token frame (raw bytes, no NUL). No reply.
pub fn send_token<S: Write + ?Sized>(s: &mut S, token: &[u8]) -> Result<()> {
    if token.is_empty() {
        return Err(Error::usage("token is empty"));
    }
    frame::write_frame(s, token).map_err(|e| Error::from_io("sending the token", e))
}

fn expect_ok<S: Read + Write + ?Sized>(s: &mut S, req: &HaRequest) -> Result<()> {
    let reply = call(s, &req.to_term())?;
    match HaReply::from_term(&reply) {
        Some(HaReply::Ok) => Ok(()),
        Some(HaReply::Error { code, reason }) => Err(Error::Remote { code, reason }),
        _ => Err(Error::Protocol(format!(
            "unexpected reply {reply:?} to {req:?}"
        ))),
    }
}

pub fn beprimary<S: Read + Write + ?Sized>(s: &mut S, me: &Value) -> Result<()> {
    expect_ok(s, &HaRequest::BePrimary { me: me.clone() })
}

/// With `wait_reply` false the order is only written; the result comes as an
/// HA_INFO_BESECONDARY_RESULT event.
pub fn besecondary<S: Read + Write + ?Sized>(
    s: &mut S,
    me: &Value,
    primary: &HaNode,
    wait_reply: bool,
) -> Result<()> {
    let req = HaRequest::BeSecondary {
        me: me.clone(),
        primary: primary.clone(),
        wait_reply,
    };
    if wait_reply {
        expect_ok(s, &req)
    } else {
        send(s, &req.to_term())
    }
}

pub fn benone<S: Read + Write + ?Sized>(s: &mut S) -> Result<()> {
    expect_ok(s, &HaRequest::BeNone)
}

pub fn berelay<S: Read + Write + ?Sized>(s: &mut S) -> Result<()> {
    expect_ok(s, &HaRequest::BeRelay)
}

pub fn secondary_dead<S: Read + Write + ?Sized>(s: &mut S, node: &Value) -> Result<()> {
    expect_ok(s, &HaRequest::SecondaryDead { node: node.clone() })
}

/// The node's state (`CONFD_HA_STATE_*`) and its node list.
pub fn get_status<S: Read + Write + ?Sized>(s: &mut S) -> Result<(i32, Vec<HaNode>)> {
    let reply = call(s, &HaRequest::GetStatus.to_term())?;
    match HaReply::from_term(&reply) {
        Some(HaReply::Status { state, nodes }) if (1..=4).contains(&state) => Ok((state, nodes)),
        Some(HaReply::Error { code, reason }) => Err(Error::Remote { code, reason }),
        _ => Err(Error::Protocol(format!(
            "unexpected reply {reply:?} to get_status"
        ))),
    }
}

/// An owned HA control connection.
#[derive(Debug)]
pub struct HaClient {
    pub stream: Stream,
}

impl HaClient {
    pub fn connect(ep: &Endpoint, token: &str) -> Result<HaClient> {
        let mut stream = ep.connect(CLIENT_HA)?;
        send_token(&mut stream, token.as_bytes())?;
        Ok(HaClient { stream })
    }
    pub fn beprimary(&mut self, me: &str) -> Result<()> {
        beprimary(&mut self.stream, &Value::Buf(me.into()))
    }
    pub fn besecondary(&mut self, me: &str, primary: &HaNode, wait_reply: bool) -> Result<()> {
        besecondary(
            &mut self.stream,
            &Value::Buf(me.into()),
            primary,
            wait_reply,
        )
    }
    pub fn benone(&mut self) -> Result<()> {
        benone(&mut self.stream)
    }
    pub fn berelay(&mut self) -> Result<()> {
        berelay(&mut self.stream)
    }
    pub fn secondary_dead(&mut self, node: &str) -> Result<()> {
        secondary_dead(&mut self.stream, &Value::Buf(node.into()))
    }
    pub fn get_status(&mut self) -> Result<(i32, Vec<HaNode>)> {
        get_status(&mut self.stream)
    }
}
