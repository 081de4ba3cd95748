//! Logging to stderr: one line per event, `2026-11-22T00:00:00.123Z INFO ha: ...`.
//!
//! Lines are bounded and inert whatever a peer sent: the message is formatted
//! through a writer that escapes control characters (a newline in a node id
//! becomes `\n`, so it cannot start a forged line) and stops formatting at
//! [`MAX_LINE_BYTES`], before the rest of a huge argument is ever rendered.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: Level) -> bool {
    l as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Longest message text of one log line, in bytes (after escaping); a
/// longer message is cut and ends in `...(cut)`.
pub const MAX_LINE_BYTES: usize = 4096;

/// Formats into `out`, escaping control characters, until `left` runs out.
struct Inert<'a> {
    out: &'a mut String,
    left: usize,
    cut: bool,
}

impl std::fmt::Write for Inert<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            let start = self.out.len();
            match c {
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(self.out, "\\u{{{:x}}}", c as u32);
                }
                c => self.out.push(c),
            }
            let n = self.out.len() - start;
            if n > self.left {
                self.out.truncate(start);
                self.cut = true;
                return Err(std::fmt::Error);
            }
            self.left -= n;
        }
        Ok(())
    }
}

/// The message text as it goes into a log line: control characters
/// escaped, at most [`MAX_LINE_BYTES`] bytes (then `...(cut)`).
pub fn inert(msg: std::fmt::Arguments<'_>) -> String {
    let mut out = String::new();
    let mut w = Inert {
        out: &mut out,
        left: MAX_LINE_BYTES,
        cut: false,
    };
    let _ = std::fmt::write(&mut w, msg);
    if w.cut {
        out.push_str("...(cut)");
    }
    out
}

pub fn write(l: Level, target: &str, msg: std::fmt::Arguments<'_>) {
    if !enabled(l) {
        return;
    }
    let line = format!(
        "{} {} {}: {}\n",
        timestamp(SystemTime::now()),
        l.name(),
        target,
        inert(msg)
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The window of a throttled warning.
pub const THROTTLE_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);
/// Lines of one throttled warning logged per [`THROTTLE_PERIOD`]: a few distinct events
/// close together are all seen; a flood costs at most this many lines per window.
pub const THROTTLE_BURST: u32 = 10;

/// A warning that an attacker could repeat at will (a refused connection):
/// logged at most [`THROTTLE_BURST`] times per [`THROTTLE_PERIOD`]; the first line of the
/// next window says how many were not.
#[derive(Default)]
pub struct Throttle {
    window: Option<std::time::Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            window: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Counts one occurrence; true when it is to be logged.
    fn admit(&mut self, now: std::time::Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= THROTTLE_PERIOD)
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= THROTTLE_BURST {
            self.suppressed += 1;
            return false;
        }
        self.in_window += 1;
        true
    }

    pub fn warn(&mut self, target: &str, msg: &str) {
        if let Some(more) = self.take(std::time::Instant::now()) {
            write_throttled(target, format_args!("{msg}"), more);
        }
    }

    /// Counts one occurrence; when it is to be logged, how many were suppressed before it.
    fn take(&mut self, now: std::time::Instant) -> Option<u64> {
        self.admit(now)
            .then(|| std::mem::take(&mut self.suppressed))
    }
}

/// One line of a throttled warning, with the count of those suppressed before it.
fn write_throttled(target: &str, msg: std::fmt::Arguments<'_>, more: u64) {
    if more > 0 {
        write(
            Level::Warn,
            target,
            format_args!("{msg} (and {more} more like it in the last seconds)"),
        );
    } else {
        write(Level::Warn, target, msg);
    }
}

/// Throttles for [`peer_warn!`], one per call site.
pub static PEER_WARNS: std::sync::Mutex<Vec<(&'static str, u32, Throttle)>> =
    std::sync::Mutex::new(Vec::new());

/// A WARN a connecting peer causes at will (before it proved anything):
/// throttled per call site like [`Throttle`].
pub fn peer_warn(site: (&'static str, u32), target: &str, msg: std::fmt::Arguments<'_>) {
    if !enabled(Level::Warn) {
        return;
    }
    let mut v = PEER_WARNS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match v.iter().position(|(f, l, _)| (*f, *l) == site) {
        Some(i) => i,
        None => {
            v.push((site.0, site.1, Throttle::new()));
            v.len() - 1
        }
    };
    let more = v[i].2.take(std::time::Instant::now());
    drop(v);
    if let Some(more) = more {
        write_throttled(target, msg, more);
    }
}

#[macro_export]
macro_rules! error { ($t:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Error, $t, format_args!($($a)*)) } }
#[macro_export]
macro_rules! warn { ($t:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Warn, $t, format_args!($($a)*)) } }
/// A WARN a connecting peer can cause at will: throttled per call site
/// (`THROTTLE_BURST` lines per `THROTTLE_PERIOD`, with how many were not logged).
#[macro_export]
macro_rules! peer_warn { ($t:expr, $($a:tt)*) => { $crate::log::peer_warn((file!(), line!()), $t, format_args!($($a)*)) } }
#[macro_export]
macro_rules! info { ($t:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Info, $t, format_args!($($a)*)) } }
#[macro_export]
macro_rules! debug { ($t:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Debug, $t, format_args!($($a)*)) } }

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_305_600_123); // 2026-11-22
        assert_eq!(timestamp(t), "2026-11-22T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(timestamp(t), "2000-02-29T01:01:01.000Z");
    }

    #[test]
    fn messages_are_escaped_and_cut_before_formatting() {
        let id = "n2\n2026-11-22T00:00:00.000Z INFO ha: this node is now PRIMARY";
        let m = inert(format_args!("secondary {id} refused"));
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("n2\\n2026"), "{m}");
        assert_eq!(inert(format_args!("a\u{1b}[31mb")), "a\\u{1b}[31mb");
        // A huge argument is not rendered past the limit: a Display that
        // counts what it was asked to write shows formatting stopped.
        struct Huge(std::cell::Cell<usize>);
        impl std::fmt::Display for Huge {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for _ in 0..1_000_000 {
                    self.0.set(self.0.get() + 1);
                    f.write_str("xxxxxxxxxx")?;
                }
                Ok(())
            }
        }
        let h = Huge(std::cell::Cell::new(0));
        let m = inert(format_args!("{h}"));
        assert_eq!(m.len(), MAX_LINE_BYTES + "...(cut)".len());
        assert!(h.0.get() <= MAX_LINE_BYTES / 10 + 1, "{}", h.0.get());
    }
}
