//! The access log: one JSON line per request, written off the request path.
//!
//! The request path formats its line into one `String` and hands it to a
//! bounded channel with `try_send`; a writer thread drains the channel into
//! a buffered writer every few milliseconds and flushes once per drain. A full
//! channel (the disk cannot keep up) drops the line and counts it, so the
//! proxy never waits on the log.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// Where the access log goes: `off`, `stdout`, or a file path (appended).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    Off,
    #[default]
    Stdout,
    File(PathBuf),
}

impl FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" | "none" | "" => AccessLogTarget::Off,
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }
}

pub struct AccessLog {
    tx: SyncSender<String>,
    sent: AtomicU64,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

impl AccessLog {
    /// Open the target and start the writer thread; `None` for `Off`.
    pub fn open(target: &AccessLogTarget) -> std::io::Result<Option<Arc<AccessLog>>> {
        let out: Box<dyn std::io::Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        std::thread::Builder::new()
            .name("tollgate-access-log".into())
            .spawn(move || write_lines(rx, out, &w))?;
        Ok(Some(Arc::new(AccessLog {
            tx,
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written,
        })))
    }

    /// Queue a line (ending in a newline). Never blocks.
    pub fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines written so far, and lines dropped because the writer fell
    /// behind.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Wait (up to `timeout`) until every line queued so far is written.
    pub fn drain(&self, timeout: Duration) {
        let want = self.sent.load(Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        while self.written.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// How often the writer drains the queue. The writer polls rather than
/// blocking in `recv` so that a send never has to wake a sleeping thread:
/// at tens of thousands of requests a second, a wake (a futex call and a
/// context switch) per line cost more than the line itself.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

fn write_lines(rx: Receiver<String>, out: Box<dyn std::io::Write + Send>, written: &AtomicU64) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    loop {
        let mut n = 0;
        let open = loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                    n += 1;
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        if n > 0 {
            let _ = out.flush();
            written.fetch_add(n, Ordering::Relaxed);
        }
        if !open {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// Builds one JSON object on a line, with no intermediate values.
pub struct LineWriter {
    buf: String,
    first: bool,
}

impl LineWriter {
    pub fn new() -> Self {
        // A typical line is 400-500 bytes: one allocation, no regrowth.
        let mut buf = String::with_capacity(640);
        buf.push('{');
        Self { buf, first: true }
    }

    fn key(&mut self, k: &str) {
        self.buf.push_str(if self.first { "\"" } else { ",\"" });
        self.first = false;
        self.buf.push_str(k);
        self.buf.push_str("\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        json_string(&mut self.buf, v);
        self
    }

    /// A string field, or `null`.
    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.raw(k, "null"),
        }
    }

    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        push_u64(&mut self.buf, v, 1);
        self
    }

    /// Milliseconds with microsecond precision, from microseconds.
    pub fn ms(&mut self, k: &str, us: Option<u64>) -> &mut Self {
        match us {
            Some(us) => {
                self.key(k);
                push_u64(&mut self.buf, us / 1000, 1);
                self.buf.push('.');
                push_u64(&mut self.buf, us % 1000, 3);
                self
            }
            None => self.raw(k, "null"),
        }
    }

    pub fn raw(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.buf.push_str(v);
        self
    }

    /// RFC 3339 UTC time with milliseconds.
    pub fn time(&mut self, k: &str, t: SystemTime) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        // The date and time to the second change once a second: format
        // them once per thread and second.
        SECOND.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != d.as_secs() || c.1.is_empty() {
                c.1.clear();
                rfc3339(&mut c.1, UNIX_EPOCH + Duration::from_secs(d.as_secs()));
                c.1.truncate(19);
                c.0 = d.as_secs();
            }
            self.buf.push_str(&c.1);
        });
        self.buf.push('.');
        push_u64(&mut self.buf, u64::from(d.subsec_millis()), 3);
        self.buf.push_str("Z\"");
        self
    }

    pub fn hex128(&mut self, k: &str, v: u128) -> &mut Self {
        self.key(k);
        let mut out = [0u8; 34];
        out[0] = b'"';
        out[33] = b'"';
        crate::trace::hex(&mut out[1..33], &v.to_be_bytes());
        self.buf
            .push_str(std::str::from_utf8(&out).expect("hex is ASCII"));
        self
    }

    pub fn finish(mut self) -> String {
        self.buf.push_str("}\n");
        self.buf
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// `v` in decimal, zero-padded to `width` digits (`itoa`: two digits per
/// step from a table, where a loop of `% 10` took one).
fn push_u64(out: &mut String, v: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(v);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => {
                out.push_str(&s[start..i]);
                let _ = write!(out, "\\u{:04x}", c as u32);
                start = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(esc);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, without allocating.
fn rfc3339(out: &mut String, t: SystemTime) {
    let (year, month, day, h, m, sec) = crate::civil_time::civil(t);
    let millis = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{millis:03}Z"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json() {
        let mut w = LineWriter::new();
        w.str("a", "x\"y\\z\n\u{1}")
            .opt_str("b", None)
            .u64("c", 7)
            .ms("d", Some(1_234))
            .hex128("e", 0xab)
            .time("t", UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let line = w.finish();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], "x\"y\\z\n\u{1}");
        assert!(v["b"].is_null());
        assert_eq!(v["c"], 7);
        assert_eq!(v["d"].as_f64(), Some(1.234));
        assert_eq!(v["e"].as_str().unwrap().len(), 32);
        assert_eq!(v["t"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn numbers() {
        let mut s = String::new();
        push_u64(&mut s, 0, 1);
        push_u64(&mut s, 5, 3);
        push_u64(&mut s, 1234, 3);
        push_u64(&mut s, u64::MAX, 1);
        assert_eq!(s, format!("00051234{}", u64::MAX));
        let mut w = LineWriter::new();
        w.ms("a", Some(5)).ms("b", Some(12_000)).ms("c", None);
        assert_eq!(w.finish(), "{\"a\":0.005,\"b\":12.000,\"c\":null}\n");
    }

    #[test]
    fn dates_before_and_after_leap_days() {
        let mut s = String::new();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn targets_parse() {
        assert_eq!("off".parse(), Ok(AccessLogTarget::Off));
        assert_eq!("stdout".parse(), Ok(AccessLogTarget::Stdout));
        assert_eq!(
            "/tmp/a.log".parse(),
            Ok(AccessLogTarget::File("/tmp/a.log".into()))
        );
    }
}
