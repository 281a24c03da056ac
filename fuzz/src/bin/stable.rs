#![forbid(unsafe_code)]
//! The guard target's checks on stable, without libFuzzer: random
//! structured requests (heads from a list of good and bad fields, bodies
//! with lengths and chunks, then a few random byte mutations), cut at
//! random points, through `tollgate_fuzz::check_split` for N seconds.
//!
//! `cargo run --release --bin stable -- --seconds 60 [--seed S]`; a found
//! discrepancy is shrunk, printed (bytes escaped) and exits 1.

use std::time::{Duration, Instant};

use tollgate_fuzz::{check_split, lenient_trailers_from_env, End};

const EOLS: [&[u8]; 5] = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"];
const METHODS: [&[u8]; 6] = [b"GET", b"POST", b"PUT", b"CONNECT", b"G@T", b"PRI"];
const TARGETS: [&[u8]; 5] = [b"/", b"/a?b=c", b"*", b"/\x80", b"/ x"];
const VERSIONS: [&[u8]; 5] = [
    b"HTTP/1.1",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"http/1.1",
];
const LENGTHS: [&str; 10] = [
    "5, 5",
    "+5",
    " 7 ",
    "0x5",
    "5,",
    "",
    "5 5",
    "00000000000000000000001",
    "18446744073709551616",
    "3,4",
];
const CODINGS: [&str; 14] = [
    "chunked",
    "chunked",
    "chunked",
    "CHUNKED",
    " chunked ",
    "gzip, chunked",
    "chunked, gzip",
    "chunked,",
    "",
    "chunked;x=1",
    "gzip;q=1, chunked",
    "\"chunked\"",
    "identity",
    "chunked, chunked",
];
const OTHERS: [&[u8]; 9] = [
    b"X-A: b",
    b"x_y: z",
    b"Bad Name: v",
    b" folded",
    b"X: \x01",
    b"X:\x80",
    b"Accept: */*",
    b"Host : a",
    b"X:",
];

struct Gen(fastrand::Rng);

impl Gen {
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.0.usize(..from.len())]
    }
    fn chance(&mut self, percent: u8) -> bool {
        self.0.u8(..100) < percent
    }
    fn eol(&mut self) -> &'static [u8] {
        if self.chance(85) {
            b"\r\n"
        } else {
            self.pick(&EOLS)
        }
    }

    fn message(&mut self, out: &mut Vec<u8>) {
        if self.chance(10) {
            out.extend_from_slice(self.eol());
        }
        let (m, t, v) = (
            self.pick(&METHODS),
            self.pick(&TARGETS),
            self.pick(&VERSIONS),
        );
        let (m, t, v) = if self.chance(70) {
            (&b"POST"[..], &b"/"[..], &b"HTTP/1.1"[..])
        } else {
            (m, t, v)
        };
        out.extend_from_slice(&[m, b" ", t, b" ", v].concat());
        out.extend_from_slice(self.eol());
        let mut length = None;
        let mut chunked = false;
        if self.chance(90) {
            out.extend_from_slice(b"Host: a");
            out.extend_from_slice(self.eol());
        }
        for _ in 0..self.0.usize(..5) {
            match self.0.u8(..6) {
                0 => out.extend_from_slice(b"Host: b"),
                1 | 2 => {
                    let n = self.0.usize(..12);
                    length = Some(n);
                    let value = if self.chance(75) {
                        n.to_string()
                    } else {
                        self.pick(&LENGTHS).to_string()
                    };
                    out.extend_from_slice(
                        format!(
                            "{}: {value}",
                            self.pick(&["Content-Length", "content-length"])
                        )
                        .as_bytes(),
                    );
                }
                3 | 4 => {
                    chunked = true;
                    let value = self.pick(&CODINGS);
                    out.extend_from_slice(
                        format!(
                            "{}: {value}",
                            self.pick(&["Transfer-Encoding", "TRANSFER-ENCODING"])
                        )
                        .as_bytes(),
                    );
                }
                _ => out.extend_from_slice(self.pick(&OTHERS)),
            }
            out.extend_from_slice(self.eol());
        }
        for _ in 0..if self.chance(5) { 9 } else { 0 } {
            out.extend_from_slice(b"X: y\r\n");
        }
        out.extend_from_slice(self.eol());
        if chunked {
            for _ in 0..self.0.usize(..3) {
                let size = self.0.usize(1..12);
                out.extend_from_slice(format!("{size:x}").as_bytes());
                if self.chance(20) {
                    out.extend_from_slice(self.pick(&[
                        &b";a=b"[..],
                        b" ",
                        b"\t;x",
                        b";\"q\"",
                        b" x",
                    ]));
                }
                out.extend_from_slice(self.eol());
                out.extend((0..size).map(|_| self.0.u8(..)));
                out.extend_from_slice(self.eol());
            }
            out.extend_from_slice(b"0");
            out.extend_from_slice(self.eol());
            for _ in 0..self.0.usize(..3) {
                out.extend_from_slice(self.pick(&[&b"X-T: 1"[..], b"bad", b"Y: \x80"]));
                out.extend_from_slice(self.eol());
            }
            out.extend_from_slice(self.eol());
        } else if let Some(n) = length {
            let n = if self.chance(90) {
                n
            } else {
                n.saturating_sub(2) + self.0.usize(..4)
            };
            out.extend((0..n).map(|_| self.pick(b"ab\r\n GET")));
        }
    }

    fn input(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.chance(3) {
            out.extend((0..self.0.usize(..64)).map(|_| self.0.u8(..)));
            return out;
        }
        for _ in 0..self.0.usize(1..4) {
            self.message(&mut out);
        }
        if self.chance(30) {
            for _ in 0..self.0.usize(1..4) {
                let at = self.0.usize(..=out.len());
                match self.0.u8(..4) {
                    0 if at < out.len() => out[at] = self.0.u8(..),
                    1 if at < out.len() => {
                        out.remove(at);
                    }
                    2 => {
                        let len = self.0.usize(..8).min(out.len() - at);
                        let copy = out[at..at + len].to_vec();
                        out.splice(at..at, copy);
                    }
                    _ => out.insert(at, self.pick(b"\r\n :;,0\t\x00")),
                }
            }
        }
        out
    }
}

