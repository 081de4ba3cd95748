//! The Erlang external term format, the subset the ConfD IPC protocol uses.
//!
//! Decoding is written for hostile input: every length is checked against the
//! bytes that remain before anything is allocated, nesting is bounded, and no
//! input makes it panic. Encoding always produces the canonical forms current
//! Erlang/OTP emits (SMALL_ATOM_UTF8_EXT, SMALL_INTEGER_EXT/INTEGER_EXT/
//! SMALL_BIG_EXT, NEW_FLOAT_EXT, BINARY_EXT, SMALL/LARGE_TUPLE_EXT, LIST_EXT).

use std::fmt;

/// The version byte that starts every encoded term.
pub const VERSION: u8 = 131;

const COMPRESSED: u8 = 80;
const NEW_FLOAT_EXT: u8 = 70;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const FLOAT_EXT: u8 = 99;
const ATOM_EXT: u8 = 100;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const NIL_EXT: u8 = 106;
const STRING_EXT: u8 = 107;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const LARGE_BIG_EXT: u8 = 111;
const SMALL_ATOM_EXT: u8 = 115;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// Deepest nesting of tuples and lists the decoder accepts.
pub const MAX_DEPTH: usize = 64;
/// Largest uncompressed size accepted for a compressed term (tag 80): no
/// more than a plain frame may carry (`frame::DEFAULT_MAX_FRAME`), so that
/// compression (up to ~1000:1) cannot multiply what a small frame costs.
pub const MAX_INFLATED: usize = 16 * 1024 * 1024;
/// Memory a decoded term may take per byte of its encoding (see
/// [`DecodeLimits`]): 16, half the size of one [`Term`], so that every shape
/// the protocols really send fits (a small integer, 2 bytes, takes one
/// 32-byte `Term`), while a frame of empty lists or one-byte string
/// characters (1 byte each, 32 bytes decoded) is refused.
pub const BUDGET_PER_INPUT_BYTE: usize = 16;
/// Memory every decode may take whatever its input's size (small terms of
/// empty lists, `{ok, []}` and the like, are always accepted).
pub const BUDGET_FLOOR_BYTES: usize = 64 * 1024;
/// Size of one decoded term value, before any heap data it owns.
const TERM_BYTES: usize = std::mem::size_of::<Term>();

/// What one decode may cost.
///
/// The decoder counts the memory the decoded value will occupy: one
/// `size_of::<Term>()` (32 bytes) for every element of every tuple and list
/// (reserved exactly, never doubled), the bytes of every binary and atom,
/// and the buffer a compressed term inflates into. Decoding stops with
/// [`DecodeError::TooCostly`] as soon as the count would pass `budget`, so
/// no input costs more than `budget` bytes (plus allocator overhead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Accept compressed terms (tag 80). Off on every port before the peer
    /// is authenticated.
    pub compressed: bool,
    /// Most bytes of memory the decoded term may take.
    pub budget: usize,
}

impl DecodeLimits {
    /// The budget for an input of `len` bytes:
    /// `BUDGET_FLOOR_BYTES + BUDGET_PER_INPUT_BYTE * len`.
    pub fn for_input(len: usize, compressed: bool) -> DecodeLimits {
        DecodeLimits {
            compressed,
            budget: BUDGET_FLOOR_BYTES.saturating_add(len.saturating_mul(BUDGET_PER_INPUT_BYTE)),
        }
    }
}

/// An Erlang term. Integers are held as `i128`, which covers every integer
/// the protocol carries (int64 and uint64 values included).
#[derive(Clone, PartialEq)]
pub enum Term {
    Int(i128),
    Float(f64),
    Atom(String),
    Binary(Vec<u8>),
    Tuple(Vec<Term>),
    /// A proper list (`[]` is `List(vec![])`).
    List(Vec<Term>),
    /// A list whose tail is not `[]`.
    ImproperList(Vec<Term>, Box<Term>),
}

/// Most characters the text form of one term (`{:?}`) takes; longer ones are
/// cut and end in `...`. Every log line and error reply that shows a term a
/// peer sent goes through this, so a 16 MiB term costs a few hundred bytes
/// of text, and formatting stops as soon as the limit is reached.
pub const MAX_TERM_TEXT: usize = 512;

