#![forbid(unsafe_code)]
//! The HTTP/1 framing guard (`data-plane/src/http1/guard.rs`) and the
//! request-head rules (`syntax::check_head`) against a small, strict
//! reference parser.
//!
//! [`check`] feeds the same bytes to the guard whole, split at the given
//! points, and byte by byte, and asserts:
//!
//! 1. the verdicts the request path would take do not depend on the reads;
//! 2. once the guard refuses a request, it refuses every later one (fail
//!    closed);
//! 3. wherever the [`reference`] is confident, the guard agrees with it: it
//!    never accepts a head the reference refuses, a refusal has one of the
//!    statuses the reference allows, and where the reference says the
//!    peer (hyper) reads a body on past the point a lenient parser would
//!    end it, the guard accepts nothing after. The guard may be stricter
//!    than the reference (refuse a head it accepts, or lose the framing);
//!    that is counted, never an error.
//!
//! The libFuzzer target (`fuzz_targets/guard.rs`, nightly) and the stable
//! driver (`src/bin/stable.rs`) both call [`check`].

use std::sync::Arc;

use tollgate_data_plane::http1::guard::{FramingGuard, Verdict, Verdicts};
use tollgate_data_plane::http1::syntax::HeadError;

/// The field limit the guard runs with: small, so 431 is reachable.
pub const MAX_FIELDS: usize = 8;

/// Chunk sizes of more hex digits than this are the gateway's limit (a
/// u64), not the RFC's.
const MAX_CHUNK_DIGITS: usize = 16;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The status of a refused head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 400
    Bad,
    /// 501: a transfer coding the gateway does not implement.
    NotImplemented,
    /// 431: more fields than [`MAX_FIELDS`].
    TooLarge,
}

pub fn class(e: HeadError) -> Class {
    match e {
        HeadError::BadFraming(_) => Class::Bad,
        HeadError::UnknownCoding => Class::NotImplemented,
        HeadError::TooLarge => Class::TooLarge,
    }
}

/// What the reference expects of one complete request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Accept,
    /// Refused, with any one of these statuses (a head that breaks several
    /// rules may get the status of any of them).
    Refuse(Vec<Class>),
}

/// Where the reference stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The bytes ran out at a message boundary, or inside a message that is
    /// well-formed so far.
    Open,
    /// Outside the strict subset, or the peer refuses the body and closes
    /// the connection: nothing is expected after this point.
    Stop(&'static str),
    /// The peer reads the body on where a lenient parser ends it: the
    /// guard must accept no later request (it must be lost).
    Desync(&'static str),
}

/// The reference's verdicts: one per complete head, in order, and where it
/// stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub heads: Vec<Expect>,
    pub end: End,
}

/// The body framing of an accepted head.
enum Framing {
    Length(u64),
    Chunked,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Trim optional whitespace (SP / HTAB) at both ends.
fn ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One line of a head: its content (without CRLF or LF) and where the next
/// line starts. `Ok(None)`: the bytes end before the line does. A CR
/// anywhere but right before the LF is outside the subset.
fn head_line(data: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    let Some(nl) = data[at..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let mut line = &data[at..at + nl];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    if line.contains(&b'\r') {
        return Err("bare CR in a head");
    }
    Ok(Some((line, at + nl + 1)))
}

/// The request line `method SP target SP HTTP/1.x`, strictly: a token, one
/// space, visible ASCII, one space, 1.0 or 1.1. Returns the minor version.
fn request_line(line: &[u8]) -> Option<u8> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_token(method) || target.is_empty() {
        return None;
    }
    if !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    match version {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        _ => None,
    }
}

/// A field line `name ":" OWS value OWS`, strictly: a token name, no space
/// before the colon, a value of visible ASCII, SP, HTAB or obs-text.
fn field_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], ows(&line[colon + 1..]));
    let vchar = |b: u8| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80;
    (is_token(name) && value.iter().all(|&b| vchar(b))).then_some((name, value))
}

