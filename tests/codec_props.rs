//! Property tests and a bounded fuzz of the term codec, the message decoders
//! and the frame reader.
//!
//! * Round trips: `decode(encode(t)) == t` for arbitrary terms (floats by
//!   bits, NaN included), and value/HA/data messages through bytes.
//! * Hostile input: arbitrary bytes and corrupted valid encodings (bit flips,
//!   overwrites, truncation, insertion, length fields set to huge values)
//!   through `Term::decode` and every message decoder, and byte streams
//!   through `read_frame`: no panic, and the peak heap use of the call, which
//!   a counting allocator measures per thread, stays within a fixed bound
//!   linear in the input.
//!
//! Case counts are set explicitly below (see `config`): 1,000 to 20,000 per
//! property in a debug build, five times that in release.

mod support;

use confd_ha::proto::data::{self, DataRequest, NodeState, Op};
use confd_ha::proto::frame::{read_frame, FrameError, DEFAULT_MAX_FRAME};
use confd_ha::proto::ha::{HaEvent, HaNode, HaReply, HaRequest, NodeAddr, Subscription};
use confd_ha::proto::term::{DecodeError, Term, MAX_DEPTH, MAX_INFLATED};
use confd_ha::value::Value;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use support::same;

// ---------------------------------------------------------------------------
// Heap accounting per thread.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread-locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        track(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            // Counted as if both blocks were live at once, the worst case.
            track(new as isize);
            track(-(l.size() as isize));
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most heap it held at once
/// (beyond what was live when it started), on this thread.
fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - base).max(0) as usize)
}

/// The most heap decoding `n` input bytes may take: every decoded term
/// costs at least one input byte, a `Term` is a few dozen bytes, vectors
/// double, and error messages print the term (a few characters per byte).
fn heap_bound(input: &[u8]) -> usize {
    let n = if input.get(1) == Some(&80) {
        // A compressed term inflates to at most MAX_INFLATED bytes, and no
        // more than zlib's ~1032:1 from what follows the header.
        (input.len().saturating_mul(1100)).min(MAX_INFLATED)
    } else {
        input.len()
    };
    256 * 1024 + 320 * n
}

// ---------------------------------------------------------------------------
// Everything a peer's bytes can reach.

/// Decodes `bytes` as a frame payload and runs every message decoder on the
/// result; returns whether the term decoded.
fn decode_everything(bytes: &[u8]) -> bool {
    let Ok(t) = Term::decode(bytes) else {
        return false;
    };
    let _ = HaRequest::from_term(&t);
    let _ = HaReply::from_term(&t);
    let _ = DataRequest::from_term(&t);
    let _ = Value::from_term(&t);
    let _ = HaNode::from_term(&t);
    let _ = NodeAddr::from_term(&t);
    let _ = HaEvent::from_inner(&t);
    if let Some([_, inner]) = t.as_tuple() {
        let _ = HaEvent::from_inner(inner);
    }
    let _ = Subscription::from_term(&t);
    let _ = confd_ha::proto::ha::event_node(&t);
    let _ = Op::from_term(&t);
    let _ = data::parse_reply(&t);
    let _ = data::stats_from_term(&t);
    let _ = NodeState::from_term(&t);
    let _ = confd_ha::proto::ha::parse_error(&t);
    let _ = t.as_bytes_lossy();
    let _ = format!("{t:?}");
    true
}

fn check_hostile(bytes: &[u8]) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let (_, peak) = peak_heap(|| decode_everything(bytes));
    let bound = heap_bound(bytes);
    prop_assert!(
        peak <= bound,
        "decoding {} bytes held {peak} bytes of heap (bound {bound}): {:?}",
        bytes.len(),
        &bytes[..bytes.len().min(64)]
    );
    // Generous: a few hundred bytes decode in microseconds.
    prop_assert!(start.elapsed() < Duration::from_secs(2));
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies.

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(5.0e-324),
        (any::<u64>()).prop_map(f64::from_bits),
    ]
}

