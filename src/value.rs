//! Owned values, the safe twin of `confd_value_t`, and their wire terms
//! (spec §D.6).

use crate::proto::term::Term;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `enum confd_vtype` numbers used here.
pub mod vtype {
    pub const C_NOEXISTS: i32 = 1;
    pub const C_STR: i32 = 4;
    pub const C_BUF: i32 = 5;
    pub const C_INT8: i32 = 6;
    pub const C_INT16: i32 = 7;
    pub const C_INT32: i32 = 8;
    pub const C_INT64: i32 = 9;
    pub const C_UINT8: i32 = 10;
    pub const C_UINT16: i32 = 11;
    pub const C_UINT32: i32 = 12;
    pub const C_UINT64: i32 = 13;
    pub const C_DOUBLE: i32 = 14;
    pub const C_IPV4: i32 = 15;
    pub const C_IPV6: i32 = 16;
    pub const C_BOOL: i32 = 17;
    pub const C_ENUM_VALUE: i32 = 28;
    pub const C_BINARY: i32 = 39;
}

/// A configuration value. C_STR values travel as binaries, exactly as C_BUF
/// values do, and so come back as [`Value::Buf`].
#[derive(Clone, PartialEq)]
pub enum Value {
    NoExists,
    Buf(Vec<u8>),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Double(f64),
    Bool(bool),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Enum(i32),
    Binary(Vec<u8>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.type_name(), self)
    }
}

