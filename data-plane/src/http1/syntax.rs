//! The HTTP/1.1 syntax both codecs and the guard share (RFC 9110/9112):
//! one definition of a length, a token list, a field's meaning, and the
//! rules a request head must meet, so no two places can disagree.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

/// The most bytes of one head (request or response) held while parsing:
/// a longer request head gets 431 and a close.
pub const MAX_HEAD: usize = 64 * 1024;

/// Which server codec reads plain-TCP HTTP/1 connections first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Our codec (`server`), handing a connection to hyper at the first
    /// request it does not take.
    #[default]
    Fast,
    /// hyper alone, behind the framing guard: for routing around a bug in
    /// the fast path.
    Hyper,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fast" => Ok(Engine::Fast),
            "hyper" => Ok(Engine::Hyper),
            other => Err(format!("unknown HTTP/1 engine {other:?} (fast or hyper)")),
        }
    }
}

/// The limits table for hostile or broken clients: both engines take
/// every number from here.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_uri_bytes: usize,
    /// Sum of header name and value lengths.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// The whole head, request line included (hyper's read buffer).
    pub max_head_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// A client that accepts no response bytes for this long is dropped.
    pub client_send_timeout: Duration,
    pub engine: Engine,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_head_bytes: MAX_HEAD,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            client_send_timeout: Duration::from_secs(60),
            engine: Engine::Fast,
        }
    }
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Fields that describe one hop, never the message (RFC 9110 §7.6.1).
pub static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// What a field's name (any case) means to a proxy: the framing fields,
/// the rest of `HOP_BY_HOP`, `Date`, or anything else. Found by its length
/// and at most two comparisons, where going down the list took nine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldName {
    TransferEncoding,
    ContentLength,
    Connection,
    /// One of `HOP_BY_HOP` not named above.
    HopByHop,
    Date,
    Other,
}

impl FieldName {
    pub fn of(name: &[u8]) -> Self {
        let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        match name.len() {
            2 if is(&header::TE) => Self::HopByHop,
            4 if is(&header::DATE) => Self::Date,
            7 if is(&header::TRAILER) || is(&header::UPGRADE) => Self::HopByHop,
            10 if is(&header::CONNECTION) => Self::Connection,
            10 if is(&KEEP_ALIVE) => Self::HopByHop,
            14 if is(&header::CONTENT_LENGTH) => Self::ContentLength,
            16 if is(&PROXY_CONNECTION) => Self::HopByHop,
            17 if is(&header::TRANSFER_ENCODING) => Self::TransferEncoding,
            18 if is(&header::PROXY_AUTHENTICATE) => Self::HopByHop,
            19 if is(&header::PROXY_AUTHORIZATION) => Self::HopByHop,
            _ => Self::Other,
        }
    }

    /// One of `HOP_BY_HOP`.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Self::TransferEncoding | Self::Connection | Self::HopByHop
        )
    }
}

/// The one length all `Content-Length` lines and list items agree on
/// (RFC 9112 section 6.3: "5, 5" is 5), or why there is none.
pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, &'static str> {
    h.get_all(header::CONTENT_LENGTH)
        .iter()
        .try_fold(None, |length, v| add_length(length, v.as_bytes()))
}

/// The length so far with one more Content-Length line.
pub fn add_length(mut length: Option<u64>, line: &[u8]) -> Result<Option<u64>, &'static str> {
    for part in line.split(|b| *b == b',') {
        let n = digits(part).ok_or("Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("differing Content-Length values");
        }
        length = Some(n);
    }
    Ok(length)
}

/// Whether a comma-separated header value (`Connection`) lists `token`.
pub fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A decimal length: ASCII digits only, around optional spaces. `+5`,
/// `0x5`, `5.0` and the empty value are not lengths.
pub fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The transfer codings `Transfer-Encoding` lines list besides `chunked`,
/// as one value (`gzip`), or `None`. A proxy undoes only the chunked
/// framing of its hop; the other codings are the body's, and the next hop
/// must be told of them (as `gzip, chunked` again).
pub fn codings_besides_chunked<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Option<http::HeaderValue> {
    let mut kept = Vec::new();
    for item in values.flat_map(|v| v.split(|b| *b == b',')) {
        let item = item.trim_ascii();
        if item.is_empty() || item.eq_ignore_ascii_case(b"chunked") {
            continue;
        }
        if !kept.is_empty() {
            kept.extend_from_slice(b", ");
        }
        kept.extend_from_slice(item);
    }
    if kept.is_empty() {
        return None;
    }
    http::HeaderValue::from_bytes(&kept).ok()
}