fn arb_int() -> impl Strategy<Value = i128> {
    prop_oneof![
        any::<i128>(),
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
        any::<i32>().prop_map(i128::from),
        0i128..=300,
        prop::sample::select(vec![
            i128::MIN,
            i128::MAX,
            i128::MIN + 1,
            0,
            -1,
            255,
            256,
            i32::MIN as i128 - 1,
            i32::MAX as i128 + 1,
            u64::MAX as i128 + 1,
        ]),
    ]
}

/// Characters atoms are drawn from: plain, needing quotes or escapes,
/// Latin-1, multi-byte.
const ATOM_CHARS: &[char] = &[
    'a', 'b', 'k', 'o', 'z', 'A', 'Z', '0', '9', '_', '@', ' ', '\'', '\\', '\n', '.', 'é', 'ÿ',
    'π', '€', '日', '😀',
];

fn chars(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ATOM_CHARS), len)
        .prop_map(|v| v.into_iter().collect())
}

fn arb_atom() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => chars(0..12),
        // Up to Erlang's 255 characters, so up to 1020 UTF-8 bytes
        // (ATOM_UTF8_EXT beyond 255 bytes).
        1 => chars(200..256),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        arb_int().prop_map(Term::Int),
        arb_float().prop_map(Term::Float),
        arb_atom().prop_map(Term::Atom),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Term::Binary),
        Just(Term::List(vec![])),
    ]
}

/// Terms in canonical form: an improper list has elements and a tail that
/// is not a list (Erlang reads `[a | [b]]` as `[a, b]`, and so do we).
fn arb_term() -> impl Strategy<Value = Term> {
    let nested = arb_leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::List),
            (prop::collection::vec(inner.clone(), 1..4), inner).prop_map(|(v, tail)| {
                match tail {
                    Term::List(_) | Term::ImproperList(..) => {
                        Term::ImproperList(v, Box::new(Term::atom("t")))
                    }
                    tail => Term::ImproperList(v, Box::new(tail)),
                }
            }),
        ]
    });
    prop_oneof![
        12 => nested.clone(),
        // LARGE_TUPLE_EXT, somewhere inside.
        1 => (prop::collection::vec(arb_leaf(), 256..270), nested)
            .prop_map(|(big, t)| Term::List(vec![t, Term::Tuple(big)])),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::NoExists),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Value::Buf),
        any::<i8>().prop_map(Value::Int8),
        any::<i16>().prop_map(Value::Int16),
        any::<i32>().prop_map(Value::Int32),
        any::<i64>().prop_map(Value::Int64),
        any::<u8>().prop_map(Value::UInt8),
        any::<u16>().prop_map(Value::UInt16),
        any::<u32>().prop_map(Value::UInt32),
        any::<u64>().prop_map(Value::UInt64),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        any::<[u8; 4]>().prop_map(|o| Value::Ipv4(o.into())),
        any::<[u16; 8]>().prop_map(|s| Value::Ipv6(s.into())),
        any::<i32>().prop_map(Value::Enum),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Value::Binary),
    ]
}

fn arb_addr() -> impl Strategy<Value = NodeAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| NodeAddr::V4(o.into())),
        any::<[u16; 8]>().prop_map(|s| NodeAddr::V6(s.into())),
        chars(0..30).prop_map(NodeAddr::Str),
    ]
}

fn arb_node() -> impl Strategy<Value = HaNode> {
    (arb_value(), arb_addr()).prop_map(|(id, addr)| HaNode { id, addr })
}

fn arb_request() -> impl Strategy<Value = HaRequest> {
    prop_oneof![
        arb_value().prop_map(|me| HaRequest::BePrimary { me }),
        (arb_value(), arb_node(), any::<bool>()).prop_map(|(me, primary, wait_reply)| {
            HaRequest::BeSecondary {
                me,
                primary,
                wait_reply,
            }
        }),
        Just(HaRequest::BeNone),
        Just(HaRequest::GetStatus),
        arb_value().prop_map(|node| HaRequest::SecondaryDead { node }),
        Just(HaRequest::BeRelay),
    ]
}