/// Shown the way `ha-ctl get` prints a value: text as it is, numbers in
/// decimal, addresses in their usual notation, binaries in hex.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::NoExists => Ok(()),
            Value::Buf(b) => write!(f, "{}", String::from_utf8_lossy(b)),
            Value::Int8(v) => write!(f, "{v}"),
            Value::Int16(v) => write!(f, "{v}"),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::UInt8(v) => write!(f, "{v}"),
            Value::UInt16(v) => write!(f, "{v}"),
            Value::UInt32(v) => write!(f, "{v}"),
            Value::UInt64(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Ipv4(v) => write!(f, "{v}"),
            Value::Ipv6(v) => write!(f, "{v}"),
            Value::Enum(v) => write!(f, "{v}"),
            Value::Binary(b) => {
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A term that is not a value we understand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("term {0} is not a supported value")]
pub struct BadValue(pub String);

impl Value {
    /// The `confd_vtype` number.
    pub fn vtype(&self) -> i32 {
        use vtype::*;
        match self {
            Value::NoExists => C_NOEXISTS,
            Value::Buf(_) => C_BUF,
            Value::Int8(_) => C_INT8,
            Value::Int16(_) => C_INT16,
            Value::Int32(_) => C_INT32,
            Value::Int64(_) => C_INT64,
            Value::UInt8(_) => C_UINT8,
            Value::UInt16(_) => C_UINT16,
            Value::UInt32(_) => C_UINT32,
            Value::UInt64(_) => C_UINT64,
            Value::Double(_) => C_DOUBLE,
            Value::Bool(_) => C_BOOL,
            Value::Ipv4(_) => C_IPV4,
            Value::Ipv6(_) => C_IPV6,
            Value::Enum(_) => C_ENUM_VALUE,
            Value::Binary(_) => C_BINARY,
        }
    }

    /// The short type name used by `ha-ctl` ("buf", "int32", "ipv4", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::NoExists => "noexists",
            Value::Buf(_) => "buf",
            Value::Int8(_) => "int8",
            Value::Int16(_) => "int16",
            Value::Int32(_) => "int32",
            Value::Int64(_) => "int64",
            Value::UInt8(_) => "uint8",
            Value::UInt16(_) => "uint16",
            Value::UInt32(_) => "uint32",
            Value::UInt64(_) => "uint64",
            Value::Double(_) => "double",
            Value::Bool(_) => "bool",
            Value::Ipv4(_) => "ipv4",
            Value::Ipv6(_) => "ipv6",
            Value::Enum(_) => "enum",
            Value::Binary(_) => "binary",
        }
    }

    /// Parses `text` as a value of the named type (see [`Value::type_name`]).
    pub fn parse(type_name: &str, text: &str) -> Result<Value, String> {
        fn num<T: std::str::FromStr>(t: &str, ty: &str) -> Result<T, String> {
            t.trim()
                .parse()
                .map_err(|_| format!("'{t}' is not a valid {ty}"))
        }
        Ok(match type_name {
            "buf" | "str" | "string" => Value::Buf(text.as_bytes().to_vec()),
            "int8" => Value::Int8(num(text, type_name)?),
            "int16" => Value::Int16(num(text, type_name)?),
            "int32" => Value::Int32(num(text, type_name)?),
            "int64" => Value::Int64(num(text, type_name)?),
            "uint8" => Value::UInt8(num(text, type_name)?),
            "uint16" => Value::UInt16(num(text, type_name)?),
            "uint32" => Value::UInt32(num(text, type_name)?),
            "uint64" => Value::UInt64(num(text, type_name)?),
            "double" => match num::<f64>(text, type_name)? {
                d if d.is_finite() => Value::Double(d),
                d => {
                    return Err(format!(
                        "double {d} is not finite (the term format has no NaN or infinity)"
                    ))
                }
            },
            "bool" => Value::Bool(num(text, type_name)?),
            "ipv4" => Value::Ipv4(num(text, type_name)?),
            "ipv6" => Value::Ipv6(num(text, type_name)?),
            "enum" => Value::Enum(num(text, type_name)?),
            "binary" => {
                let t = text.trim();
                if !t.len().is_multiple_of(2) {
                    return Err(format!("'{t}' is not an even number of hex digits"));
                }
                let mut v = Vec::with_capacity(t.len() / 2);
                for i in (0..t.len()).step_by(2) {
                    v.push(
                        t.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| format!("'{t}' is not hex"))?,
                    );
                }
                Value::Binary(v)
            }
            other => return Err(format!("unknown value type '{other}'")),
        })
    }

    /// The wire term.
    pub fn to_term(&self) -> Term {
        fn tagged(tag: i32, t: Term) -> Term {
            Term::Tuple(vec![Term::int(tag), t])
        }
        use vtype::*;
        match self {
            Value::NoExists => Term::atom("not_found"),
            Value::Buf(b) => Term::Binary(b.clone()),
            Value::Int8(v) => tagged(C_INT8, Term::int(*v)),
            Value::Int16(v) => tagged(C_INT16, Term::int(*v)),
            Value::Int32(v) => Term::int(*v),
            Value::Int64(v) => tagged(C_INT64, Term::int(*v)),
            Value::UInt8(v) => tagged(C_UINT8, Term::int(*v)),
            Value::UInt16(v) => tagged(C_UINT16, Term::int(*v)),
            Value::UInt32(v) => tagged(C_UINT32, Term::int(*v)),
            Value::UInt64(v) => tagged(C_UINT64, Term::int(*v)),
            Value::Double(v) => Term::Float(*v),
            Value::Bool(v) => Term::atom(if *v { "true" } else { "false" }),
            Value::Ipv4(a) => Term::Tuple(a.octets().iter().map(|&o| Term::int(o)).collect()),
            Value::Ipv6(a) => Term::Tuple(a.segments().iter().map(|&s| Term::int(s)).collect()),
            Value::Enum(v) => tagged(C_ENUM_VALUE, Term::int(*v)),
            Value::Binary(b) => tagged(C_BINARY, Term::Binary(b.clone())),
        }
    }

    /// Decodes a wire term.
    pub fn from_term(t: &Term) -> Result<Value, BadValue> {
        use vtype::*;
        let bad = || BadValue(format!("{t:?}"));
        fn conv<T: TryFrom<i128>>(t: &Term) -> Option<T> {
            t.as_int().and_then(|i| T::try_from(i).ok())
        }
        Ok(match t {
            Term::Binary(b) => Value::Buf(b.clone()),
            Term::Int(_) => Value::Int32(conv(t).ok_or_else(bad)?),
            // Erlang has no NaN or infinite floats: refuse them as it does.
            Term::Float(x) if x.is_finite() => Value::Double(*x),
            Term::Atom(a) => match a.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "not_found" => Value::NoExists,
                _ => return Err(bad()),
            },
            Term::Tuple(e) if e.len() == 4 => {
                let mut o = [0u8; 4];
                for (d, s) in o.iter_mut().zip(e) {
                    *d = conv(s).ok_or_else(bad)?;
                }
                Value::Ipv4(Ipv4Addr::from(o))
            }
            Term::Tuple(e) if e.len() == 8 => {
                let mut o = [0u16; 8];
                for (d, s) in o.iter_mut().zip(e) {
                    *d = conv(s).ok_or_else(bad)?;
                }
                Value::Ipv6(Ipv6Addr::from(o))
            }
            Term::Tuple(e) if e.len() == 2 => {
                let v = &e[1];
                let tag = e[0]
                    .as_int()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(bad)?;
                match tag {
                    C_INT8 => Value::Int8(conv(v).ok_or_else(bad)?),
                    C_INT16 => Value::Int16(conv(v).ok_or_else(bad)?),
                    C_INT32 => Value::Int32(conv(v).ok_or_else(bad)?),
                    C_INT64 => Value::Int64(conv(v).ok_or_else(bad)?),
                    C_UINT8 => Value::UInt8(conv(v).ok_or_else(bad)?),
                    C_UINT16 => Value::UInt16(conv(v).ok_or_else(bad)?),
                    C_UINT32 => Value::UInt32(conv(v).ok_or_else(bad)?),
                    C_UINT64 => Value::UInt64(conv(v).ok_or_else(bad)?),
                    C_ENUM_VALUE => Value::Enum(conv(v).ok_or_else(bad)?),
                    C_BINARY => Value::Binary(v.as_binary().ok_or_else(bad)?.to_vec()),
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        })
    }
}

