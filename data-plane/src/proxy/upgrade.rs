//! The request path's side of a WebSocket API's upgrade: the handshake
//! is checked before authentication (phase 3), and once the plan has
//! admitted the upgrade the client's fields are cleaned as for any
//! upstream request and handed to `websocket::Upgrade`.

use http::header::{HeaderMap, HeaderName};
use http::Request;

use super::{headers, RequestCtx, Trail};
use crate::auth::Identity;
use crate::body::ProxyBody;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::http1::fields::Answer;
use crate::router::RouteMatch;
use crate::websocket::Upgrade;

/// Phase 5 for a WebSocket API: `$connect`, then 101.
pub(super) async fn upgrade(
    cx: RequestCtx<'_>,
    matched: &RouteMatch,
    identity: &Identity,
    accept: http::HeaderValue,
    mut req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let mut client_fields = req.headers().clone();
    clean_fields(&mut client_fields, matched, identity);
    let upgrade = Upgrade {
        gw: cx.gw,
        api: &matched.api,
        identity,
        remote: cx.conn.remote,
        stage_throttle: matched.api.stage.as_ref().and_then(|s| s.throttle),
        accept,
        client_fields,
    };
    let res = upgrade.accept(&mut req).await?;
    // What follows on the client's connection is not HTTP/1: the framing
    // guard stops there.
    cx.conn.verdicts.upgraded();
    trail.bytes_in = 0;
    Ok(res.into())
}

/// The client's fields as `$connect` gets them: hop-by-hop fields, the
/// handshake's, names with `_`, the key and the client's `x-tollgate-*`
/// out.
fn clean_fields(fields: &mut HeaderMap, matched: &RouteMatch, identity: &Identity) {
    headers::strip_hop_by_hop(fields);
    headers::drop_underscore_names(fields, matched.api.doc.allow_underscore_headers);
    let handshake: Vec<HeaderName> = fields
        .keys()
        .filter(|k| k.as_str().starts_with("sec-websocket-"))
        .cloned()
        .collect();
    for k in handshake {
        fields.remove(k);
    }
    for k in [http::header::HOST, http::header::CONTENT_LENGTH] {
        fields.remove(k);
    }
    crate::auth::prepare_upstream_headers(fields, identity);
}
