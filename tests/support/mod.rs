//! Helpers shared by the codec tests: exact term comparison, a reader for
//! Erlang's `~w` output, a small deterministic random generator of terms,
//! and mutation of encodings.
#![allow(dead_code)]

use confd_ha::proto::term::Term;

/// Equality with floats compared bit for bit (NaN equals the same NaN,
/// 0.0 differs from -0.0).
pub fn same(a: &Term, b: &Term) -> bool {
    match (a, b) {
        (Term::Float(x), Term::Float(y)) => x.to_bits() == y.to_bits(),
        (Term::Tuple(x), Term::Tuple(y)) | (Term::List(x), Term::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Term::ImproperList(x, xt), Term::ImproperList(y, yt)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)) && same(xt, yt)
        }
        _ => a == b,
    }
}

/// Does the term hold something Erlang itself cannot represent: an atom of
/// more than 255 characters or a non-finite float?
pub fn beyond_erlang(t: &Term) -> bool {
    match t {
        Term::Float(x) => !x.is_finite(),
        Term::Atom(a) => a.chars().count() > 255,
        Term::Tuple(v) | Term::List(v) => v.iter().any(beyond_erlang),
        Term::ImproperList(v, tail) => v.iter().any(beyond_erlang) || beyond_erlang(tail),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Erlang `~w` text → Term

/// Parses what `io_lib:format("~w", [T])` prints for the term kinds our
/// codec carries (integers, floats, atoms, binaries, tuples, lists).
pub fn parse_erlang(text: &str) -> Result<Term, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let t = p.term()?;
    if p.i != p.s.len() {
        return Err(format!("trailing text at {} in {text:?}", p.i));
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at {} in {:?}",
                c as char,
                self.i,
                String::from_utf8_lossy(self.s)
            ))
        }
    }
    fn seq(&mut self, close: u8) -> Result<(Vec<Term>, Option<Term>), String> {
        let mut v = Vec::new();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok((v, None));
        }
        loop {
            v.push(self.term()?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'|') if close == b']' => {
                    self.i += 1;
                    let tail = self.term()?;
                    self.eat(close)?;
                    return Ok((v, Some(tail)));
                }
                _ => {
                    self.eat(close)?;
                    return Ok((v, None));
                }
            }
        }
    }
    fn term(&mut self) -> Result<Term, String> {
        match self.peek().ok_or("unexpected end of text")? {
            b'{' => {
                self.i += 1;
                Ok(Term::Tuple(self.seq(b'}')?.0))
            }
            b'[' => {
                self.i += 1;
                Ok(match self.seq(b']')? {
                    (v, None) => Term::List(v),
                    (v, Some(t)) => Term::ImproperList(v, Box::new(t)),
                })
            }
            b'<' => {
                self.eat(b'<')?;
                self.eat(b'<')?;
                let mut b = Vec::new();
                while self.peek() != Some(b'>') {
                    if !b.is_empty() {
                        self.eat(b',')?;
                    }
                    let n = self.number()?;
                    match n {
                        Term::Int(i) if (0..=255).contains(&i) => b.push(i as u8),
                        other => return Err(format!("bad byte {other:?} in binary")),
                    }
                }
                self.eat(b'>')?;
                self.eat(b'>')?;
                Ok(Term::Binary(b))
            }
            b'\'' => self.quoted_atom(),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                // An unquoted atom: starts with a lower-case letter (Latin-1
                // letters included), then letters, digits, `_` and `@`.
                let rest = std::str::from_utf8(&self.s[self.i..]).map_err(|e| e.to_string())?;
                let len: usize = rest
                    .char_indices()
                    .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '@'))
                    .map_or(rest.len(), |(i, _)| i);
                if len == 0 {
                    return Err(format!("unexpected text {:?}", &rest[..rest.len().min(20)]));
                }
                self.i += len;
                Ok(Term::Atom(rest[..len].to_owned()))
            }
        }
    }
    fn number(&mut self) -> Result<Term, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let mut float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' => {}
                b'.' | b'e' => float = true,
                b'+' | b'-' if float => {}
                _ => break,
            }
            self.i += 1;
        }
        let txt = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        if float {
            txt.parse::<f64>()
                .map(Term::Float)
                .map_err(|e| format!("{txt:?}: {e}"))
        } else {
            txt.parse::<i128>()
                .map(Term::Int)
                .map_err(|e| format!("{txt:?}: {e}"))
        }
    }
    fn quoted_atom(&mut self) -> Result<Term, String> {
        self.eat(b'\'')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated quoted atom")?;
            self.i += 1;
            match c {
                b'\'' => break,
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch: u32 = match e {
                        b'n' => 10,
                        b't' => 9,
                        b'r' => 13,
                        b'b' => 8,
                        b'f' => 12,
                        b'v' => 11,
                        b'e' => 27,
                        b's' => 32,
                        b'd' => 127,
                        b'^' => {
                            let x = self.peek().ok_or("bad control escape")?;
                            self.i += 1;
                            (x & 31) as u32
                        }
                        b'x' => {
                            self.eat(b'{')?;
                            let start = self.i;
                            while self.peek() != Some(b'}') {
                                self.i += 1;
                                if self.i > self.s.len() {
                                    return Err("unterminated \\x{".into());
                                }
                            }
                            let h = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                            self.i += 1;
                            u32::from_str_radix(h, 16).map_err(|e| e.to_string())?
                        }
                        b'0'..=b'7' => {
                            let mut v = (e - b'0') as u32;
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + (d - b'0') as u32;
                                        self.i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            v
                        }
                        other => other as u32,
                    };
                    let ch = char::from_u32(ch).ok_or("bad escaped character")?;
                    let mut b = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out)
            .map(Term::Atom)
            .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Deterministic random terms and mutations (xorshift; no dependencies).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Characters atoms are drawn from: plain, needing quotes, needing escapes,
/// Latin-1 and beyond.
const ATOM_CHARS: &[char] = &[
    'a', 'b', 'z', 'A', 'Z', '0', '9', '_', '@', ' ', '\'', '\\', '\n', '\t', '.', 'é', 'ß', 'ÿ',
    'π', 'Ω', '€', '日', '😀',
];

pub fn random_atom(rng: &mut Rng) -> String {
    let len = match rng.below(10) {
        0 => 0,
        1 => 200 + rng.below(56),
        _ => 1 + rng.below(12),
    };
    (0..len)
        .map(|_| ATOM_CHARS[rng.below(ATOM_CHARS.len())])
        .collect()
}

pub fn random_int(rng: &mut Rng) -> i128 {
    let edges = [
        0i128,
        1,
        -1,
        255,
        256,
        i32::MAX as i128,
        i32::MIN as i128,
        i32::MAX as i128 + 1,
        i32::MIN as i128 - 1,
        i64::MAX as i128,
        i64::MIN as i128,
        u64::MAX as i128,
        u64::MAX as i128 + 1,
        i128::MAX,
        i128::MIN,
        i128::MIN + 1,
    ];
    match rng.below(4) {
        0 => edges[rng.below(edges.len())],
        1 => rng.below(256) as i128,
        2 => (rng.next() as i64) as i128 >> rng.below(64),
        _ => ((rng.next() as i128) << 64 | rng.next() as i128) >> rng.below(128),
    }
}

pub fn random_float(rng: &mut Rng) -> f64 {
    let edges = [
        0.0,
        -0.0,
        1.5,
        0.1,
        -2.5e-7,
        1.0e300,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5.0e-324,
        123456789.0,
        1.0e15,
        1.0e16,
        1.0e22,
    ];
    if rng.chance(2) {
        edges[rng.below(edges.len())]
    } else {
        loop {
            let x = f64::from_bits(rng.next());
            if x.is_finite() {
                return x;
            }
        }
    }
}

/// A random term that Erlang can represent, in canonical form (no improper
/// list whose tail is a list or that has no elements).
pub fn random_term(rng: &mut Rng, depth: usize) -> Term {
    let mut budget = 700;
    random_term_within(rng, depth, &mut budget)
}

/// As [`random_term`], with at most about `budget` nodes in all.
fn random_term_within(rng: &mut Rng, depth: usize, budget: &mut usize) -> Term {
    *budget = budget.saturating_sub(1);
    let leaf = depth == 0 || *budget == 0 || rng.chance(3);
    if leaf {
        match rng.below(5) {
            0 => Term::Int(random_int(rng)),
            1 => Term::Float(random_float(rng)),
            2 => Term::Atom(random_atom(rng)),
            3 => {
                let n = if rng.chance(8) { 300 } else { rng.below(6) };
                Term::Binary((0..n).map(|_| rng.next() as u8).collect())
            }
            _ => Term::List(vec![]),
        }
    } else {
        let n = match rng.below(12) {
            0 => 256 + rng.below(50),
            _ => rng.below(5),
        }
        .min(*budget);
        let elems: Vec<Term> = (0..n)
            .map(|_| random_term_within(rng, depth - 1, budget))
            .collect();
        match rng.below(4) {
            0 | 1 => Term::Tuple(elems),
            2 => Term::List(elems),
            _ if elems.is_empty() => Term::List(elems),
            _ => {
                let mut tail = random_term(rng, 0);
                if matches!(tail, Term::List(_)) {
                    tail = Term::atom("t");
                }
                Term::ImproperList(elems, Box::new(tail))
            }
        }
    }
}

/// A corrupted copy of `valid`: bit flips, byte overwrites, truncation,
/// insertion, or a length-looking field set to a huge value.
pub fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if b.len() < 2 {
            b.push(rng.next() as u8);
            continue;
        }
        let at = 1 + rng.below(b.len() - 1);
        match rng.below(6) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => b.truncate(at),
            3 => b.insert(at, rng.next() as u8),
            4 => {
                // Overwrite four bytes with a huge or boundary length.
                let v: u32 = [
                    u32::MAX,
                    0x7fff_ffff,
                    0x8000_0000,
                    0x0100_0000,
                    0,
                    1,
                    255,
                    256,
                ][rng.below(8)];
                for (k, x) in v.to_be_bytes().iter().enumerate() {
                    if let Some(d) = b.get_mut(at + k) {
                        *d = *x;
                    }
                }
            }
            _ => {
                b.remove(at);
            }
        }
    }
    b
}