/// Text forms `confd_pp_value()` prints for the value types that have no
/// [`Value`] variant (dates, durations, decimal64, bit sets). Pure
/// functions of the fields; the caller reads them out of the C value.
pub mod pp {
    use std::fmt::Write as _;

    /// `CONFD_TIMEZONE_UNDEF`: the value carries no time zone.
    pub const TIMEZONE_UNDEF: i8 = -111;

    /// Bytes as upper-case hex digits, as xs:hexBinary writes them.
    pub fn hex_upper(b: &[u8]) -> String {
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02X}");
            s
        })
    }

    /// Bytes as yang:hex-string writes them: lower-case pairs joined by
    /// ':'.
    pub fn hex_colon(b: &[u8]) -> String {
        let parts: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        parts.join(":")
    }

    /// The time-zone suffix: "" without a zone, "Z" for UTC, else
    /// "+hh:mm" / "-hh:mm" (`tz` in hours, `tz_min` in minutes, either may
    /// carry the sign).
    pub fn zone(tz: i8, tz_min: i8) -> String {
        if tz == TIMEZONE_UNDEF {
            return String::new();
        }
        if tz == 0 && tz_min == 0 {
            return "Z".to_owned();
        }
        let neg = tz < 0 || (tz == 0 && tz_min < 0);
        let (h, m) = (i32::from(tz).abs(), i32::from(tz_min).abs());
        format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })
    }

    /// Seconds with their fraction: "05" or "05.000120" (micro > 0).
    fn secs(sec: u8, micro: u32) -> String {
        if micro == 0 {
            format!("{sec:02}")
        } else {
            format!("{sec:02}.{micro:06}")
        }
    }

    /// yang:date-and-time: "2026-11-29T22:10:05.5+01:00".
    #[allow(clippy::too_many_arguments)]
    pub fn datetime(
        year: i16,
        month: u8,
        day: u8,
        hour: u8,
        min: u8,
        sec: u8,
        micro: u32,
        tz: i8,
        tz_min: i8,
    ) -> String {
        format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{}{}",
            secs(sec, micro),
            zone(tz, tz_min)
        )
    }

    /// xs:date: "2026-11-29" with its zone.
    pub fn date(year: i16, month: u8, day: u8, tz: i8, tz_min: i8) -> String {
        format!("{year:04}-{month:02}-{day:02}{}", zone(tz, tz_min))
    }

    /// xs:time: "22:10:05" with its fraction and zone.
    pub fn time(hour: u8, min: u8, sec: u8, micro: u32, tz: i8, tz_min: i8) -> String {
        format!(
            "{hour:02}:{min:02}:{}{}",
            secs(sec, micro),
            zone(tz, tz_min)
        )
    }

    /// xs:duration: "P1Y2M3DT4H5M6.000007S", zero parts left out, "PT0S"
    /// for a zero duration.
    pub fn duration(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micro: u32) -> String {
        let mut out = String::from("P");
        for (n, unit) in [(y, 'Y'), (mo, 'M'), (d, 'D')] {
            if n != 0 {
                let _ = write!(out, "{n}{unit}");
            }
        }
        if h != 0 || mi != 0 || s != 0 || micro != 0 || out.len() == 1 {
            out.push('T');
            for (n, unit) in [(h, 'H'), (mi, 'M')] {
                if n != 0 {
                    let _ = write!(out, "{n}{unit}");
                }
            }
            if micro != 0 {
                let _ = write!(out, "{s}.{micro:06}S");
            } else if s != 0 || out.ends_with('T') {
                let _ = write!(out, "{s}S");
            }
        }
        out
    }

    /// decimal64 with `fd` fraction digits (1..=18): "-12.50"; any other
    /// `fd` gives "invalid64<N>", as ConfD documents.
    pub fn decimal64(value: i64, fd: u8) -> String {
        if !(1..=18).contains(&fd) {
            return format!("invalid64<{value}>");
        }
        let p = 10u64.pow(u32::from(fd));
        let mag = value.unsigned_abs();
        format!(
            "{}{}.{:0w$}",
            if value < 0 { "-" } else { "" },
            mag / p,
            mag % p,
            w = usize::from(fd)
        )
    }

    /// A C_BITBIG bit array (little-endian bytes) as "bits<X>", X in hex
    /// without leading zeros.
    pub fn bitbig(le: &[u8]) -> String {
        let digits: String = le.iter().rev().map(|x| format!("{x:02x}")).collect();
        let t = digits.trim_start_matches('0');
        format!("bits<{}>", if t.is_empty() { "0" } else { t })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_term() {
        let vals = [
            Value::NoExists,
            Value::Buf(b"www".to_vec()),
            Value::Int8(-8),
            Value::Int16(-1600),
            Value::Int32(-32),
            Value::Int64(i64::MIN),
            Value::UInt8(255),
            Value::UInt16(65535),
            Value::UInt32(u32::MAX),
            Value::UInt64(u64::MAX),
            Value::Double(2.5),
            Value::Bool(true),
            Value::Bool(false),
            Value::Ipv4("10.0.0.2".parse().unwrap()),
            Value::Ipv6("2001:db8::1".parse().unwrap()),
            Value::Enum(3),
            Value::Binary(vec![0, 1, 255]),
        ];
        for v in vals {
            let t = v.to_term();
            assert_eq!(
                Value::from_term(&Term::decode(&t.encode()).unwrap()).unwrap(),
                v
            );
        }
    }

    #[test]
    fn spec_shapes() {
        assert_eq!(Value::Int32(7).to_term(), Term::int(7));
        assert_eq!(
            Value::UInt32(7).to_term(),
            Term::Tuple(vec![Term::int(12), Term::int(7)])
        );
        assert_eq!(
            Value::Ipv4("127.0.0.1".parse().unwrap()).to_term().encode(),
            [131, 104, 4, 97, 127, 97, 0, 97, 0, 97, 1]
        );
        assert!(Value::from_term(&Term::Tuple(vec![Term::int(6), Term::int(300)])).is_err());
        assert!(Value::from_term(&Term::atom("maybe")).is_err());
        assert!(Value::from_term(&Term::Float(f64::NAN)).is_err());
        assert!(Value::from_term(&Term::Float(f64::INFINITY)).is_err());
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(Value::parse("uint16", "8080").unwrap(), Value::UInt16(8080));
        assert!(Value::parse("uint8", "300").is_err());
        assert!(Value::parse("double", "NaN").is_err());
        assert!(Value::parse("double", "inf").is_err());
        assert_eq!(Value::parse("binary", "00ff").unwrap().to_string(), "00ff");
        assert_eq!(Value::parse("ipv6", "::1").unwrap().to_string(), "::1");
    }

    #[test]
    fn pp_forms() {
        use super::pp::*;
        assert_eq!(hex_upper(&[0, 0xab]), "00AB");
        assert_eq!(hex_colon(&[0x0a, 0xff]), "0a:ff");
        assert_eq!(zone(TIMEZONE_UNDEF, 0), "");
        assert_eq!(zone(0, 0), "Z");
        assert_eq!(zone(-1, -30), "-01:30");
        assert_eq!(zone(0, -30), "-00:30");
        assert_eq!(zone(5, 45), "+05:45");
        assert_eq!(
            datetime(2026, 11, 29, 22, 10, 5, 500000, 1, 0),
            "2026-11-29T22:10:05.500000+01:00"
        );
        assert_eq!(date(2026, 1, 2, 0, 0), "2026-01-02Z");
        assert_eq!(time(1, 2, 3, 0, TIMEZONE_UNDEF, 0), "01:02:03");
        assert_eq!(duration(1, 2, 3, 4, 5, 6, 7), "P1Y2M3DT4H5M6.000007S");
        assert_eq!(duration(0, 0, 1, 0, 0, 0, 0), "P1D");
        assert_eq!(duration(0, 0, 0, 0, 0, 0, 0), "PT0S");
        assert_eq!(decimal64(-1250, 2), "-12.50");
        assert_eq!(decimal64(5, 3), "0.005");
        assert_eq!(decimal64(5, 0), "invalid64<5>");
        assert_eq!(decimal64(i64::MIN, 18), "-9.223372036854775808");
        assert_eq!(bitbig(&[0x01, 0x80, 0x00]), "bits<8001>");
        assert_eq!(bitbig(&[]), "bits<0>");
    }
}
