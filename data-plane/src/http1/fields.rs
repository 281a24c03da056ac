//! An upstream answer's header fields as the target sent them, without a
//! `HeaderMap` built for them.
//!
//! Most answers pass through the proxy untouched: hashing each field into a
//! map, only for the client codec to write it out again, was 6 % of a
//! proxied request's instructions. So the pooled HTTP/1.1 client (`client`)
//! leaves them as slices of the head it read, and they travel beside the
//! response, whose map starts empty, as an [`Answer`] (response and fields
//! in one value, so the fields can neither outlive nor miss their
//! response), from `forward` up to the server. (They used to ride in the
//! response's extensions, which cost three allocations a request.)
//! The rules:
//!
//! - A field in the map replaces the upstream's fields of that name, as
//!   `HeaderMap::insert` would have: the gateway's `x-request-id`,
//!   `RateLimit-*` and `x-cache` win over the target's.
//! - Anything that reads or merges the upstream's fields (the cache, CORS,
//!   hyper's server) takes [`Answer::materialized`] first, which moves them
//!   into the map under the same rule.
//! - The fast HTTP/1.1 server (`server`) writes them as they are
//!   ([`UpstreamFields::write`]).

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;

/// The fields of one upstream head to pass on: hop-by-hop fields are
/// already left out, and `Content-Length` is kept as a number (framing is
/// the client side's to write).
#[derive(Clone)]
pub struct UpstreamFields {
    /// The head as read; the fields are ranges of it.
    head: Bytes,
    fields: Vec<Field>,
    /// One of the fields is `Date`.
    pub dated: bool,
    /// The length the head declares, unless `Transfer-Encoding` overrides
    /// it (what a `HEAD` answer passes on).
    pub length: Option<u64>,
    /// Transfer codings besides chunked (`gzip`): the body stays coded,
    /// so the client must be told (see `syntax::codings_besides_chunked`).
    pub codings: Option<HeaderValue>,
}

#[derive(Clone)]
struct Field {
    name: Range<u32>,
    value: Range<u32>,
}

impl UpstreamFields {
    /// Room for `capacity` fields. The ranges given to [`Self::push`]
    /// point into the head, set by [`Self::set_head`] once it is split off
    /// the read buffer.
    pub fn new(capacity: usize) -> Self {
        Self {
            head: Bytes::new(),
            fields: Vec::with_capacity(capacity),
            dated: false,
            length: None,
            codings: None,
        }
    }

    /// Keep the field at these offsets of the head.
    pub fn push(&mut self, name: Range<usize>, value: Range<usize>) {
        let to32 = |r: Range<usize>| r.start as u32..r.end as u32;
        self.fields.push(Field {
            name: to32(name),
            value: to32(value),
        });
    }

    /// Keep only the fields `keep` says to, by name.
    pub fn retain_names(&mut self, head: &[u8], mut keep: impl FnMut(&[u8]) -> bool) {
        self.fields.retain(|f| keep(&head[range(&f.name)]));
    }

    /// The head the offsets point into, once it is split off the buffer.
    pub fn set_head(&mut self, head: Bytes) {
        self.head = head;
    }

