//! What the request path reads from the client's head, found in one pass
//! over its fields, and phase 1 (`admit`): the verdict of the framing
//! guard, and the limits of the one table both engines share.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};

use super::headers::TRACEPARENT;
use super::ConnInfo;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::http1::syntax::{digits, lists_token, X_REQUEST_ID};
use crate::http1::Limits;
use crate::trace;

/// What the request path reads from the client's header fields, found in
/// one pass over them: a lookup for each would hash its name every time.
#[derive(Default)]
pub(super) struct HeadFacts {
    pub host: Option<HeaderValue>,
    pub hosts: usize,
    /// The `Content-Length`, if it is a number.
    pub content_length: Option<u64>,
    pub upgrade: Option<HeaderValue>,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
    /// Names and values, for the header size limit.
    pub field_bytes: usize,
}

impl HeadFacts {
    pub fn scan(h: &HeaderMap) -> Self {
        let mut facts = HeadFacts::default();
        let mut length_seen = false;
        for (name, value) in h {
            facts.field_bytes += name.as_str().len() + value.len();
            if *name == header::HOST {
                facts.hosts += 1;
                facts.host.get_or_insert_with(|| value.clone());
            } else if *name == header::CONTENT_LENGTH && !std::mem::replace(&mut length_seen, true)
            {
                // The one definition of a length (`+5` is none).
                facts.content_length = digits(value.as_bytes());
            } else if *name == header::UPGRADE {
                facts.upgrade.get_or_insert_with(|| value.clone());
            } else if *name == header::CONNECTION {
                facts.connection_upgrade |= lists_token(value.as_bytes(), b"upgrade");
            } else if *name == X_REQUEST_ID {
                facts.request_id.get_or_insert_with(|| value.clone());
            } else if *name == TRACEPARENT {
                facts.traceparent.get_or_insert_with(|| value.clone());
            }
        }
        facts
    }
}

pub(super) fn request_id(facts: &HeadFacts) -> HeaderValue {
    facts
        .request_id
        .as_ref()
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned()
        .unwrap_or_else(|| {
            let mut hex = [0u8; 32];
            trace::hex(&mut hex, &trace::random_id().to_be_bytes());
            HeaderValue::from_bytes(&hex).expect("hex is a valid header")
        })
}

/// Phase 1: what hyper's parser accepts but the contract refuses.
pub(super) fn admit(
    conn: &ConnInfo,
    limits: &Limits,
    req: &Request<RequestBody>,
    facts: &HeadFacts,
) -> Result<(), ProxyError> {
    conn.verdicts.take()?;
    if facts.hosts > 1 {
        return Err(ProxyError::BadFraming("more than one Host header"));
    }
    if uri_len(req.uri()) > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if facts.field_bytes > limits.max_header_bytes || req.headers().len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    if facts
        .content_length
        .is_some_and(|n| n > limits.max_body_bytes as u64)
    {
        return Err(ProxyError::PayloadTooLarge);
    }
    Ok(())
}

/// The length of the URI as sent, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let pq = uri.path_and_query().map_or(0, |p| p.as_str().len());
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => s.len() + "://".len() + a.as_str().len() + pq,
        (None, Some(a)) => a.as_str().len() + pq,
        _ => pq,
    }
}

/// The host the request is for: the authority of an absolute-form or
/// HTTP/2 request, else the Host header (a cheap clone, not a copy).
pub(super) fn request_host(req: &Request<RequestBody>, facts: &HeadFacts) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => facts.host.clone(),
    }
}