/// RFC 9112 and 9110 on a parsed head: exactly one Host on HTTP/1.1 (at
/// most one on 1.0); Content-Length digits only (a list of equal values is
/// one length; more than 19 digits is the gateway's limit); never with
/// Transfer-Encoding; Transfer-Encoding only on 1.1, with `chunked` (no
/// parameters) last and once, any other coding 501. Policy, stricter than
/// the RFC's "ignore empty list elements": an empty element is refused.
fn rules(minor: u8, fields: &[(&[u8], &[u8])]) -> Result<Framing, Vec<Class>> {
    let mut errs = Vec::new();
    let named = |n: &'static str| {
        fields
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| *v)
    };
    if fields.len() > MAX_FIELDS {
        errs.push(Class::TooLarge);
    }
    let hosts = named("host").count();
    if hosts > 1 || (minor == 1 && hosts == 0) {
        errs.push(Class::Bad);
    }
    let mut length: Option<u64> = None;
    let mut has_length = false;
    for value in named("content-length") {
        has_length = true;
        for item in value.split(|&b| b == b',') {
            let item = ows(item);
            let ok = (1..=19).contains(&item.len()) && item.iter().all(u8::is_ascii_digit);
            let n = ok.then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok());
            match n.flatten() {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => errs.push(Class::Bad),
            }
        }
    }
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut has_te = false;
    for value in named("transfer-encoding") {
        has_te = true;
        codings.extend(value.split(|&b| b == b','));
    }
    if has_te {
        if has_length || minor == 0 {
            errs.push(Class::Bad);
        }
        let mut chunked = Vec::new();
        for (i, item) in codings.iter().enumerate() {
            let item = ows(item);
            let (coding, params) = match item.iter().position(|&b| b == b';') {
                Some(p) => (ows(&item[..p]), Some(&item[p + 1..])),
                None => (item, None),
            };
            if coding.eq_ignore_ascii_case(b"chunked") && params.is_none() {
                chunked.push(i);
            } else if coding.eq_ignore_ascii_case(b"chunked") {
                // chunked defines no parameters: malformed (400), or a
                // coding the gateway does not know (501; the guard's view).
                errs.extend([Class::Bad, Class::NotImplemented]);
            } else if !is_token(coding) {
                // Empty, or not a token.
                errs.push(Class::Bad);
            } else {
                // An unknown coding; parameters it may carry are not
                // judged, so 400 is as right as 501 then.
                errs.push(Class::NotImplemented);
                if params.is_some() {
                    errs.push(Class::Bad);
                }
            }
        }
        if chunked.len() != 1 || chunked[0] + 1 != codings.len() {
            errs.push(Class::Bad);
        }
    }
    match (errs.is_empty(), has_te) {
        (true, true) => Ok(Framing::Chunked),
        (true, false) => Ok(Framing::Length(length.unwrap_or(0))),
        (false, _) => Err(errs),
    }
}

/// The reference parser: the per-request verdicts of `data` read as one
/// HTTP/1.1 connection from its start.
///
/// Heads: empty lines before a request line are skipped; lines end in CRLF
/// or a bare LF (RFC 9112 section 2.2); anything outside the strict subset
/// of [`request_line`] and [`field_line`] (obs-fold, bare CR, spaces before
/// a colon, control bytes) stops the reference, since parsers may
/// legitimately differ there.
///
/// Chunked bodies (RFC 9112 section 7.1) need CRLF: section 2.2's bare LF
/// covers the start line and fields, and hyper, which reads the bodies
/// the guard follows, refuses a chunk line without CRLF and closes (the
/// reference stops). In the trailer section hyper reads a bare LF as part
/// of a trailer line and ends the section only at CRLF CRLF, so a parser
/// that ends it at a bare LF starts the next request where hyper does not:
/// [`End::Desync`], unless `lenient_trailers` (then it stops instead).
pub fn reference(data: &[u8], lenient_trailers: bool) -> Reference {
    let mut heads = Vec::new();
    let mut at = 0;
    let end = loop {
        // A message boundary: HTTP/2's preface, empty lines, a head.
        if data[at..].starts_with(H2_PREFACE) {
            break End::Stop("HTTP/2 preface");
        }
        match data[at..] {
            [b'\r', b'\n', ..] => {
                at += 2;
                continue;
            }
            [b'\n', ..] => {
                at += 1;
                continue;
            }
            [] | [b'\r'] => break End::Open,
            [b'\r', ..] => break End::Stop("bare CR before a request line"),
            _ => {}
        }
        let (minor, mut next) = match head_line(data, at) {
            Ok(Some((line, next))) => match request_line(line) {
                Some(minor) => (minor, next),
                None => break End::Stop("request line outside the strict subset"),
            },
            Ok(None) => break End::Open,
            Err(why) => break End::Stop(why),
        };
        let mut fields = Vec::new();
        let complete = loop {
            match head_line(data, next) {
                Ok(Some((line, after))) => {
                    next = after;
                    if line.is_empty() {
                        break Ok(true);
                    }
                    match field_line(line) {
                        Some(field) => fields.push(field),
                        None => break Err("field line outside the strict subset"),
                    }
                }
                Ok(None) => break Ok(false),
                Err(why) => break Err(why),
            }
        };
        match complete {
            Ok(true) => {}
            Ok(false) => break End::Open,
            Err(why) => break End::Stop(why),
        }
        at = next;
        let framing = match rules(minor, &fields) {
            Ok(framing) => framing,
            Err(classes) => {
                // Every refusal closes the connection.
                heads.push(Expect::Refuse(classes));
                break End::Stop("refused: the connection closes");
            }
        };
        heads.push(Expect::Accept);
        match framing {
            Framing::Length(n) => match at.checked_add(n as usize) {
                Some(end) if end <= data.len() && n <= usize::MAX as u64 => at = end,
                _ => break End::Open,
            },
            Framing::Chunked => match chunked(data, at, lenient_trailers) {
                Ok(end) => at = end,
                Err(end) => break end,
            },
        }
    };
    Reference { heads, end }
}