/// A `fmt::Write` that keeps at most `left` bytes and then fails, which
/// stops the formatting that feeds it.
struct Cut<'a> {
    out: &'a mut String,
    left: usize,
    cut: bool,
}

impl fmt::Write for Cut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.left {
            self.out.push_str(s);
            self.left -= s.len();
            return Ok(());
        }
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.left = 0;
        self.cut = true;
        Err(fmt::Error)
    }
}

fn fmt_term(t: &Term, f: &mut Cut<'_>) -> fmt::Result {
    use fmt::Write;
    let seq = |f: &mut Cut<'_>, l: &[Term]| -> fmt::Result {
        for (i, e) in l.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            fmt_term(e, f)?;
        }
        Ok(())
    };
    match t {
        Term::Int(i) => write!(f, "{i}"),
        Term::Float(x) => write!(f, "{x:?}"),
        Term::Atom(a) => write!(f, "'{}'", a.escape_debug()),
        Term::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "<<\"{s}\">>"),
            _ => write!(f, "<<{b:?}>>"),
        },
        Term::Tuple(t) => {
            f.write_str("{")?;
            seq(f, t)?;
            f.write_str("}")
        }
        Term::List(l) => {
            f.write_str("[")?;
            seq(f, l)?;
            f.write_str("]")
        }
        Term::ImproperList(l, t) => {
            f.write_str("[")?;
            seq(f, l)?;
            f.write_str("|")?;
            fmt_term(t, f)?;
            f.write_str("]")
        }
    }
}

/// Erlang-like text of a term, at most [`MAX_TERM_TEXT`] bytes (then `...`).
impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut w = Cut {
            out: &mut out,
            left: MAX_TERM_TEXT,
            cut: false,
        };
        let _ = fmt_term(self, &mut w);
        let cut = w.cut;
        f.write_str(&out)?;
        if cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Why a byte string is not a term we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("term is empty")]
    Empty,
    #[error("term starts with byte {0}, not the version byte 131")]
    BadVersion(u8),
    #[error("term is truncated at byte {0}")]
    Truncated(usize),
    #[error("unsupported term tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("term nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("integer with {0} digit bytes is too large")]
    BigTooLarge(usize),
    #[error("atom is not valid text")]
    BadAtom,
    #[error("float text at byte {0} is not a finite number")]
    BadFloat(usize),
    #[error("compressed term: {0}")]
    Compressed(String),
    #[error("{0} bytes left over after the term")]
    Trailing(usize),
    #[error("compressed terms are not accepted here")]
    CompressedRefused,
    #[error("term would take more than {0} bytes of memory decoded")]
    TooCostly(usize),
}

