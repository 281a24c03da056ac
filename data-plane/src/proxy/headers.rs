//! The request's fields on the way to the target: hop-by-hop fields out,
//! names with `_` out (see `drop_underscore_names`), the client's claims
//! about itself out (`auth::prepare_upstream_headers` ran before), and the
//! gateway's own fields (`x-forwarded-*`, `x-request-id`, `traceparent`)
//! in. The gateway's fields the client did not send (the usual case) are
//! kept aside in `Added`, not inserted: our codec writes them after the
//! map's, which saves hashing each into it; hyper_util's client gets them
//! inserted.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use super::ConnInfo;
use super::{HeadFacts, Trail, Upstream};
use crate::body::RequestBody;
use crate::http1::syntax::{HOP_BY_HOP, X_REQUEST_ID};
use crate::trace;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The values of the gateway's fields that `Added` borrows, and which of
/// them the client sent too (those are in the map already).
pub(super) struct GatewayFields {
    sent: Sent,
    forwarded_host: Option<HeaderValue>,
    traceparent: HeaderValue,
}

impl GatewayFields {
    /// Clean the client's fields and work out the gateway's. The client's
    /// Host stays in the map (removing it costs a hash and a shuffle of the
    /// map): our codec skips it, and hyper_util's client gets a map without
    /// it. More than one Host was refused before.
    pub fn new(
        up: &Upstream<'_>,
        headers: &mut HeaderMap,
        uri: &Uri,
        trail: &Trail,
        span: &tracing::Span,
    ) -> Self {
        let cx = &up.cx;
        strip_hop_by_hop(headers);
        drop_underscore_names(headers, up.matched.api.doc.allow_underscore_headers);
        let sent = Sent::scan(headers);
        // The Host header as it came, unless the request line (absolute
        // form) or HTTP/2's authority named the host.
        let forwarded_host = match &cx.facts.host {
            _ if sent.forwarded_host => None,
            Some(v) if uri.authority().is_none() => Some(v.clone()),
            _ => HeaderValue::from_str(up.host).ok(),
        };
        let traceparent = trail.trace.header(trace::child_span_id(span));
        if sent.forwarded_for {
            append_forwarded_for(headers, &cx.conn.remote_ip);
        }
        if sent.request_id {
            headers.insert(X_REQUEST_ID.clone(), cx.id.clone());
        }
        if sent.traceparent {
            headers.insert(TRACEPARENT.clone(), traceparent.clone());
        }
        Self {
            sent,
            forwarded_host,
            traceparent,
        }
    }

    /// The gateway's fields the client did not send.
    pub fn added<'a>(&'a self, conn: &'a ConnInfo, id: &'a HeaderValue) -> Added<'a> {
        let mut added = Added::default();
        if !self.sent.forwarded_for {
            added.push(&X_FORWARDED_FOR, &conn.remote_ip);
        }
        if !self.sent.forwarded_proto {
            added.push(&X_FORWARDED_PROTO, if conn.tls { &HTTPS } else { &HTTP });
        }
        if let Some(v) = &self.forwarded_host {
            added.push(&X_FORWARDED_HOST, v);
        }
        if !self.sent.request_id {
            added.push(&X_REQUEST_ID, id);
        }
        if !self.sent.traceparent {
            added.push(&TRACEPARENT, &self.traceparent);
        }
        added
    }
}

/// The `Upgrade` a request asks for, if the gateway passes it through.
/// `h2c` is never forwarded.
pub(super) fn wanted_upgrade(req: &Request<RequestBody>, facts: &HeadFacts) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !facts.connection_upgrade {
        return None;
    }
    let up = facts.upgrade.as_ref()?;
    (!up.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| up.clone())
}

/// Remove hop-by-hop headers, including those named by `Connection`.
/// `te: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages have none: one pass over the names (comparisons of
    // standard names are cheap) saves hashing each of them for `remove`.
    if !h.keys().any(|k| HOP_BY_HOP.contains(&k)) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Drop the client's header names with `_`: all of them by default (as