fn arb_reply() -> impl Strategy<Value = HaReply> {
    prop_oneof![
        Just(HaReply::Ok),
        (any::<i32>(), chars(0..40)).prop_map(|(code, reason)| HaReply::Error { code, reason }),
        (1i32..=4, prop::collection::vec(arb_node(), 0..5))
            .prop_map(|(state, nodes)| HaReply::Status { state, nodes }),
    ]
}

fn arb_data_request() -> impl Strategy<Value = DataRequest> {
    let path = "(/[a-z0-9{}]{1,8}){1,4}";
    let op = prop_oneof![
        (path, arb_value()).prop_map(|(p, v)| Op::Set(p, v)),
        path.prop_map(Op::Delete),
    ];
    prop_oneof![
        path.prop_map(DataRequest::Get),
        path.prop_map(DataRequest::Exists),
        path.prop_map(DataRequest::List),
        prop::collection::vec(op, 0..6).prop_map(DataRequest::Commit),
        Just(DataRequest::TxId),
        Just(DataRequest::Stats),
        Just(DataRequest::NodeState),
    ]
}

fn arb_peer() -> impl Strategy<Value = data::PeerState> {
    (arb_node(), prop::option::of(any::<i64>()))
        .prop_map(|(node, last_tick_ms)| data::PeerState { node, last_tick_ms })
}

