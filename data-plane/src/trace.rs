//! W3C trace context (`traceparent`) for the request path.
//!
//! Each request belongs to a trace: the client's, when it sent a valid
//! `traceparent`, else a new one. The upstream receives a `traceparent` with
//! the same trace id and a new span id, a child of the client's span: the
//! span id of the `upstream` tracing span when traces are exported (so the
//! upstream's spans hang under the gateway's), else a random one.

use http::HeaderValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: u128,
    /// The caller's span id (the parent of ours), if it sent one.
    pub parent: Option<u64>,
    pub flags: u8,
}

impl TraceCtx {
    /// From an incoming `traceparent`, or a new trace (sampled).
    pub fn from_header(h: Option<&HeaderValue>) -> Self {
        h.and_then(|v| parse(v.as_bytes()))
            .unwrap_or_else(|| TraceCtx {
                trace_id: new_trace_id(),
                parent: None,
                flags: 1,
            })
    }

    /// The `traceparent` for the upstream, with `span_id` as the parent id.
    pub fn header(&self, span_id: u64) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        hex(&mut buf[3..35], &self.trace_id.to_be_bytes());
        buf[35] = b'-';
        hex(&mut buf[36..52], &span_id.to_be_bytes());
        buf[52] = b'-';
        hex(&mut buf[53..55], &[self.flags]);
        HeaderValue::from_bytes(&buf).expect("hex is a valid header")
    }

    /// Make `span` (a request's root span) part of this trace: the caller's
    /// span becomes its remote parent; without one, the trace id is the one
    /// the exporter gave the span. No-op unless `span` is recorded.
    pub fn link(&mut self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        match self.parent {
            Some(parent) => {
                let sc = SpanContext::new(
                    TraceId::from_bytes(self.trace_id.to_be_bytes()),
                    SpanId::from_bytes(parent.to_be_bytes()),
                    TraceFlags::new(self.flags),
                    true,
                    TraceState::default(),
                );
                let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
            }
            None => {
                if let Some((trace, _)) = otel_ids(span) {
                    self.trace_id = trace;
                }
            }
        }
    }
}

/// The exported (trace id, span id) of a tracing span, if it has them.
pub fn otel_ids(span: &tracing::Span) -> Option<(u128, u64)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        (
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
        )
    })
}

/// A span id for the upstream request: `span`'s when it is exported, else
/// random.
pub fn child_span_id(span: &tracing::Span) -> u64 {
    otel_ids(span).map_or_else(|| random_id() as u64 | 1, |(_, s)| s)
}

fn new_trace_id() -> u128 {
    random_id() | 1
}

/// A new id (request, trace, span). Ids must be unique, not secret: they come
/// from a per-thread wyrand seeded at random (fastrand), not from a
/// cryptographic generator, which cost about 190 instructions a request.
pub(crate) fn random_id() -> u128 {
    fastrand::u128(..)
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub(crate) fn hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

fn unhex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// `version-traceid-parentid-flags`, as W3C Trace Context level 1 reads it:
/// lower-case hex, no all-zero ids, version `ff` invalid; later versions
/// may append fields.
fn parse(v: &[u8]) -> Option<TraceCtx> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex(&v[..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) {
        return None;
    }
    let trace_id = unhex(&v[3..35])?;
    let parent = unhex(&v[36..52])? as u64;
    let flags = unhex(&v[53..55])? as u8;
    if trace_id == 0 || parent == 0 {
        return None;
    }
    Some(TraceCtx {
        trace_id,
        parent: Some(parent),
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let h = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceCtx::from_header(Some(&h));
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent, Some(0x00f067aa0ba902b7));
        assert_eq!(t.flags, 1);
        let out = t.header(0x1234);
        assert_eq!(
            out,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01"
        );
    }

    #[test]
    fn refuses_invalid_headers() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
        let fresh = TraceCtx::from_header(Some(&HeaderValue::from_static("garbage")));
        assert_eq!(fresh.parent, None);
        assert_ne!(fresh.trace_id, 0);
    }
}