/// A chunked body from `at`: where it ends, or why the reference stops.
fn chunked(data: &[u8], mut at: usize, lenient_trailers: bool) -> Result<usize, End> {
    let byte = |i: usize| data.get(i).copied();
    let refused = |what| Err(End::Stop(what));
    loop {
        // chunk-size [ BWS ";" chunk-ext ] CRLF. The extension's own syntax
        // does not move where the line ends; hyper takes any byte in it
        // but CR and LF.
        let digits = data[at..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if at + digits == data.len() {
            return Err(End::Open);
        }
        if digits == 0 {
            return refused("chunk size: not a hex digit");
        }
        if digits > MAX_CHUNK_DIGITS {
            return refused("chunk size over 16 hex digits (the gateway's limit)");
        }
        let hex = std::str::from_utf8(&data[at..at + digits]).expect("hex digits");
        let size = u64::from_str_radix(hex, 16).expect("at most 16 hex digits");
        at += digits;
        while matches!(byte(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if byte(at) == Some(b';') {
            while !matches!(byte(at), None | Some(b'\r' | b'\n')) {
                at += 1;
            }
        }
        match (byte(at), byte(at + 1)) {
            (None, _) | (Some(b'\r'), None) => return Err(End::Open),
            (Some(b'\r'), Some(b'\n')) => at += 2,
            _ => return refused("chunk size line without CRLF"),
        }
        if size == 0 {
            break;
        }
        // chunk-data CRLF
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Err(End::Open);
        };
        match (byte(end), byte(end + 1)) {
            (None, _) | (Some(b'\r'), None) => return Err(End::Open),
            (Some(b'\r'), Some(b'\n')) => at = end + 2,
            _ => return refused("chunk data without CRLF after it"),
        }
    }
    // trailer-section CRLF: lines ending in CRLF, up to an empty one.
    loop {
        let line_end = data[at..].iter().position(|&b| b == b'\r' || b == b'\n');
        match line_end.map(|p| (at + p, data[at + p])) {
            None => return Err(End::Open),
            Some((_, b'\n')) if lenient_trailers => return refused("bare LF in trailers"),
            Some((_, b'\n')) => {
                return Err(End::Desync(
                    "bare LF in the trailer section: hyper reads on to CRLF CRLF",
                ))
            }
            Some((cr, _)) => match byte(cr + 1) {
                None => return Err(End::Open),
                Some(b'\n') if cr == at => return Ok(cr + 2),
                Some(b'\n') => at = cr + 2,
                Some(_) => return refused("bare CR in the trailer section"),
            },
        }
    }
}

/// What the request path would take from the guard after it read
/// `pieces`: the queued verdicts, then what `take` answers once they run
/// out (a refusal forever if the guard lost the framing, else `Ok`).
///
/// Each observation ends with an empty line fed on its own, so a head the
/// bytes leave unfinished is judged in every case (fed whole, the guard
/// may judge a malformed head before its end; split, it waits for the
/// end; hyper never serves such a head either way).
pub fn observe(pieces: &[&[u8]]) -> Vec<Verdict> {
    let verdicts = Arc::new(Verdicts::default());
    let mut guard = FramingGuard::new(verdicts.clone(), MAX_FIELDS);
    let mut total = 0;
    for piece in pieces {
        guard.feed(piece);
        total += piece.len();
    }
    guard.feed(b"\r\n\r\n");
    // At most one verdict per byte, and one more to see what follows.
    (0..total + 6).map(|_| verdicts.take()).collect()
}

/// What one passing [`check`] saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Heads the reference judged.
    pub heads: usize,
    /// Of those, refused by the reference.
    pub refused: usize,
    /// Heads the reference accepts and the guard refuses (allowed).
    pub stricter: usize,
    pub end: Option<End>,
}

/// The fuzz input as split points and bytes: the first byte says how many
/// split points (0 to 7) follow, two bytes each (little-endian, modulo the
/// length of the bytes); the rest are the bytes.
pub fn split_input(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let n = usize::from(n % 8).min(rest.len() / 2);
    let (points, data) = rest.split_at(n * 2);
    let mut cuts: Vec<usize> = points
        .chunks(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, data)
}

/// [`check_split`] on a fuzz input (see [`split_input`]).
pub fn check(input: &[u8], lenient_trailers: bool) -> Result<Outcome, String> {
    let (cuts, data) = split_input(input);
    check_split(data, &cuts, lenient_trailers)
}

/// `data` cut at the (sorted) points `cuts`.
pub fn cut<'d>(data: &'d [u8], cuts: &[usize]) -> Vec<&'d [u8]> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &c in cuts {
        let c = c.clamp(from, data.len());
        pieces.push(&data[from..c]);
        from = c;
    }
    pieces.push(&data[from..]);
    pieces
}