impl Term {
    pub fn atom(s: &str) -> Term {
        Term::Atom(s.to_owned())
    }
    pub fn binary(b: impl AsRef<[u8]>) -> Term {
        Term::Binary(b.as_ref().to_vec())
    }
    pub fn tuple(v: Vec<Term>) -> Term {
        Term::Tuple(v)
    }
    pub fn int(i: impl Into<i128>) -> Term {
        Term::Int(i.into())
    }
    pub fn ok() -> Term {
        Term::atom("ok")
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|i| i64::try_from(i).ok())
    }
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(l) => Some(l),
            _ => None,
        }
    }
    /// The bytes of a binary, or of a list of small integers (an Erlang string).
    pub fn as_bytes_lossy(&self) -> Option<Vec<u8>> {
        match self {
            Term::Binary(b) => Some(b.clone()),
            Term::List(l) => l
                .iter()
                .map(|e| e.as_int().and_then(|i| u8::try_from(i).ok()))
                .collect(),
            _ => None,
        }
    }

    /// Encodes the term with the leading version byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        self.encode_into(&mut out);
        out
    }

    /// Appends the term (without version byte) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Term::Int(i) => encode_int(*i, out),
            Term::Float(x) => {
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(&x.to_bits().to_be_bytes());
            }
            Term::Atom(a) => {
                let b = a.as_bytes();
                if b.len() <= 255 {
                    out.push(SMALL_ATOM_UTF8_EXT);
                    out.push(b.len() as u8);
                } else {
                    // Erlang limits atoms to 255 characters; longer ones are truncated
                    // at a character boundary rather than producing an invalid term.
                    let mut end = b.len().min(65535);
                    while !a.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.push(ATOM_UTF8_EXT);
                    out.extend_from_slice(&(end as u16).to_be_bytes());
                    out.extend_from_slice(&b[..end]);
                    return;
                }
                out.extend_from_slice(b);
            }
            Term::Binary(b) => {
                out.push(BINARY_EXT);
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
            Term::Tuple(t) => {
                if t.len() <= 255 {
                    out.push(SMALL_TUPLE_EXT);
                    out.push(t.len() as u8);
                } else {
                    out.push(LARGE_TUPLE_EXT);
                    out.extend_from_slice(&(t.len() as u32).to_be_bytes());
                }
                for e in t {
                    e.encode_into(out);
                }
            }
            Term::List(l) => {
                if l.is_empty() {
                    out.push(NIL_EXT);
                } else {
                    out.push(LIST_EXT);
                    out.extend_from_slice(&(l.len() as u32).to_be_bytes());
                    for e in l {
                        e.encode_into(out);
                    }
                    out.push(NIL_EXT);
                }
            }
            Term::ImproperList(l, tail) => {
                out.push(LIST_EXT);
                out.extend_from_slice(&(l.len() as u32).to_be_bytes());
                for e in l {
                    e.encode_into(out);
                }
                tail.encode_into(out);
            }
        }
    }

    /// Decodes exactly one term, with version byte, from `buf`, within the
    /// default limits for its size (`DecodeLimits::for_input(len, true)`).
    pub fn decode(buf: &[u8]) -> Result<Term, DecodeError> {
        Term::decode_with(buf, DecodeLimits::for_input(buf.len(), true))
    }

    /// Decodes exactly one term, with version byte, within `limits`.
    pub fn decode_with(buf: &[u8], limits: DecodeLimits) -> Result<Term, DecodeError> {
        let mut budget = limits.budget;
        decode_budget(buf, limits.compressed, &mut budget)
    }
}

fn decode_budget(buf: &[u8], compressed: bool, budget: &mut usize) -> Result<Term, DecodeError> {
    let (&v, _) = buf.split_first().ok_or(DecodeError::Empty)?;
    if v != VERSION {
        return Err(DecodeError::BadVersion(v));
    }
    if buf.get(1) == Some(&COMPRESSED) {
        if !compressed {
            return Err(DecodeError::CompressedRefused);
        }
        return decode_compressed(buf, budget);
    }
    let mut d = Decoder {
        buf,
        pos: 1,
        budget: *budget,
        limit: *budget,
    };
    d.charge(TERM_BYTES)?;
    let t = d.term(0)?;
    if d.pos != buf.len() {
        return Err(DecodeError::Trailing(buf.len() - d.pos));
    }
    *budget = d.budget;
    Ok(t)
}

fn encode_int(i: i128, out: &mut Vec<u8>) {
    if (0..=255).contains(&i) {
        out.push(SMALL_INTEGER_EXT);
        out.push(i as u8);
    } else if i >= i32::MIN as i128 && i <= i32::MAX as i128 {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        let sign = u8::from(i < 0);
        let mut mag = i.unsigned_abs();
        let mut digits = Vec::with_capacity(16);
        while mag > 0 {
            digits.push((mag & 0xff) as u8);
            mag >>= 8;
        }
        out.push(SMALL_BIG_EXT);
        out.push(digits.len() as u8);
        out.push(sign);
        out.extend_from_slice(&digits);
    }
}