/// `%XX` decoded (and `+` as a space, as in a query), lossy on bad UTF-8;
/// a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a request's body is framed, once its head passed [`check_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// This many bytes (0: none).
    Length(u64),
    Chunked,
}

/// Why a request head is refused, and the status it gets. Every refusal
/// closes the connection: after a head whose framing is in doubt, nothing
/// that follows can be trusted to start a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Ambiguous or malformed framing, or not exactly one Host (400).
    BadFraming(&'static str),
    /// A transfer coding the gateway does not implement (501).
    UnknownCoding,
    /// More fields than the limit, or their bytes over it (431).
    TooLarge,
}

impl HeadError {
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::BadFraming(_) => StatusCode::BAD_REQUEST,
            HeadError::UnknownCoding => StatusCode::NOT_IMPLEMENTED,
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HeadError::BadFraming(why) => why,
            HeadError::UnknownCoding => "transfer coding not implemented",
            HeadError::TooLarge => "header fields too large",
        }
    }
}

/// The rules of RFC 9112 a request head must meet, beyond what httparse
/// checks (bytes, obs-fold, bare CR, line structure): at most one length,
/// digits only, never with Transfer-Encoding; a Transfer-Encoding that ends
/// in `chunked` and lists no other coding (501 if it does); exactly one
/// Host on HTTP/1.1. Both engines and the guard call this one function.
pub fn check_head<'h>(
    version: u8,
    fields: impl Iterator<Item = (&'h str, &'h [u8])>,
    max_fields: usize,
) -> Result<BodyFraming, HeadError> {
    let (mut length, mut lengths, mut hosts, mut count) = (None, 0usize, 0usize, 0usize);
    let mut codings: Option<Codings> = None;
    for (name, value) in fields {
        count += 1;
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => hosts += 1,
            14 if name.eq_ignore_ascii_case("content-length") => {
                lengths += 1;
                length = add_length(length, value).map_err(HeadError::BadFraming)?;
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                codings.get_or_insert_with(Codings::default).add(value);
            }
            _ => {}
        }
    }
    if count > max_fields {
        return Err(HeadError::TooLarge);
    }
    if version == 1 && hosts != 1 {
        return Err(HeadError::BadFraming(
            "an HTTP/1.1 request needs exactly one Host",
        ));
    }
    if version == 0 && hosts > 1 {
        return Err(HeadError::BadFraming("more than one Host"));
    }
    let _ = lengths;
    match codings {
        None => Ok(BodyFraming::Length(length.unwrap_or(0))),
        Some(_) if length.is_some() => Err(HeadError::BadFraming(
            "both Content-Length and Transfer-Encoding",
        )),
        Some(_) if version == 0 => Err(HeadError::BadFraming("Transfer-Encoding on HTTP/1.0")),
        Some(c) => c.framing(),
    }
}

/// The codings a Transfer-Encoding lists, over all its lines.
#[derive(Default)]
struct Codings {
    count: usize,
    chunked_at: Vec<usize>,
    unknown: bool,
    empty: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        for item in value.split(|b| *b == b',') {
            // A coding may carry parameters (`gzip;q=1` is not valid in TE,
            // but a parameter does not make it chunked).
            let coding = item
                .split(|b| *b == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            if coding.is_empty() {
                // `chunked,` or an empty line: list syntax allows empty
                // items, but a sender that writes them is suspect.
                self.empty = true;
                continue;
            }
            if coding.eq_ignore_ascii_case(b"chunked") && item.trim_ascii().len() == 7 {
                self.chunked_at.push(self.count);
            } else if !is_token(coding) {
                self.empty = true;
            } else {
                self.unknown = true;
            }
            self.count += 1;
        }
    }

    fn framing(&self) -> Result<BodyFraming, HeadError> {
        let last_chunked = self.count > 0 && self.chunked_at.last() == Some(&(self.count - 1));
        if self.empty || !last_chunked {
            return Err(HeadError::BadFraming(
                "a Transfer-Encoding whose last coding is not chunked",
            ));
        }
        if self.chunked_at.len() > 1 {
            return Err(HeadError::BadFraming("chunked applied more than once"));
        }
        if self.unknown {
            return Err(HeadError::UnknownCoding);
        }
        Ok(BodyFraming::Chunked)
    }
}

