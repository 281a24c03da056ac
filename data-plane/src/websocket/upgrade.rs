//! The upgrade of a WebSocket API's base path: the handshake's fields
//! checked, `$connect` run (after authentication and the plan, which the
//! request path has done), the connection registered, and `101` answered
//! while the session starts on the switched connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tollgate_model::connection_id;
use tollgate_model::websocket as ws_model;

use super::integration::{self, Call, Caller, Event};
use super::session::{self, Metering, Opening};
use super::{ConnectionInfo, Handle};
use crate::auth::Identity;
use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::gateway::Gateway;
use crate::router::CompiledApi;

/// Commands a connection may have queued before its session takes them.
const COMMAND_QUEUE: usize = 64;

/// Whether `headers` ask for a WebSocket (RFC 6455 §4.2.1): 426 without
/// `Upgrade: websocket`, 400 for any other field missing or wrong. The
/// answer is the `Sec-WebSocket-Accept` value.
pub fn check_handshake(headers: &HeaderMap) -> Result<HeaderValue, ProxyError> {
    let lists = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !lists(header::UPGRADE, "websocket") {
        return Err(ProxyError::UpgradeRequired);
    }
    if !lists(header::CONNECTION, "upgrade") {
        return Err(ProxyError::BadHandshake("Connection must list upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ProxyError::BadHandshake("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(ProxyError::BadHandshake("Sec-WebSocket-Key is missing"))?;
    use base64::Engine as _;
    let nonce_ok = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|n| n.len() == 16);
    if !nonce_ok {
        return Err(ProxyError::BadHandshake(
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| ProxyError::BadHandshake("Sec-WebSocket-Key"))
}

/// An upgrade the request path has admitted.
pub struct Upgrade<'a> {
    pub gw: &'a Gateway,
    pub api: &'a Arc<CompiledApi>,
    pub identity: &'a Identity,
    pub remote: SocketAddr,
    /// The stage's throttle, for a plan that sets none.
    pub stage_throttle: Option<tollgate_model::docs::Throttle>,
    /// `Sec-WebSocket-Accept`, from `check_handshake`.
    pub accept: HeaderValue,
    /// The client's fields for `$connect`, cleaned by the request path
    /// (hop-by-hop, the key and the gateway's own fields removed).
    pub client_fields: HeaderMap,
}

impl Upgrade<'_> {
    /// Run `$connect`, register the connection and answer 101; the
    /// session runs once the connection has switched.
    pub async fn accept<B>(self, req: &mut Request<B>) -> Result<Response<ProxyBody>, ProxyError> {
        let id = connection_id::new_id(self.gw.connections.node_id());
        let mut identity_fields = HeaderMap::new();
        crate::auth::prepare_upstream_headers(&mut identity_fields, self.identity);
        let caller = Arc::new(Caller {
            connection_id: HeaderValue::from_str(&id).expect("ids are URL-safe"),
            identity: identity_fields,
        });
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        self.connect(&caller, &query).await?;
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let handle = Arc::new(Handle {
            info: self.info(&id),
            api_key: self.api.key.clone(),
            last_active_ms: crate::civil_time::now_ms().into(),
            commands: commands_tx,
        });
        self.gw.connections.insert(handle.clone());
        super::log_event(self.gw.access_log(), &handle.info, None);
        let opening = Opening {
            gw: self.gw.arc(),
            api: self.api.clone(),
            caller: caller.clone(),
            metering: self.metering(),
            handle,
            commands,
        };
        tokio::spawn(session::run(opening, hyper::upgrade::on(req)));
        let mut res = Response::new(body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        // The client learns its id (AWS gives it only to the backend).
        h.insert(
            integration::X_CONNECTION_ID.clone(),
            caller.connection_id.clone(),
        );
        Ok(res)
    }

    /// The `$connect` route: a mock's status, or the integration's answer;
    /// anything but 2xx refuses the upgrade with that status.
    async fn connect(&self, caller: &Caller, query: &str) -> Result<(), ProxyError> {
        let Some(route) = self
            .api
            .routes
            .iter()
            .find(|r| r.doc.key.as_deref() == Some(ws_model::CONNECT))
        else {
            return Ok(());
        };
        let status = match (&route.doc.mock, &self.api.upstream) {
            (Some(mock), _) => StatusCode::from_u16(mock.status).unwrap_or(StatusCode::OK),
            (None, Some(pool)) => {
                let call = Call {
                    event: Event::Connect,
                    route_key: ws_model::CONNECT,
                    path: &route.doc.path,
                    query,
                    body: Bytes::new(),
                    fields: self.client_fields.clone(),
                };
                integration::post(&self.gw.clients, pool, caller, call, 64 * 1024)
                    .await?
                    .status
            }
            (None, None) => StatusCode::OK,
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(ProxyError::ConnectRefused(status))
        }
    }

    fn info(&self, id: &str) -> ConnectionInfo {
        let now = crate::civil_time::rfc3339_ms(crate::civil_time::now_ms());
        ConnectionInfo {
            id: id.to_string(),
            api: self.api.doc.id.clone(),
            connected_at: now.clone(),
            last_active_at: now,
            source_ip: self.remote.ip().to_string(),
            key_id: self.identity.key_id().map(str::to_string),
            tenant: self.identity.tenant().map(str::to_string),
            subject: self.identity.subject.clone(),
        }
    }

    fn metering(&self) -> Option<Metering> {
        Some(Metering {
            key: self.identity.key_id()?.to_string(),
            plan: self.identity.plan.clone()?,
            stage_throttle: self.stage_throttle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "WebSocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfc_example_is_accepted() {
        let accept = check_handshake(&fields(&GOOD)).unwrap();
        // RFC 6455 §1.3's worked example.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_missing_field_has_its_status() {
        for (i, (name, _)) in GOOD.iter().enumerate() {
            let mut without = GOOD.to_vec();
            without.remove(i);
            let e = check_handshake(&fields(&without)).unwrap_err();
            let want = if *name == "upgrade" { 426 } else { 400 };
            assert_eq!(e.status().as_u16(), want, "without {name}");
        }
        let mut bad_key = GOOD.to_vec();
        bad_key[3].1 = "c2hvcnQ=";
        assert_eq!(
            check_handshake(&fields(&bad_key)).unwrap_err().status(),
            400
        );
        let mut bad_version = GOOD.to_vec();
        bad_version[2].1 = "8";
        assert_eq!(
            check_handshake(&fields(&bad_version)).unwrap_err().status(),
            400
        );
    }
}