fn decode_compressed(buf: &[u8], budget: &mut usize) -> Result<Term, DecodeError> {
    use std::io::Read;
    let size = buf
        .get(2..6)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(DecodeError::Truncated(buf.len()))?;
    if size > MAX_INFLATED {
        return Err(DecodeError::Compressed(format!(
            "uncompressed size {size} exceeds the {MAX_INFLATED}-byte limit"
        )));
    }
    // The inflated buffer is part of what the term costs.
    let limit = *budget;
    if size + 1 > *budget {
        return Err(DecodeError::TooCostly(limit));
    }
    *budget -= size + 1;
    let mut inflated = Vec::with_capacity(size + 1);
    inflated.push(VERSION);
    let mut z = flate2::read::ZlibDecoder::new(&buf[6..]).take(size as u64 + 1);
    z.read_to_end(&mut inflated)
        .map_err(|e| DecodeError::Compressed(e.to_string()))?;
    if inflated.len() != size + 1 {
        return Err(DecodeError::Compressed(format!(
            "inflated to {} bytes, header said {size}",
            inflated.len() - 1
        )));
    }
    if inflated.get(1) == Some(&COMPRESSED) {
        return Err(DecodeError::Compressed("nested compression".into()));
    }
    decode_budget(&inflated, false, budget).map_err(|e| match e {
        DecodeError::TooCostly(_) => DecodeError::TooCostly(limit),
        e => e,
    })
}