fn lost(v: &Verdict) -> bool {
    *v == Err(HeadError::BadFraming("framing not followed"))
}

/// The three properties of the module docs on `data` cut at `cuts`.
pub fn check_split(data: &[u8], cuts: &[usize], lenient_trailers: bool) -> Result<Outcome, String> {
    let whole = observe(&[data]);
    let split = observe(&cut(data, cuts));
    if split != whole {
        return Err(format!(
            "verdicts depend on the reads: whole {:?}, cut at {cuts:?} {:?}",
            trim(&whole),
            trim(&split)
        ));
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let by_byte = observe(&bytes);
    if by_byte != whole {
        return Err(format!(
            "verdicts depend on the reads: whole {:?}, byte by byte {:?}",
            trim(&whole),
            trim(&by_byte)
        ));
    }
    if let Some(first) = whole.iter().position(Result::is_err) {
        if let Some(later) = whole[first..].iter().position(Result::is_ok) {
            return Err(format!(
                "request {} accepted after request {first} was refused: {:?}",
                first + later,
                trim(&whole)
            ));
        }
    }
    let reference = reference(data, lenient_trailers);
    let mut outcome = Outcome {
        heads: reference.heads.len(),
        end: Some(reference.end),
        ..Outcome::default()
    };
    let mut refused_before = false;
    for (i, (want, got)) in reference.heads.iter().zip(&whole).enumerate() {
        match (want, got) {
            (Expect::Accept, Ok(())) => {}
            (Expect::Accept, Err(_)) => outcome.stricter += 1,
            (Expect::Refuse(classes), Ok(())) => {
                return Err(format!(
                    "request {i}: the reference refuses it ({classes:?}), the guard accepts it"
                ))
            }
            (Expect::Refuse(classes), Err(e)) => {
                outcome.refused += 1;
                if !refused_before && !lost(got) && !classes.contains(&class(*e)) {
                    return Err(format!(
                        "request {i}: the guard refuses it with {e:?}, the reference with one of {classes:?}"
                    ));
                }
            }
        }
        refused_before |= got.is_err();
    }
    if let End::Desync(why) = reference.end {
        let n = reference.heads.len();
        if whole[n..].iter().any(Result::is_ok) {
            return Err(format!(
                "after request {}: {why}, but the guard accepts a later request (verdicts {:?})",
                n.saturating_sub(1),
                trim(&whole)
            ));
        }
    }
    Ok(outcome)
}

/// Verdicts without the repeats of the last one at the end.
fn trim(v: &[Verdict]) -> &[Verdict] {
    let last = v.last();
    let keep = v.iter().rposition(|x| Some(x) != last).map_or(1, |p| p + 2);
    &v[..keep.min(v.len())]
}

/// `TOLLGATE_FUZZ_LENIENT_TRAILERS=1`: a bare LF in a chunked body's
/// trailer section stops the reference instead of demanding a lost guard
/// (to fuzz on past that known difference).
pub fn lenient_trailers_from_env() -> bool {
    std::env::var_os("TOLLGATE_FUZZ_LENIENT_TRAILERS").is_some_and(|v| v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(data: &[u8]) -> Reference {
        reference(data, false)
    }

    #[test]
    fn reference_on_known_messages() {
        let r = refs(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: b\n\n");
        assert_eq!(r.heads, vec![Expect::Accept, Expect::Accept]);
        assert_eq!(r.end, End::Open);
        let r = refs(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(r.heads, vec![Expect::Refuse(vec![Class::Bad])]);
        let r = refs(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(r.heads, vec![Expect::Refuse(vec![Class::NotImplemented])]);
        let body = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(refs(body).heads, vec![Expect::Accept, Expect::Accept]);
        let r = refs(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.heads, vec![Expect::Accept, Expect::Accept]);
        let r = refs(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n");
        assert!(matches!(r.end, End::Desync(_)));
    }

    #[test]
    fn the_guard_passes_on_known_messages() {
        for msg in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"\r\n\nGET / HTTP/1.0\n\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            for at in 0..=msg.len() {
                check_split(msg, &[at], false).unwrap();
            }
        }
    }

    #[test]
    fn split_input_reads_points_then_bytes() {
        let (cuts, data) = split_input(&[2, 3, 0, 1, 0, b'a', b'b', b'c', b'd']);
        assert_eq!(cuts, vec![1, 3]);
        assert_eq!(data, b"abcd");
        assert_eq!(cut(data, &cuts), vec![&b"a"[..], b"bc", b"d"]);
    }
}