/// nginx does), and with `allow_underscore_headers` those that, with `_`
/// read as `-` (as CGI, WSGI and PHP upstreams read them), name framing or
/// a field the gateway sets. Otherwise `x_tollgate_tenant` would reach a
/// PHP upstream as the caller's tenant, and `Transfer_Encoding` as framing.
pub(super) fn drop_underscore_names(h: &mut HeaderMap, allow: bool) {
    // Most requests have none: one scan of the names, no allocation.
    if !h.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let dropped: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_') && (!allow || reads_as_reserved(k.as_str())))
        .cloned()
        .collect();
    for name in dropped {
        tracing::debug!(header = name.as_str(), "dropped a header name with `_`");
        h.remove(name);
    }
}

/// Whether `name`, with `_` read as `-`, is a framing field or one the
/// gateway sets (names in a `HeaderMap` are lower case already).
fn reads_as_reserved(name: &str) -> bool {
    let read = name.replace('_', "-");
    // Framing is `Content-Length`, `Host` and the hop-by-hop fields
    // (`Transfer-Encoding`, `Connection`, `Upgrade`, `TE`, `Trailer`...).
    const RESERVED: [&HeaderName; 6] = [
        &header::CONTENT_LENGTH,
        &header::HOST,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REQUEST_ID,
    ];
    read.starts_with("x-tollgate-")
        || RESERVED
            .iter()
            .chain(HOP_BY_HOP.iter())
            .any(|n| n.as_str() == read)
}

/// Which of the headers the gateway sets on the way up the client sent
/// too: one pass over the names, instead of a lookup for each.
#[derive(Default)]
struct Sent {
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: bool,
    traceparent: bool,
}

impl Sent {
    fn scan(h: &HeaderMap) -> Self {
        let mut sent = Sent::default();
        for name in h.keys() {
            let flag = if *name == X_FORWARDED_FOR {
                &mut sent.forwarded_for
            } else if *name == X_FORWARDED_PROTO {
                &mut sent.forwarded_proto
            } else if *name == X_FORWARDED_HOST {
                &mut sent.forwarded_host
            } else if *name == X_REQUEST_ID {
                &mut sent.request_id
            } else if *name == TRACEPARENT {
                &mut sent.traceparent
            } else {
                continue;
            };
            *flag = true;
        }
        sent
    }
}

/// Headers for the target that the request's map does not have (so
/// writing them after the map's is the same as inserting them). Borrowed:
/// our codec writes them from where they are, and only hyper_util's client
/// needs copies.
#[derive(Default)]
pub(super) struct Added<'a> {
    fields: [Option<(&'static HeaderName, &'a HeaderValue)>; 5],
    len: usize,
}

impl<'a> Added<'a> {
    fn push(&mut self, name: &'static HeaderName, value: &'a HeaderValue) {
        self.fields[self.len] = Some((name, value));
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Option<(&'static HeaderName, &'a HeaderValue)>] {
        &self.fields[..self.len]
    }

    pub fn insert_into(&self, h: &mut HeaderMap) {
        h.reserve(self.len);
        for (name, value) in self.as_slice().iter().flatten() {
            h.insert(*name, (*value).clone());
        }
    }
}

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

fn append_forwarded_for(h: &mut HeaderMap, ip: &HeaderValue) {
    let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let joined = format!("{prev}, {}", ip.to_str().unwrap_or_default());
            match HeaderValue::from_str(&joined) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => ip.clone(),
    };
    h.insert(X_FORWARDED_FOR.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_names_are_dropped_unless_allowed_and_never_when_reserved() {
        let map = || {
            let mut h = HeaderMap::new();
            for (n, v) in [
                ("x_tollgate_tenant", "evil-corp"),
                ("x_tollgate_key_id", "k"),
                ("transfer_encoding", "chunked"),
                ("content_length", "1000"),
                ("x_forwarded_for", "1.2.3.4"),
                ("x_request_id", "spoof"),
                ("keep_alive", "1"),
                ("x_custom_thing", "kept when allowed"),
                ("x-normal", "always kept"),
            ] {
                h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
            }
            h
        };
        let mut h = map();
        drop_underscore_names(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-normal"]);
        let mut h = map();
        drop_underscore_names(&mut h, true);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["x-normal", "x_custom_thing"]);
    }
}