fn arb_node_state() -> impl Strategy<Value = NodeState> {
    (
        1i32..=4,
        prop::option::of(arb_value()),
        prop::option::of(arb_peer()),
        prop::collection::vec(arb_peer(), 0..4),
        any::<i64>(),
        chars(0..20),
    )
        .prop_map(
            |(state, node_id, primary, secondaries, seq, txid)| NodeState {
                state,
                node_id,
                primary,
                secondaries,
                seq,
                txid,
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
    /// Overwrite four bytes (a length field, often) with a huge value.
    Huge(usize, u32),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>().prop_map(|i| i.index(usize::MAX));
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        at.clone().prop_map(Mutation::Truncate),
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        at.clone().prop_map(Mutation::Remove),
        (
            at,
            prop::sample::select(vec![
                u32::MAX,
                0x7fff_ffff,
                0x8000_0000,
                0x00ff_ffff,
                65535,
                256
            ])
        )
            .prop_map(|(a, v)| Mutation::Huge(a, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |a: usize| a % bytes.len();
    match *m {
        Mutation::Flip(a, bit) => {
            let i = at(a);
            bytes[i] ^= 1 << bit
        }
        Mutation::Set(a, v) => {
            let i = at(a);
            bytes[i] = v
        }
        Mutation::Truncate(a) => {
            let i = at(a);
            bytes.truncate(i)
        }
        Mutation::Insert(a, v) => {
            let i = at(a);
            bytes.insert(i, v)
        }
        Mutation::Remove(a) => {
            let i = at(a);
            bytes.remove(i);
        }
        Mutation::Huge(a, v) => {
            let i = at(a);
            for (k, x) in v.to_be_bytes().iter().enumerate() {
                if let Some(d) = bytes.get_mut(i + k) {
                    *d = *x;
                }
            }
        }
    }
}

/// A valid encoding of some message or term, to corrupt.
fn arb_valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_term().prop_map(|t| t.encode()),
        arb_request().prop_map(|r| r.to_term().encode()),
        arb_reply().prop_map(|r| r.to_term().encode()),
        arb_data_request().prop_map(|r| r.to_term().encode()),
        arb_value().prop_map(|v| v.to_term().encode()),
        arb_node_state().prop_map(|st| data::ok_term(st.to_term()).encode()),
        arb_term().prop_map(|t| compress(&t)),
    ]
}

/// `t` as a compressed term (tag 80), as `term_to_binary(T, [compressed])`.
fn compress(t: &Term) -> Vec<u8> {
    let raw = t.encode();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw[1..]).unwrap();
    let mut b = vec![131, 80];
    b.extend_from_slice(&((raw.len() - 1) as u32).to_be_bytes());
    b.extend_from_slice(&z.finish().unwrap());
    b
}

/// `cases` in a debug build (about 12 s in all on a 2-core machine); five
/// times as many in a release build (`make check`, about 6 s); times
/// `CODEC_PROPS_SCALE` if set, for longer runs by hand.
fn config(cases: u32) -> Config {
    let build = if cfg!(debug_assertions) { 1 } else { 5 };
    let scale = std::env::var("CODEC_PROPS_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    Config {
        cases: cases.saturating_mul(build).saturating_mul(scale),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Round trips.

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn terms_round_trip(t in arb_term()) {
        let bytes = t.encode();
        let back = Term::decode(&bytes);
        prop_assert!(matches!(&back, Ok(b) if same(b, &t)), "{t:?} came back as {back:?}");
        // And through compression, as Erlang's `compressed` option writes it.
        let back = Term::decode(&compress(&t));
        prop_assert!(matches!(&back, Ok(b) if same(b, &t)), "compressed {t:?} came back as {back:?}");
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn values_round_trip(v in arb_value()) {
        let t = Term::decode(&v.to_term().encode()).unwrap();
        prop_assert_eq!(Value::from_term(&t), Ok(v));
    }

    #[test]
    fn ha_requests_round_trip(r in arb_request()) {
        let t = Term::decode(&r.to_term().encode()).unwrap();
        prop_assert_eq!(HaRequest::from_term(&t), Ok(r));
    }

    #[test]
    fn ha_replies_round_trip(r in arb_reply()) {
        let t = Term::decode(&r.to_term().encode()).unwrap();
        prop_assert_eq!(HaReply::from_term(&t), Some(r));
    }

    #[test]
    fn node_states_round_trip(st in arb_node_state()) {
        let t = Term::decode(&data::ok_term(st.to_term()).encode()).unwrap();
        let inner = data::parse_reply(&t).unwrap().unwrap();
        prop_assert_eq!(NodeState::from_term(&inner), Some(st));
    }

    /// Every `{Type, Data}` with an int Type is delivered whatever Data is,
    /// with its type number as is (spec §H.7).
    #[test]
    fn ha_events_are_delivered_whatever_their_data(ty in any::<i32>(), data in arb_term()) {
        let inner = Term::Tuple(vec![Term::int(ty), data]);
        let ev = HaEvent::from_inner(&inner);
        prop_assert!(ev.is_some(), "{inner:?} not delivered");
        let ev = ev.unwrap();
        prop_assert_eq!(ev.info_type(), ty);
        // What we write of it decodes to the same event type again.
        let again = ev.to_term();
        let back = HaEvent::from_inner(&again.as_tuple().unwrap()[1]).unwrap();
        prop_assert_eq!(back.info_type(), ty);
    }

    /// Any atom reply is success; `{error, Code}` an error with no reason.
    #[test]
    fn atoms_are_success_and_2_tuples_errors(a in arb_atom(), code in any::<i32>()) {
        prop_assert_eq!(HaReply::from_term(&Term::Atom(a)), Some(HaReply::Ok));
        let two = Term::Tuple(vec![Term::atom("error"), Term::int(code)]);
        prop_assert_eq!(
            HaReply::from_term(&two),
            Some(HaReply::Error { code, reason: String::new() })
        );
    }

    /// The subscription has 4 elements before protocol 70, 5 from it, and
    /// both parse back.
    #[test]
    fn subscriptions_by_version_round_trip(
        mask in 0i128..(1i128 << 40),
        hb in 0i64..1_000_000,
        verbosity in 0i64..4,
        proto in any::<u16>(),
    ) {
        let s = Subscription { mask, heartbeat_ms: hb, health_check_ms: 0, verbosity };
        let t = Term::decode(&s.to_term_for(proto).encode()).unwrap();
        let n = t.as_tuple().unwrap().len();
        prop_assert_eq!(n, if proto < 70 { 4 } else { 5 });
        let back = Subscription::from_term(&t).unwrap();
        prop_assert_eq!(back.verbosity, if proto < 70 { 0 } else { verbosity });
        prop_assert_eq!((back.mask, back.heartbeat_ms), (mask, hb));
    }

    #[test]
    fn data_requests_round_trip(r in arb_data_request()) {
        let t = Term::decode(&r.to_term().encode()).unwrap();
        prop_assert_eq!(DataRequest::from_term(&t), Ok(r));
    }
}

// ---------------------------------------------------------------------------
// Hostile input.

proptest! {
    #![proptest_config(config(20_000))]

    #[test]
    fn arbitrary_bytes_never_panic_or_balloon(
        body in prop::collection::vec(any::<u8>(), 0..200),
        versioned in any::<bool>(),
    ) {
        let mut bytes = body;
        if versioned {
            bytes.insert(0, 131);
        }
        check_hostile(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(2_500))]

    #[test]
    fn corrupted_encodings_never_panic_or_balloon(
        valid in arb_valid_encoding(),
        ms in prop::collection::vec(arb_mutation(), 1..4),
    ) {
        let mut bytes = valid;
        for m in &ms {
            apply(&mut bytes, m);
        }
        check_hostile(&bytes)?;
    }
}

/// A reader that hands out a few bytes at a time and is sometimes
/// interrupted, as a socket may be.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls == 5 {
            self.calls = 0;
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(config(5_000))]

    #[test]
    fn frame_reader_never_panics_or_balloons(
        stream in prop::collection::vec(any::<u8>(), 0..300),
        step in 1usize..9,
        max in prop::sample::select(vec![0usize, 16, 1024, DEFAULT_MAX_FRAME, u32::MAX as usize, usize::MAX]),
    ) {
        let mut r = Trickle { data: &stream, step, calls: 0 };
        let (frames, peak) = peak_heap(|| {
            let mut frames = 0;
            while read_frame(&mut r, max).is_ok() {
                frames += 1;
            }
            frames
        });
        prop_assert!(frames <= stream.len() / 4);
        // The reader reserves at most 64 KiB ahead of the data.
        prop_assert!(peak <= 64 * 1024 + 2 * stream.len() + 1024, "peak {peak}");
    }
}

// ---------------------------------------------------------------------------
// Fixed hostile cases.

#[test]
fn frame_header_claiming_4_gib_fails_fast_and_small() {
    for max in [DEFAULT_MAX_FRAME, u32::MAX as usize, usize::MAX] {
        let mut input = vec![0xff, 0xff, 0xff, 0xff];
        input.extend_from_slice(&[131, 106, 1, 2, 3]);
        let start = Instant::now();
        let (res, peak) = peak_heap(|| read_frame(&mut &input[..], max));
        let elapsed = start.elapsed();
        match (max, res) {
            (DEFAULT_MAX_FRAME, Err(FrameError::TooLarge { len, .. })) => {
                assert_eq!(len, u32::MAX as usize)
            }
            (_, Err(FrameError::Io(e))) if max != DEFAULT_MAX_FRAME => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof)
            }
            (_, other) => panic!("max {max}: {other:?}"),
        }
        assert!(peak <= 65 * 1024, "max {max}: held {peak} bytes");
        assert!(
            elapsed < Duration::from_secs(1),
            "max {max}: took {elapsed:?}"
        );
    }
}