/// The text of a FLOAT_EXT (old minor version 0 floats, `%.20e`), with the
/// syntax Erlang's own decoder accepts: `[+-]?D+[.,]D+([eE][+-]?D+)?`, and
/// a finite result.
fn parse_float_ext(s: &[u8]) -> Option<f64> {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if matches!(s.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    if !digits(&mut i) || !matches!(s.get(i), Some(b'.' | b',')) {
        return None;
    }
    let point = i;
    i += 1;
    if !digits(&mut i) {
        return None;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != s.len() {
        return None;
    }
    let mut text = s.to_vec();
    text[point] = b'.';
    let x: f64 = std::str::from_utf8(&text).ok()?.parse().ok()?;
    x.is_finite().then_some(x)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Bytes of decoded memory still allowed, and the whole allowance.
    budget: usize,
    limit: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    /// Counts `n` bytes of decoded memory against the budget.
    fn charge(&mut self, n: usize) -> Result<(), DecodeError> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or(DecodeError::TooCostly(self.limit))?;
        Ok(())
    }
    /// Charges `n` element slots (each a `Term`), before they are reserved.
    fn charge_elems(&mut self, n: usize) -> Result<(), DecodeError> {
        self.charge(
            n.checked_mul(TERM_BYTES)
                .ok_or(DecodeError::TooCostly(self.limit))?,
        )
    }
    /// Makes room for `n` more elements in `v`, charging the slots it
    /// allocates. A list sent as a chain of short list headers (the C `ei`
    /// idiom) grows by doubling, so that it costs linear time; the unused
    /// part of a doubling is charged too, and when it does not fit the
    /// budget the vector grows by exactly `n`.
    fn grow(&mut self, v: &mut Vec<Term>, n: usize) -> Result<(), DecodeError> {
        let need = v.len() + n;
        if need <= v.capacity() {
            return Ok(());
        }
        let doubled = need.max(v.capacity() * 2);
        let extra = if self.charge_elems(doubled - v.capacity()).is_ok() {
            doubled - v.len()
        } else {
            self.charge_elems(need - v.capacity())?;
            n
        };
        v.reserve_exact(extra);
        Ok(())
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// A count of elements, each of which needs at least one byte.
    fn count(&mut self, n: usize) -> Result<usize, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated(self.buf.len()));
        }
        Ok(n)
    }

    /// The rest of a LIST_EXT (the tag is consumed). A tail that is itself a
    /// list continues the list, as in Erlang (`[1 | [2]]` is `[1, 2]`); this is
    /// what C `ei` encoders produce when they emit a list of unknown length as
    /// a chain of one-element list headers, so the chain is followed in a loop
    /// rather than by recursion (no depth limit on list length).
    fn list(&mut self, depth: usize) -> Result<Term, DecodeError> {
        let mut v = Vec::new();
        loop {
            let n = self.u32()?;
            let n = self.count(n)?;
            self.grow(&mut v, n)?;
            for _ in 0..n {
                v.push(self.term(depth + 1)?);
            }
            match self.buf.get(self.pos) {
                Some(&LIST_EXT) => self.pos += 1,
                Some(&NIL_EXT) => {
                    self.pos += 1;
                    return Ok(Term::List(v));
                }
                Some(&STRING_EXT) => {
                    self.pos += 1;
                    let n = self.u16()?;
                    self.grow(&mut v, n)?;
                    v.extend(self.take(n)?.iter().map(|&c| Term::Int(c as i128)));
                    return Ok(Term::List(v));
                }
                _ => {
                    // The tail lives in a Box of its own.
                    self.charge(TERM_BYTES)?;
                    let tail = self.term(depth + 1)?;
                    // `[ | T]` with no elements is just T.
                    return Ok(if v.is_empty() {
                        tail
                    } else {
                        Term::ImproperList(v, Box::new(tail))
                    });
                }
            }
        }
    }

    fn term(&mut self, depth: usize) -> Result<Term, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.pos;
        let tag = self.u8()?;
        Ok(match tag {
            SMALL_INTEGER_EXT => Term::Int(self.u8()? as i128),
            INTEGER_EXT => {
                let b = self.take(4)?;
                Term::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i128)
            }
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let n = if tag == SMALL_BIG_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()?
                };
                let sign = self.u8()?;
                let digits = self.take(n)?;
                // Trailing zero digits do not change the value; anything beyond
                // 16 significant bytes does not fit the integers we carry.
                let significant = digits.iter().rposition(|&d| d != 0).map_or(0, |p| p + 1);
                if significant > 16 {
                    return Err(DecodeError::BigTooLarge(n));
                }
                let mut mag: u128 = 0;
                for &d in digits[..significant].iter().rev() {
                    mag = (mag << 8) | d as u128;
                }
                if sign == 0 {
                    Term::Int(i128::try_from(mag).map_err(|_| DecodeError::BigTooLarge(n))?)
                } else if mag == 1u128 << 127 {
                    Term::Int(i128::MIN)
                } else {
                    Term::Int(-i128::try_from(mag).map_err(|_| DecodeError::BigTooLarge(n))?)
                }
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Term::Float(f64::from_bits(u64::from_be_bytes(a)))
            }
            FLOAT_EXT => {
                let b = self.take(31)?;
                let s = b.split(|&c| c == 0).next().unwrap_or(&[]);
                Term::Float(parse_float_ext(s).ok_or(DecodeError::BadFloat(at))?)
            }
            ATOM_EXT | SMALL_ATOM_EXT => {
                let n = if tag == ATOM_EXT {
                    self.u16()?
                } else {
                    self.u8()? as usize
                };
                // Latin-1: every byte is one code point (two UTF-8 bytes at most).
                self.charge(2 * n)?;
                Term::Atom(self.take(n)?.iter().map(|&c| c as char).collect())
            }
            ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                let n = if tag == ATOM_UTF8_EXT {
                    self.u16()?
                } else {
                    self.u8()? as usize
                };
                self.charge(n)?;
                let b = self.take(n)?;
                Term::Atom(
                    std::str::from_utf8(b)
                        .map_err(|_| DecodeError::BadAtom)?
                        .to_owned(),
                )
            }
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let n = if tag == SMALL_TUPLE_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()?
                };
                let n = self.count(n)?;
                self.charge_elems(n)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.term(depth + 1)?);
                }
                Term::Tuple(v)
            }
            NIL_EXT => Term::List(Vec::new()),
            STRING_EXT => {
                let n = self.u16()?;
                self.charge_elems(n)?;
                Term::List(
                    self.take(n)?
                        .iter()
                        .map(|&c| Term::Int(c as i128))
                        .collect(),
                )
            }
            LIST_EXT => self.list(depth)?,
            BINARY_EXT => {
                let n = self.u32()?;
                let b = self.take(n)?;
                self.charge(n)?;
                Term::Binary(b.to_vec())
            }
            COMPRESSED => return Err(DecodeError::Compressed("nested compression".into())),
            _ => return Err(DecodeError::UnknownTag { tag, at }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(t: Term) {
        let e = t.encode();
        assert_eq!(Term::decode(&e).unwrap(), t, "round trip of {t:?}");
    }

    #[test]
    fn integers_use_canonical_forms() {
        assert_eq!(Term::int(5).encode(), [131, 97, 5]);
        assert_eq!(Term::int(256).encode(), [131, 98, 0, 0, 1, 0]);
        assert_eq!(Term::int(-1).encode(), [131, 98, 255, 255, 255, 255]);
        assert_eq!(
            Term::int(1i64 << 40).encode(),
            [131, 110, 6, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            Term::int(-(1i64 << 40)).encode(),
            [131, 110, 6, 1, 0, 0, 0, 0, 0, 1]
        );
        for i in [
            0i128,
            255,
            256,
            -1,
            i32::MAX as i128,
            i32::MIN as i128,
            i32::MAX as i128 + 1,
            i64::MAX as i128,
            i64::MIN as i128,
            u64::MAX as i128,
            i128::MAX,
            i128::MIN,
        ] {
            rt(Term::Int(i));
        }
    }

    #[test]
    fn atoms_all_encodings_decode() {
        assert_eq!(Term::atom("ok").encode(), [131, 119, 2, b'o', b'k']);
        for bytes in [
            &[131u8, 100, 0, 2, b'o', b'k'][..],
            &[131, 115, 2, b'o', b'k'],
            &[131, 118, 0, 2, b'o', b'k'],
            &[131, 119, 2, b'o', b'k'],
        ] {
            assert_eq!(Term::decode(bytes).unwrap(), Term::atom("ok"));
        }
        // Latin-1 atom with a byte above 127.
        assert_eq!(
            Term::decode(&[131, 115, 1, 0xe5]).unwrap(),
            Term::atom("\u{e5}")
        );
        assert_eq!(
            Term::decode(&[131, 119, 1, 0xff]),
            Err(DecodeError::BadAtom)
        );
    }

    #[test]
    fn containers_round_trip() {
        rt(Term::tuple(vec![]));
        rt(Term::tuple((0..300).map(Term::int).collect()));
        rt(Term::List(vec![]));
        rt(Term::List(vec![Term::atom("a"), Term::binary(b"xyz")]));
        rt(Term::ImproperList(
            vec![Term::atom("a")],
            Box::new(Term::atom("b")),
        ));
        rt(Term::Float(1.5));
        rt(Term::binary(b""));
    }

    #[test]
    fn string_ext_is_a_list_of_bytes() {
        let t = Term::decode(&[131, 107, 0, 2, b'h', b'i']).unwrap();
        assert_eq!(t, Term::List(vec![Term::int(104), Term::int(105)]));
        assert_eq!(t.as_bytes_lossy().unwrap(), b"hi");
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        assert_eq!(Term::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Term::decode(&[130, 97, 1]),
            Err(DecodeError::BadVersion(130))
        );
        // A binary claiming 4 GiB.
        assert!(matches!(
            Term::decode(&[131, 109, 255, 255, 255, 255, 0]),
            Err(DecodeError::Truncated(_))
        ));
        // A list claiming 4 billion elements must not allocate for them.
        assert!(matches!(
            Term::decode(&[131, 108, 255, 255, 255, 255]),
            Err(DecodeError::Truncated(_))
        ));
        // Deep nesting.
        let mut deep = vec![131];
        deep.extend(std::iter::repeat_n([104u8, 1], 1000).flatten());
        deep.push(106);
        assert_eq!(Term::decode(&deep), Err(DecodeError::TooDeep));
        // Unknown tag, trailing bytes.
        assert!(matches!(
            Term::decode(&[131, 42]),
            Err(DecodeError::UnknownTag { tag: 42, .. })
        ));
        assert_eq!(
            Term::decode(&[131, 97, 1, 0]),
            Err(DecodeError::Trailing(1))
        );
        // A bignum too large for i128.
        let mut big = vec![131, 110, 17, 0];
        big.extend([1u8; 17]);
        assert_eq!(Term::decode(&big), Err(DecodeError::BigTooLarge(17)));
        // Compressed bomb header.
        assert!(matches!(
            Term::decode(&[131, 80, 255, 255, 255, 255, 1, 2]),
            Err(DecodeError::Compressed(_))
        ));
    }

    #[test]
    fn float_ext_text_is_parsed_as_erlang_does() {
        let dec = |txt: &str| {
            let mut b = vec![131, 99];
            b.extend_from_slice(txt.as_bytes());
            b.resize(33, 0);
            Term::decode(&b)
        };
        for (txt, x) in [
            ("1.50000000000000000000e+00", 1.5),
            ("1.5", 1.5),
            ("+1.5", 1.5),
            ("1,5", 1.5),
            ("-0.0", -0.0),
            ("1.5E3", 1500.0),
            ("01.5", 1.5),
            ("1.0e-400", 0.0),
        ] {
            assert_eq!(dec(txt), Ok(Term::Float(x)), "{txt}");
        }
        // Erlang's binary_to_term rejects all of these.
        for txt in [
            "1.5 ", " 1.5", "1e5", "1.", "1.5e", "1.0e400", "inf", "nan", "",
        ] {
            assert_eq!(dec(txt), Err(DecodeError::BadFloat(1)), "{txt:?}");
        }
    }

    #[test]
    fn list_tails_that_are_lists_continue_the_list() {
        // [1 | [2]] as two list headers: Erlang reads [1, 2].
        let b = [131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 106];
        assert_eq!(
            Term::decode(&b).unwrap(),
            Term::List(vec![Term::int(1), Term::int(2)])
        );
        // [1 | "ab"] (STRING_EXT tail) is [1, 97, 98].
        let b = [131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 2, b'a', b'b'];
        assert_eq!(
            Term::decode(&b).unwrap(),
            Term::List(vec![Term::int(1), Term::int(97), Term::int(98)])
        );
        // A list header with no elements and tail `a` is just `a`.
        let b = [131, 108, 0, 0, 0, 0, 100, 0, 1, b'a'];
        assert_eq!(Term::decode(&b).unwrap(), Term::atom("a"));
        // [1, 2 | [3 | x]] is the improper list [1, 2, 3 | x].
        let b = [
            131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 108, 0, 0, 0, 1, 97, 3, 119, 1, b'x',
        ];
        assert_eq!(
            Term::decode(&b).unwrap(),
            Term::ImproperList(
                vec![Term::int(1), Term::int(2), Term::int(3)],
                Box::new(Term::atom("x"))
            )
        );
        // The C `ei` idiom for a list of unknown length: one-element headers
        // chained 1000 deep. Not limited by MAX_DEPTH.
        let mut b = vec![131];
        for i in 0..1000u32 {
            b.extend_from_slice(&[108, 0, 0, 0, 1, 98]);
            b.extend_from_slice(&i.to_be_bytes());
        }
        b.push(106);
        let t = Term::decode(&b).unwrap();
        assert_eq!(t, Term::List((0..1000).map(Term::int).collect()));
        // Nesting through list *elements* is still bounded.
        let mut deep = vec![131];
        deep.extend(std::iter::repeat_n([108u8, 0, 0, 0, 1], 100).flatten());
        deep.extend(std::iter::repeat_n(106u8, 101));
        assert_eq!(Term::decode(&deep), Err(DecodeError::TooDeep));
    }

    #[test]
    fn element_counts_do_not_reserve_unbacked_memory() {
        // 64 nested list headers, each claiming as many elements as there are
        // bytes left, over a 1 MiB body: must fail fast, reserving little.
        let mut b = vec![131];
        let body = 1 << 20;
        for _ in 0..MAX_DEPTH {
            b.push(108);
            b.extend_from_slice(&(body as u32).to_be_bytes());
        }
        b.resize(b.len() + body, 106);
        assert!(matches!(
            Term::decode(&b),
            Err(DecodeError::Truncated(_) | DecodeError::TooCostly(_))
        ));
    }

    #[test]
    fn compressed_terms_decode() {
        use std::io::Write;
        let inner = Term::List((0..100).map(|_| Term::atom("hello")).collect());
        let raw = inner.encode();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw[1..]).unwrap();
        let body = z.finish().unwrap();
        let mut buf = vec![131, 80];
        buf.extend_from_slice(&((raw.len() - 1) as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        assert_eq!(Term::decode(&buf).unwrap(), inner);
    }

    /// A list of `n` empty lists, compressed: the "bomb" of issue 10.
    pub(crate) fn nil_bomb(n: u32) -> Vec<u8> {
        use std::io::Write;
        let mut raw = vec![LIST_EXT];
        raw.extend_from_slice(&n.to_be_bytes());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&raw).unwrap();
        let chunk = vec![NIL_EXT; 1 << 16];
        let mut left = n as usize + 1;
        while left > 0 {
            let k = left.min(chunk.len());
            z.write_all(&chunk[..k]).unwrap();
            left -= k;
        }
        let body = z.finish().unwrap();
        let mut buf = vec![131, COMPRESSED];
        buf.extend_from_slice(&(raw.len() as u32 + n + 1).to_be_bytes());
        buf.extend_from_slice(&body);
        buf
    }

    #[test]
    fn decoded_memory_is_bounded_by_the_input_size() {
        // 16.7 M empty lists inflated from ~16 KB: refused before inflating
        // more than the budget of a 16 KB input.
        let bomb = nil_bomb(16_700_000);
        assert!(bomb.len() < 40_000, "bomb is {} bytes", bomb.len());
        assert_eq!(
            Term::decode(&bomb),
            Err(DecodeError::TooCostly(
                DecodeLimits::for_input(bomb.len(), true).budget
            ))
        );
        assert_eq!(
            Term::decode_with(&bomb, DecodeLimits::for_input(bomb.len(), false)),
            Err(DecodeError::CompressedRefused)
        );
        // The same uncompressed: 1 byte per element, 32 decoded.
        let mut flat = vec![131, LIST_EXT];
        flat.extend_from_slice(&(1u32 << 20).to_be_bytes());
        flat.resize(flat.len() + (1 << 20) + 1, NIL_EXT);
        assert!(matches!(
            Term::decode(&flat),
            Err(DecodeError::TooCostly(_))
        ));
        // A tuple of empty lists, and a long STRING_EXT, likewise.
        let mut tup = vec![131, LARGE_TUPLE_EXT];
        tup.extend_from_slice(&(1u32 << 20).to_be_bytes());
        tup.resize(tup.len() + (1 << 20), NIL_EXT);
        assert!(matches!(Term::decode(&tup), Err(DecodeError::TooCostly(_))));
        // Real shapes fit: a million small integers, a 1 MiB binary, a
        // chained (ei-style) list of 100 000 integers, and small NIL terms.
        let ints = Term::List((0..1_000_000).map(|i| Term::int(i % 200)).collect());
        assert_eq!(Term::decode(&ints.encode()).unwrap(), ints);
        let bin = Term::binary(vec![7u8; 1 << 20]);
        assert_eq!(Term::decode(&bin.encode()).unwrap(), bin);
        let mut b = vec![131];
        for i in 0..100_000u32 {
            b.extend_from_slice(&[108, 0, 0, 0, 1, 98]);
            b.extend_from_slice(&i.to_be_bytes());
        }
        b.push(106);
        assert_eq!(
            Term::decode(&b).unwrap(),
            Term::List((0..100_000).map(Term::int).collect())
        );
        let small = Term::tuple((0..1000).map(|_| Term::List(vec![])).collect());
        assert_eq!(Term::decode(&small.encode()).unwrap(), small);
    }

    #[test]
    fn the_budget_is_what_decoding_allocates() {
        // A term decoding to exactly the budget passes; one byte less fails.
        let t = Term::tuple(vec![Term::binary(vec![1u8; 100]), Term::atom("abc")]);
        let need = TERM_BYTES + 2 * TERM_BYTES + 100 + 3;
        let e = t.encode();
        let lim = |budget| DecodeLimits {
            compressed: false,
            budget,
        };
        assert_eq!(Term::decode_with(&e, lim(need)).unwrap(), t);
        assert_eq!(
            Term::decode_with(&e, lim(need - 1)),
            Err(DecodeError::TooCostly(need - 1))
        );
    }

    #[test]
    fn term_text_is_bounded() {
        let big = Term::List(vec![Term::binary(vec![b'x'; 1 << 20]); 16]);
        let s = format!("{big:?}");
        assert_eq!(s.len(), MAX_TERM_TEXT + 3);
        assert!(s.starts_with("[<<\"xxx") && s.ends_with("..."), "{s}");
        assert_eq!(format!("{:?}", Term::atom("a\nb")), "'a\\nb'");
        assert_eq!(
            format!("{:?}", Term::tuple(vec![Term::atom("ok"), Term::int(1)])),
            "{'ok',1}"
        );
    }
}
