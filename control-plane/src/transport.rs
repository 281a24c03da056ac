//! gRPC plumbing shared by every internal client and server: bearer-token
//! authentication and a cache of one channel per peer address.

mod faults;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate_model::key::constant_time_eq;
pub use tollgate_proto::auth::BearerToken;
use tollgate_proto::tls::MutualTls;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub use faults::{Fault, Faults};

/// Refuses calls that do not carry one of the expected bearer tokens.
#[derive(Clone)]
pub struct RequireToken {
    tokens: Arc<[Box<str>]>,
}

impl RequireToken {
    /// Accept any of `tokens`: the one in use, and during a rotation the
    /// one going out or coming in. Empty tokens are never accepted.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(Box::from)
                .collect(),
        }
    }

    fn accepts(&self, presented: &str) -> bool {
        // Every token is compared, so the time taken does not say which
        // one matched.
        self.tokens
            .iter()
            .fold(false, |ok, t| constant_time_eq(presented, t) | ok)
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if self.accepts(t) => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong token")),
        }
    }
}

pub type PeerChannel = InterceptedService<Channel, BearerToken>;

/// A peer that does not answer a connect within this is taken as down; a
/// peer on the same network answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 pings on every peer connection that has received nothing for
/// this long, busy or idle: a peer that vanished (partitioned, SIGSTOPped,
/// its host gone) is noticed, and the connection dropped, within interval
/// plus timeout. Without them a request on a dead connection waited for
/// TCP's retransmissions, seconds after the network had healed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);

/// One lazily connected channel per peer address, reused by every client.
#[derive(Clone)]
pub struct Channels {
    token: BearerToken,
    tls: Option<MutualTls>,
    map: Arc<Mutex<HashMap<String, Channel>>>,
    faults: Faults,
}

impl Channels {
    pub fn new(cluster_token: &str, tls: Option<MutualTls>) -> Self {
        Self {
            token: BearerToken::new(cluster_token),
            tls,
            map: Arc::default(),
            faults: Faults::default(),
        }
    }

    /// The faults injected into this node's peer connections (tests).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn get(&self, addr: &str) -> PeerChannel {
        let mut map = self.map.lock().expect("channel cache lock");
        let channel = map
            .entry(addr.to_string())
            .or_insert_with(|| self.connect(addr))
            .clone();
        InterceptedService::new(channel, self.token.clone())
    }

    fn connect(&self, addr: &str) -> Channel {
        let (faults, key) = (self.faults.clone(), Arc::<str>::from(addr));
        let tcp = tower::service_fn(move |uri| faults::connect(faults.clone(), key.clone(), uri));
        match &self.tls {
            Some(tls) => tls.endpoint(addr),
            None => Endpoint::from_shared(addr.to_string()),
        }
        .expect("peer addresses are validated URLs")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // TLS, when set, goes over this stream.
        .connect_with_connector_lazy(tcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut RequireToken, header: Option<&str>) -> bool {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req).is_ok()
    }

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let mut auth = RequireToken::new(["current", "", "incoming"]);
        assert!(call(&mut auth, Some("Bearer current")));
        assert!(call(&mut auth, Some("Bearer incoming")));
        assert!(!call(&mut auth, Some("Bearer other")));
        assert!(
            !call(&mut auth, Some("Bearer ")),
            "an empty token is never accepted"
        );
        assert!(
            !call(&mut auth, Some("current")),
            "the Bearer scheme is required"
        );
        assert!(!call(&mut auth, None));
    }
}