/// RFC 9110 `token`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(version: u8, fields: &[(&str, &str)]) -> Result<BodyFraming, HeadError> {
        check_head(version, fields.iter().map(|(n, v)| (*n, v.as_bytes())), 100)
    }

    #[test]
    fn codings_other_than_chunked_are_kept_for_the_next_hop() {
        let kept = |v: &[&[u8]]| codings_besides_chunked(v.iter().copied());
        assert_eq!(kept(&[b"gzip, chunked"]).unwrap(), "gzip");
        assert_eq!(kept(&[b"gzip", b"br, Chunked"]).unwrap(), "gzip, br");
        assert_eq!(kept(&[b"gzip"]).unwrap(), "gzip");
        assert!(kept(&[b"chunked"]).is_none());
        assert!(kept(&[]).is_none());
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("a+b%2F", false), "a+b/");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(digits(b" 42 "), Some(42));
        for bad in [
            &b"+5"[..],
            b"-1",
            b"0x5",
            b"5.0",
            b"",
            b" ",
            b"1 2",
            b"99999999999999999999",
        ] {
            assert_eq!(digits(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_head_needs_exactly_one_host_on_http_1_1() {
        assert_eq!(check(1, &[("Host", "a")]), Ok(BodyFraming::Length(0)));
        assert!(matches!(check(1, &[]), Err(HeadError::BadFraming(_))));
        assert!(matches!(
            check(1, &[("host", "a"), ("HOST", "b")]),
            Err(HeadError::BadFraming(_))
        ));
        assert_eq!(check(0, &[]), Ok(BodyFraming::Length(0)));
    }

    #[test]
    fn lengths_agree_or_the_head_is_refused() {
        let h = |v: &'static str| vec![("Host", "a"), ("Content-Length", v)];
        assert_eq!(check(1, &h("5")), Ok(BodyFraming::Length(5)));
        assert_eq!(check(1, &h("5, 5")), Ok(BodyFraming::Length(5)));
        for bad in ["5, 6", "+5", "", "5 5", "0x10"] {
            assert!(
                matches!(check(1, &h(bad)), Err(HeadError::BadFraming(_))),
                "{bad}"
            );
        }
        let two = [
            ("Host", "a"),
            ("Content-Length", "5"),
            ("content-length", "6"),
        ];
        assert!(matches!(check(1, &two), Err(HeadError::BadFraming(_))));
    }

    #[test]
    fn transfer_codings_per_rfc_9112() {
        let te = |v: &'static str| vec![("Host", "a"), ("Transfer-Encoding", v)];
        assert_eq!(check(1, &te("chunked")), Ok(BodyFraming::Chunked));
        assert_eq!(check(1, &te("CHUNKED")), Ok(BodyFraming::Chunked));
        assert_eq!(
            check(1, &te("gzip, chunked")),
            Err(HeadError::UnknownCoding)
        );
        for bad in [
            "gzip",
            "chunked, gzip",
            "chunked, chunked",
            "chunked,",
            "",
            "xchunked",
            "chunked;x=1",
            "\"chunked\"",
        ] {
            assert!(
                matches!(check(1, &te(bad)), Err(HeadError::BadFraming(_))),
                "{bad:?}"
            );
        }
        let both = [
            ("Host", "a"),
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert!(matches!(check(1, &both), Err(HeadError::BadFraming(_))));
        assert!(matches!(
            check(0, &[("Transfer-Encoding", "chunked")]),
            Err(HeadError::BadFraming(_))
        ));
    }

    #[test]
    fn more_fields_than_the_limit_are_too_large() {
        let many: Vec<(&str, &str)> = std::iter::once(("Host", "a"))
            .chain(std::iter::repeat_n(("x", "y"), 100))
            .collect();
        assert_eq!(check(1, &many), Err(HeadError::TooLarge));
        assert!(check(1, &many[..100]).is_ok());
    }

    #[test]
    fn field_names_are_classified_in_any_case() {
        for name in HOP_BY_HOP {
            let lower = name.as_str();
            for spelled in [lower.to_string(), lower.to_ascii_uppercase()] {
                let kind = FieldName::of(spelled.as_bytes());
                assert!(kind.is_hop_by_hop(), "{spelled}: {kind:?}");
            }
        }
        assert_eq!(
            FieldName::of(b"Transfer-Encoding"),
            FieldName::TransferEncoding
        );
        assert_eq!(FieldName::of(b"CONNECTION"), FieldName::Connection);
        assert_eq!(FieldName::of(b"Content-Length"), FieldName::ContentLength);
        assert_eq!(FieldName::of(b"date"), FieldName::Date);
        for other in [
            "content-type",
            "dates",
            "t",
            "x-te",
            "keep_alive",
            "upgrades",
            "",
        ] {
            let kind = FieldName::of(other.as_bytes());
            assert_eq!(kind, FieldName::Other, "{other}");
            assert!(!kind.is_hop_by_hop());
        }
    }
}