    /// Write each field as `name: value\r\n`, except those whose name the
    /// map or `also` has (they replace the upstream's).
    pub fn write(&self, out: &mut Vec<u8>, replaced_by: &HeaderMap, also: &[&HeaderName]) {
        let replaced = |name: &[u8]| {
            also.iter()
                .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name))
                || replaced_by
                    .keys()
                    .any(|k| k.as_str().as_bytes().eq_ignore_ascii_case(name))
        };
        // Lines are copied as the target wrote them, and neighbours in
        // one piece: with nothing left out, the whole block is one copy.
        let mut run = 0..0;
        for f in &self.fields {
            if replaced(&self.head[range(&f.name)]) {
                continue;
            }
            let (start, end) = (f.name.start as usize, f.value.end as usize);
            if run.end != start {
                out.extend_from_slice(&self.head[run]);
                run = start..start;
            }
            if self.head[end..].starts_with(b"\r\n") {
                run.end = end + 2;
            } else {
                // A bare LF, or spaces after the value: the line up to its
                // value, then our own CRLF.
                out.extend_from_slice(&self.head[run.start..end]);
                out.extend_from_slice(b"\r\n");
                run = 0..0;
            }
        }
        out.extend_from_slice(&self.head[run]);
    }

    /// Into `map`, except the names it already has.
    fn into_map(self, map: &mut HeaderMap) {
        let mut upstream = HeaderMap::with_capacity(self.fields.len() + map.len());
        for f in &self.fields {
            // httparse accepted both, by the same rules as `http`'s.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.head[range(&f.name)]),
                HeaderValue::from_maybe_shared(self.head.slice(range(&f.value))),
            ) else {
                continue;
            };
            if !map.contains_key(&name) {
                upstream.append(name, value);
            }
        }
        if let Some(codings) = self
            .codings
            .filter(|_| !map.contains_key(http::header::TRANSFER_ENCODING))
        {
            upstream.insert(http::header::TRANSFER_ENCODING, codings);
        }
        if let Some(n) = self
            .length
            .filter(|_| !map.contains_key(http::header::CONTENT_LENGTH))
        {
            upstream.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let mut last = None;
        for (name, value) in std::mem::take(map) {
            // `None`: another value of the name just before.
            let name = name
                .or_else(|| last.clone())
                .expect("a map starts with a name");
            upstream.append(&name, value);
            last = Some(name);
        }
        *map = upstream;
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// A response, and its upstream's fields that are not in its map (answers
/// from the pooled client). They travel as one, so the fields can neither
/// outlive their response nor miss it.
pub struct Answer<B> {
    pub res: Response<B>,
    pub upstream: Option<UpstreamFields>,
}

impl<B> Answer<B> {
    /// The response with the upstream's fields moved into its map, for
    /// code that reads or merges fields.
    pub fn materialized(mut self) -> Response<B> {
        self.materialize();
        self.res
    }

    /// [`Self::materialized`], in place.
    pub fn materialize(&mut self) -> &mut Response<B> {
        if let Some(fields) = self.upstream.take() {
            fields.into_map(self.res.headers_mut());
        }
        &mut self.res
    }
}

impl<B> From<Response<B>> for Answer<B> {
    fn from(res: Response<B>) -> Self {
        Answer {
            res,
            upstream: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields of `head` (lines of `name: value`), kept as `parse_head`
    /// would.
    fn fields(head: &'static str) -> UpstreamFields {
        let mut f = UpstreamFields::new(4);
        let mut at = 0;
        for line in head.split_inclusive("\r\n") {
            let (name, value) = line.trim_end().split_once(": ").unwrap();
            f.push(
                at..at + name.len(),
                at + name.len() + 2..at + name.len() + 2 + value.len(),
            );
            at += line.len();
        }
        f.set_head(Bytes::from_static(head.as_bytes()));
        f
    }

    #[test]
    fn written_as_sent_unless_the_map_replaces_them() {
        let f = fields("Content-Type: text/plain\r\nX-Request-Id: theirs\r\nset-cookie: a\r\nSet-Cookie: b\r\n");
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("ours"));
        let mut out = Vec::new();
        f.write(&mut out, &map, &[&http::header::SERVER]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Content-Type: text/plain\r\nset-cookie: a\r\nSet-Cookie: b\r\n"
        );
        let mut out = Vec::new();
        let mut odd = UpstreamFields::new(3);
        let head = b"A: 1\nB: 2  \r\nC:3\r\n";
        odd.push(0..1, 3..4);
        odd.push(5..6, 8..9);
        odd.push(13..14, 15..16);
        odd.set_head(Bytes::from_static(head));
        odd.write(&mut out, &HeaderMap::new(), &[]);
        assert_eq!(String::from_utf8(out).unwrap(), "A: 1\r\nB: 2\r\nC:3\r\n");
        let mut out = Vec::new();
        f.write(
            &mut out,
            &HeaderMap::new(),
            &[&http::header::SERVER, &http::header::SET_COOKIE],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Content-Type: text/plain\r\nX-Request-Id: theirs\r\n"
        );
    }

    #[test]
    fn materialized_fields_keep_every_value_and_yield_to_the_map() {
        let mut upstream = fields("Vary: Accept\r\nX-Request-Id: theirs\r\nvary: Cookie\r\n");
        upstream.length = Some(12);
        let mut answer = Answer {
            res: Response::new(()),
            upstream: Some(upstream),
        };
        answer
            .res
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_static("ours"));
        answer
            .res
            .headers_mut()
            .append("x-cache", HeaderValue::from_static("Miss"));
        let res = answer.materialized();
        let h = res.headers();
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept", "Cookie"]);
        assert_eq!(
            h.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["ours"]
        );
        assert_eq!(h["x-cache"], "Miss");
        assert_eq!(h["content-length"], "12");
    }
}