#[test]
fn huge_counts_in_terms_fail_fast_and_small() {
    let cases: Vec<Vec<u8>> = vec![
        vec![131, 109, 255, 255, 255, 255, 1, 2, 3],
        vec![131, 108, 255, 255, 255, 255, 106],
        vec![131, 105, 255, 255, 255, 255, 106],
        vec![131, 111, 255, 255, 255, 255, 0, 1],
        vec![131, 118, 255, 255, 1],
        vec![131, 107, 255, 255, 1],
        vec![131, 80, 255, 255, 255, 255, 120, 156],
        vec![131, 80, 0, 255, 255, 255, 120, 156, 3, 0, 0, 0, 0, 1],
    ];
    for c in cases {
        let (res, peak) = peak_heap(|| Term::decode(&c));
        assert!(res.is_err(), "{c:?} decoded to {res:?}");
        assert!(peak <= 2 << 20, "{c:?} held {peak} bytes");
    }
    // Every nesting level claiming all that is left: the element counts
    // must not reserve memory the input does not hold.
    let body = 1 << 20;
    let mut b = vec![131];
    for _ in 0..MAX_DEPTH {
        b.push(108);
        b.extend_from_slice(&(body as u32).to_be_bytes());
    }
    b.resize(b.len() + body, 97);
    let (res, peak) = peak_heap(|| Term::decode(&b));
    assert!(
        matches!(
            res,
            Err(DecodeError::Truncated(_) | DecodeError::TooCostly(_))
        ),
        "{res:?}"
    );
    assert!(
        peak <= heap_bound(&b),
        "held {peak} bytes for {} input bytes",
        b.len()
    );
}

