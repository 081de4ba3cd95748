//! The availability-group API: a node's state, and subscriptions that run a
//! callback on a library-owned thread (BlueCat Gateway's `get_node_state()` /
//! `subscribe(event, callback)`, over ConfD's event stream).
//!
//! Threading and ordering: each subscription has one thread, which runs every
//! callback of that subscription, one at a time, in the order the node
//! emitted the events. [`Subscription::unsubscribe`] (and dropping the
//! subscription) stops the thread and returns only when no callback of it is
//! running or will run; called from inside the callback it only marks the
//! subscription stopped (the thread ends after the callback returns).

use super::data::DataClient;
use super::events::{Event, EventClient};
use super::Endpoint;
use crate::error::{Error, Result};
use crate::proto::data::NodeState;
use crate::proto::ha::{
    HaEvent, NOTIF_HA_INFO, NOTIF_HEARTBEAT, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY,
    STATE_SECONDARY_RELAY,
};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    None,
    Primary,
    Secondary,
    Relay,
}

impl Role {
    pub fn from_state(state: i32) -> Role {
        match state {
            STATE_PRIMARY => Role::Primary,
            STATE_SECONDARY => Role::Secondary,
            STATE_SECONDARY_RELAY => Role::Relay,
            _ => Role::None,
        }
    }
    pub fn state(self) -> i32 {
        match self {
            Role::None => STATE_NONE,
            Role::Primary => STATE_PRIMARY,
            Role::Secondary => STATE_SECONDARY,
            Role::Relay => STATE_SECONDARY_RELAY,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Relay => "relay",
        }
    }
}

/// The state of the node at `ep`.
pub fn node_state(ep: &Endpoint) -> Result<NodeState> {
    DataClient::connect(ep)?.node_state()
}

/// Event classes a subscription can ask for (bits, may be or-ed).
pub const EVENT_ROLE_CHANGED: u32 = 1;
pub const EVENT_HA_INFO: u32 = 2;
pub const EVENT_HEARTBEAT: u32 = 4;

/// What a subscription's callback receives.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEvent {
    /// The node's role changed. Roles are as observed: two changes in quick
    /// succession may be reported as one.
    RoleChanged {
        previous: Role,
        new: Role,
    },
    /// An HA_INFO event, as the node sent it.
    Ha(HaEvent),
    Heartbeat,
    /// The subscription lost its node (the node stopped or closed the
    /// connection): the last event of the subscription, delivered whatever
    /// the mask. `errno` is a `confd_errno` value (CONFD_ERR_EOF when the
    /// node closed the connection). Not sent after an unsubscribe.
    Closed {
        errno: i32,
        reason: String,
    },
}

thread_local! {
    /// On a subscription's thread: the address of its stop flag, which tells
    /// `unsubscribe` that it runs inside that subscription's callback. (Not
    /// `thread::current()`: on a thread Rust did not start, a C program's,
    /// that allocates a handle which is never freed.)
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// How often the subscription thread re-reads the node state when no event
/// comes (becoming a relay has no HA_INFO event of its own).
const POLL: Duration = Duration::from_secs(1);

/// A running subscription.
pub struct Subscription {
    stop: Arc<AtomicBool>,
    wake: super::Stream,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("thread", &self.thread_id)
            .finish()
    }
}

/// Starts a subscription for the event classes in `mask`; `callback` runs on
/// the subscription's own thread. `heartbeat_ms` is the heartbeat interval
/// when `mask` has [`EVENT_HEARTBEAT`].
pub fn subscribe<F>(
    ep: &Endpoint,
    mask: u32,
    heartbeat_ms: i64,
    mut callback: F,
) -> Result<Subscription>
where
    F: FnMut(&GroupEvent) + Send + 'static,
{
    if mask & (EVENT_ROLE_CHANGED | EVENT_HA_INFO | EVENT_HEARTBEAT) == 0 || mask > 7 {
        return Err(Error::usage(format!(
            "event mask {mask:#x} selects no known event"
        )));
    }
    let mut notif_mask = NOTIF_HA_INFO;
    if mask & EVENT_HEARTBEAT != 0 {
        notif_mask |= NOTIF_HEARTBEAT;
    }
    // Subscribe first, then read the role: no change can fall between.
    let mut events = EventClient::connect(ep, notif_mask, heartbeat_ms)?;
    let mut data = DataClient::connect(ep)?;
    let mut role = Role::from_state(data.node_state()?.state);
    let wake = events
        .stream
        .try_clone()
        .map_err(|e| Error::os("cloning the event socket", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = thread::Builder::new()
        .name("confd-ha-subscription".into())
        .spawn(move || {
            RUNNING.with(|r| r.set(Arc::as_ptr(&stop2) as usize));
            let mut emit = |ev: GroupEvent, stop: &AtomicBool| {
                if !stop.load(Ordering::SeqCst) {
                    callback(&ev);
                }
            };
            let lost = loop {
                if stop2.load(Ordering::SeqCst) {
                    break None;
                }
                // Wait for a whole frame to start arriving rather than using a
                // read timeout, which could cut a frame in two.
                let ev = match events.stream.wait_readable(POLL) {
                    Ok(false) => None,
                    Ok(true) => match events.read() {
                        Ok(ev) => Some(ev),
                        Err(e) => break Some(e),
                    },
                    Err(e) => break Some(Error::os("waiting for events", e)),
                };
                match &ev {
                    Some(Event::Heartbeat) if mask & EVENT_HEARTBEAT != 0 => {
                        emit(GroupEvent::Heartbeat, &stop2)
                    }
                    Some(Event::Ha(h)) if mask & EVENT_HA_INFO != 0 => {
                        emit(GroupEvent::Ha(h.clone()), &stop2)
                    }
                    _ => {}
                }
                if mask & EVENT_ROLE_CHANGED != 0 && !matches!(ev, Some(Event::Heartbeat)) {
                    let new = match data.node_state() {
                        Ok(st) => Role::from_state(st.state),
                        Err(e) => break Some(e),
                    };
                    if new != role {
                        let previous = std::mem::replace(&mut role, new);
                        emit(GroupEvent::RoleChanged { previous, new }, &stop2);
                    }
                }
            };
            if let Some(e) = lost {
                let closed = GroupEvent::Closed {
                    errno: e.errno(),
                    reason: e.to_string(),
                };
                emit(closed, &stop2);
            }
        })
        .map_err(|e| Error::os("starting the subscription thread", e))?;
    let thread_id = thread.thread().id();
    Ok(Subscription {
        stop,
        wake,
        thread: Some(thread),
        thread_id,
    })
}

impl Subscription {
    /// Stops the subscription; see the module documentation for the
    /// guarantee.
    pub fn unsubscribe(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.shutdown();
        if let Some(t) = self.thread.take() {
            let own = RUNNING.with(|r| r.get()) == Arc::as_ptr(&self.stop) as usize;
            if !own {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