/// The smallest input found by dropping ranges that still fails.
fn shrink(mut data: Vec<u8>, lenient: bool) -> Vec<u8> {
    let fails = |d: &[u8]| check_split(d, &[], lenient).is_err();
    if !fails(&data) {
        return data;
    }
    let mut len = data.len() / 2;
    while len > 0 {
        let mut at = 0;
        while at + len <= data.len() {
            let mut smaller = data.clone();
            smaller.drain(at..at + len);
            if fails(&smaller) {
                data = smaller;
            } else {
                at += 1;
            }
        }
        len /= 2;
    }
    data
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seconds, mut seed) = (10u64, fastrand::u64(..));
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--seconds", Some(v)) => seconds = v,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("usage: stable [--seconds N] [--seed S]");
                std::process::exit(2);
            }
        }
    }
    let lenient = lenient_trailers_from_env();
    let mut gen = Gen(fastrand::Rng::with_seed(seed));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut inputs, mut heads, mut refused, mut stricter, mut stops, mut open) =
        (0u64, 0, 0, 0, 0, 0);
    let mut example = None;
    println!("guard (stable driver): seed {seed}, {seconds} s");
    while Instant::now() < deadline {
        for _ in 0..256 {
            let data = gen.input();
            let mut cuts: Vec<usize> = (0..gen.0.usize(..6))
                .map(|_| gen.0.usize(..=data.len()))
                .collect();
            cuts.sort_unstable();
            inputs += 1;
            match check_split(&data, &cuts, lenient) {
                Ok(o) => {
                    heads += o.heads;
                    refused += o.refused;
                    if o.stricter > 0 && example.is_none() {
                        example = Some(data.clone());
                    }
                    stricter += o.stricter;
                    match o.end {
                        Some(End::Stop(_)) => stops += 1,
                        _ => open += 1,
                    }
                }
                Err(why) => {
                    println!("DISCREPANCY after {inputs} inputs: {why}");
                    println!("input (cut at {cuts:?}): {}", escape(&data));
                    let small = shrink(data, lenient);
                    println!("shrunk: {}", escape(&small));
                    if let Err(why) = check_split(&small, &[], lenient) {
                        println!("  {why}");
                    }
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "{inputs} inputs, {heads} heads judged by the reference ({refused} refused by both), \
         {stricter} refused only by the guard (allowed); reference stopped early on {stops}, \
         read to the end of {open}; no discrepancy"
    );
    if let Some(e) = example {
        println!("e.g. the guard is stricter on: {}", escape(&e));
    }
}

fn escape(data: &[u8]) -> String {
    format!("b\"{}\"", data.escape_ascii())
}