// A compressed frame may not carry more than a plain one.
const _: () = assert!(MAX_INFLATED <= DEFAULT_MAX_FRAME);

/// A zlib stream of `n` bytes of NIL_EXT after a list header of `n`
/// elements: 64 MiB of it compresses to about 64 KiB.
fn nil_list_stream(n: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&[108]).unwrap();
    z.write_all(&(n as u32).to_be_bytes()).unwrap();
    let chunk = vec![106u8; 1 << 20];
    let mut left = n + 1;
    while left > 0 {
        let k = left.min(chunk.len());
        z.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    z.finish().unwrap()
}

fn compressed_frame(size_field: usize, stream: &[u8]) -> Vec<u8> {
    let mut b = vec![131, 80];
    b.extend_from_slice(&(size_field as u32).to_be_bytes());
    b.extend_from_slice(stream);
    b
}

#[test]
fn compression_cannot_multiply_past_the_inflate_limit() {
    let n = 64 << 20;
    let stream = nil_list_stream(n);
    assert!(stream.len() < 100 << 10, "{}", stream.len());
    // Honest header beyond the limit: refused before inflating anything.
    let b = compressed_frame(n + 6, &stream);
    let (res, peak) = peak_heap(|| Term::decode(&b));
    assert!(matches!(res, Err(DecodeError::Compressed(_))), "{res:?}");
    assert!(peak <= 64 << 10, "held {peak} bytes");
    // A header that lies low: inflation stops one byte past what it said.
    let b = compressed_frame(1000, &stream);
    let (res, peak) = peak_heap(|| Term::decode(&b));
    assert!(matches!(res, Err(DecodeError::Compressed(_))), "{res:?}");
    assert!(peak <= 1 << 20, "held {peak} bytes");
    // Within the inflate limit but past the decode budget of its
    // compressed size (16 x the input + 64 KiB): refused, holding little.
    let t = Term::List(vec![Term::List(vec![]); 100_000]);
    let c = compress(&t);
    let (res, peak) = peak_heap(|| Term::decode(&c));
    assert!(matches!(res, Err(DecodeError::TooCostly(_))), "{res:?}");
    assert!(peak <= 256 * 1024, "held {peak} bytes");
    // A compressed term within the budget decodes.
    let t = Term::List(vec![Term::List(vec![]); 1000]);
    let c = compress(&t);
    assert_eq!(Term::decode(&c), Ok(t));
}

#[test]
fn the_heap_accounting_sees_allocations() {
    let (v, peak) = peak_heap(|| vec![1u8; 1 << 20]);
    assert!(peak >= 1 << 20, "{peak}");
    drop(v);
    let (_, peak) = peak_heap(|| ());
    assert_eq!(peak, 0);
}

#[test]
fn a_term_is_small() {
    // The heap bounds above assume this.
    assert!(
        std::mem::size_of::<Term>() <= 48,
        "{}",
        std::mem::size_of::<Term>()
    );
}
